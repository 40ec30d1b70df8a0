"""The node's process pool: which protocol batches go to the workers."""
from __future__ import annotations

import importlib
from concurrent.futures import ProcessPoolExecutor

import gmpy2

from node.keys.workers import COSTLY_TASKS, CryptoPool
from protocols import psi_shuffle as ps
from protocols import threshold as th


def test_costly_tasks_name_real_protocol_functions() -> None:
    for module, name in COSTLY_TASKS:
        assert callable(getattr(importlib.import_module(module), name)), (module, name)


class _Recording:
    """A real executor that remembers which functions it was given."""

    def __init__(self) -> None:
        self.executor, self.seen = ProcessPoolExecutor(max_workers=2), []

    def map(self, fn, *iterables):
        self.seen.append(fn.__name__)
        return self.executor.map(fn, *iterables)


def test_paillier_batches_go_to_the_workers_even_when_small_and_cheap_ones_stay() -> None:
    pool, recording = CryptoPool(workers=2), _Recording()
    pool._pool = lambda: recording
    try:
        n = gmpy2.next_prime(2**40) * gmpy2.next_prime(2**41)
        ns = int(n) ** 2
        items = [[(5, 7, 1)], [(6, 8, 1)]]  # two tiny batches: (c, exponent, rho)
        assert pool.map(th.blind_task, [ns, ns], items) == [th.blind_task(ns, i) for i in items]
        hashed = pool.map(ps.hash_batch, [[b"a"], [b"b"]])
        assert hashed == [ps.hash_batch([b"a"]), ps.hash_batch([b"b"])]
        assert recording.seen == ["blind_task"]
    finally:
        recording.executor.shutdown()

"""The node's process pool: which protocol batches go to the workers."""
from __future__ import annotations

import importlib
import pickle
import random
from concurrent.futures import ProcessPoolExecutor

import gmpy2
import phe
import pytest

from node.keys import workers
from node.keys.secrets import KeyEncryptionKey
from node.keys.workers import COSTLY_TASKS, SECRET_ARGUMENTS, CryptoPool, threshold_blobs_task
from protocols import cardinality as card
from protocols import group, oprf
from protocols import psi_shuffle as ps
from protocols import threshold as th
from protocols import threshold_session as ts


def test_costly_tasks_name_real_protocol_functions() -> None:
    for module, name in COSTLY_TASKS:
        assert callable(getattr(importlib.import_module(module), name)), (module, name)


def test_secret_arguments_name_real_task_parameters() -> None:
    import inspect
    for (module, name), positions in SECRET_ARGUMENTS.items():
        params = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
        if params[0] == "kek":  # keyed tasks get the KEK inside the worker
            params = params[1:]
        assert all(params[i] in ("p", "q", "hp", "scalar", "blinds", "packed_blinds")
                   for i in positions), name


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


class _Pickling:
    """The pool's real executor, keeping the bytes of everything submitted to it."""

    def __init__(self, executor) -> None:
        self.executor, self.sent = executor, []

    def submit(self, fn, *args):
        self.sent.append(pickle.dumps((fn, args)))
        return self.executor.submit(fn, *args)

    def map(self, fn, *iterables):
        items = list(zip(*iterables))
        self.sent.extend(pickle.dumps((fn, item)) for item in items)
        return self.executor.map(fn, *zip(*items))

    def shutdown(self, **kwargs) -> None:
        self.executor.shutdown(**kwargs)


def _encodings(secret) -> list[bytes]:
    """Stretches of a secret as a pickle could hold it: raw bytes, or an integer either
    way round (Python ints pickle little-endian, gmpy2 and phe's numbers big-endian)."""
    if isinstance(secret, bytes):
        return [secret]
    x = int(secret)
    size = (x.bit_length() + 7) // 8
    return [x.to_bytes(size, "little")[8:40], x.to_bytes(size, "big")[8:40]]


@pytest.fixture(params=["node KEK", "no KEK"])
def watched_pool(request, tmp_path, monkeypatch):
    """A pool whose every batch goes to the workers, through a pickling executor."""
    monkeypatch.setattr(workers, "INLINE_BELOW", 1)
    if request.param == "node KEK":
        kek = KeyEncryptionKey.create(tmp_path / "node.kek")
        pool = CryptoPool(kek, tmp_path / "node.kek", workers=1)
    else:
        kek, pool = None, CryptoPool(workers=1)
    pool._executor = _Pickling(pool._pool())
    yield pool, kek
    pool.close()


def test_no_secret_reaches_the_workers_unsealed(watched_pool) -> None:
    pool, kek = watched_pool
    rng = random.Random(7)
    p, q = (int(gmpy2.next_prime(rng.getrandbits(512) | 1 << 511)) for _ in range(2))
    private = phe.PaillierPrivateKey(phe.PaillierPublicKey(p * q), p, q)
    public, secrets = private.public_key, [p, q, private.hp, private.hq]

    # Paillier: encrypting a threshold table's incomes, reading the signs of a batch.
    outputs = bytes(range(128))
    blobs = pool.submit_threshold_blobs(private, [5, 7], outputs, b"context").result()
    assert len(blobs) == len(threshold_blobs_task(public.n, p, q, [5, 7], outputs, b"context"))
    ciphertexts = [[public.raw_encrypt(2**100)], [public.raw_encrypt(public.n - 2**100)]]
    signs = pool.map(th.sign_task, [p, p], [private.hp] * 2, ciphertexts, [0, 1])
    assert signs == [th.sign_task(p, private.hp, c) for c in ciphertexts]

    # The scalars of the shuffled match and of cardinality.
    scalar = group.random_scalar()
    secrets.append(scalar)
    packed = [ps.hash_batch([b"a", b"b"]), ps.hash_batch([b"c"])]
    for module in (ps, card):
        got = pool.map(module.multiply_batch, [scalar] * 2, packed, [True] * 2)
        assert got == [module.multiply_batch(scalar, x, True) for x in packed]

    # A client's blinding scalars, sent back to be finalised.
    key = oprf.OprfSecretKey.generate()
    inputs = [b"x", b"y"]
    blinds, blinded = pool.submit_blind(inputs).result()
    secrets.append(blinds)
    tags = pool.submit_finalize(inputs, blinds, oprf.blind_evaluate(key, blinded), 16).result()
    assert tags == b"".join(out[:16] for out in oprf.evaluate(key, inputs, oprf.MODE_OPRF))

    # A threshold query's batches blinded with given scalars (known-answer runs).
    batches = [[b"in%d" % i for i in range(16)], [b"on%d" % i for i in range(16)]]
    given = [[group.random_scalar() for _ in batch] for batch in batches]
    secrets += [r for batch in given for r in batch]
    modes = [oprf.MODE_OPRF] * 2
    assert pool.map(ts.blind_task, batches, modes, given) == [
        ts.blind_task(b, oprf.MODE_OPRF, g) for b, g in zip(batches, given)]

    # The OPRF key itself travels sealed under the node KEK.
    if kek is not None:
        secrets.append(key.export_secret_bytes())
        sealed = kek.seal(key.export_secret_bytes(), purpose="oprf-key/test")
        got, _ = pool.submit_rows(sealed, "oprf-key/test", inputs, 16, oprf.MODE_OPRF).result()
        assert got == tags

    sent = b"".join(pool._executor.sent)
    for task in (b"threshold_blobs_task", b"sign_task", b"multiply_batch", b"finalize_batch",
                 b"blind_task"):
        assert task in sent, task  # each reached a worker process
    leaked = [i for i, s in enumerate(secrets) for form in _encodings(s) if form in sent]
    assert leaked == [], "raw key material was submitted to a worker process"

"""OPRF keys and the batch work that uses them, spread over every core.

ristretto255 scalar multiplication is the cost of every query and of every tag table,
so batches go to a pool of worker processes (threads would serialise on the GIL).
Secrets never cross the process boundary in the clear. A task carries the OPRF key
*sealed* under the node KEK, and each worker loads the KEK itself from the node's key
file when it starts. Every other secret a task needs -- Paillier factors, the protocol
scalars of the shuffled match and of cardinality, a batch's client blinding scalars
(:data:`SECRET_ARGUMENTS` names them) -- is sealed for the trip under a key of this pool
alone: HKDF of the KEK with a random per-pool salt when the node has a KEK (the worker
derives it from the key file, so no key crosses the pipe), otherwise a random key
handed to each worker once, as it starts. What workers return (tags, evaluations, the
blinding scalars a batch was blinded with) comes back to the node's own process.

Small batches run in the calling process: a worker round trip costs more than a few
scalar multiplications, and a one-identifier query must stay fast. Keys: one OPRF key
per dataset x partner x epoch, so tag tables given to two partners cannot be joined and
one partner's epoch rotates alone. The database holds only the key sealed under the node
KEK, bound to its dataset, partner and epoch by the sealing's associated data; it is
unsealed only where it is used (a worker evaluating a batch).
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple, Sequence

from sqlalchemy import Connection, func, insert, select

from protocols import labels, oprf
from protocols.membership import blind_batch, finalize_batch

from node.core.clock import SYSTEM_CLOCK
from node.keys.secrets import KeyEncryptionKey, Sealer, SecretBytes
from node.storage.schema import oprf_keys

# -- OPRF keys, sealed at rest -------------------------------------------------------

def key_purpose(dataset: str, partner: str, epoch: int) -> str:
    """The associated data a key blob is sealed under."""
    return f"oprf-key/v1/{dataset}/{partner}/{epoch}"


def current_epoch(conn: Connection, dataset: str, partner: str) -> int | None:
    return conn.execute(select(func.max(oprf_keys.c.epoch)).where(
        oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner)).scalar()


def sealed_key(conn: Connection, dataset: str, partner: str, epoch: int) -> bytes | None:
    return conn.execute(select(oprf_keys.c.sealed_key).where(
        oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
        oprf_keys.c.epoch == epoch)).scalar()


def ensure_key(conn: Connection, kek: KeyEncryptionKey, dataset: str, partner: str, *,
               now: datetime | None = None) -> tuple[int, bytes]:
    """The current (epoch, sealed key) for dataset x partner, creating epoch 1 if none."""
    epoch = current_epoch(conn, dataset, partner)
    if epoch is not None:
        return epoch, sealed_key(conn, dataset, partner, epoch)
    return new_epoch(conn, kek, dataset, partner, now=now)


def new_epoch(conn: Connection, kek: KeyEncryptionKey, dataset: str, partner: str, *,
              now: datetime | None = None) -> tuple[int, bytes]:
    """Create the next epoch's key for dataset x partner, started `now` (the caller's clock;
    the system clock if not given); returns (epoch, sealed key)."""
    epoch = (current_epoch(conn, dataset, partner) or 0) + 1
    key = oprf.OprfSecretKey.generate()
    blob = kek.seal(key.export_secret_bytes(), purpose=key_purpose(dataset, partner, epoch))
    conn.execute(insert(oprf_keys).values(
        dataset=dataset, partner=partner, epoch=epoch, sealed_key=blob,
        public_key=key.public_key(), created_at=now or SYSTEM_CLOCK.now()))
    return epoch, blob


def epoch_started(conn: Connection, dataset: str, partner: str, epoch: int) -> datetime | None:
    value = conn.execute(select(oprf_keys.c.created_at).where(
        oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
        oprf_keys.c.epoch == epoch)).scalar()
    if value is not None and value.tzinfo is None:  # SQLite drops the zone; we store UTC
        value = value.replace(tzinfo=timezone.utc)
    return value


def answerable_epochs(conn: Connection, dataset: str, partner: str, grace: timedelta,
                      now: datetime) -> set[int]:
    """The current epoch, plus the previous one while the grace period after rotation lasts
    (judged at `now`, the context's time)."""
    current = current_epoch(conn, dataset, partner)
    if current is None:
        return set()
    epochs = {current}
    started = epoch_started(conn, dataset, partner, current)
    if current > 1 and started is not None and now < started + grace:
        epochs.add(current - 1)
    return epochs


def public_key(conn: Connection, dataset: str, partner: str, epoch: int) -> bytes | None:
    return conn.execute(select(oprf_keys.c.public_key).where(
        oprf_keys.c.dataset == dataset, oprf_keys.c.partner == partner,
        oprf_keys.c.epoch == epoch)).scalar()


# -- the pool of worker processes -----------------------------------------------------

INLINE_BELOW = 1024  # elements; below this a batch is cheaper in-process
# Protocol tasks whose every item costs milliseconds (named, not imported: TenSEAL loads
# only where aggregates run): CryptoPool.map never runs them in-process.
COSTLY_TASKS = frozenset({
    ("protocols.threshold", "blind_task"), ("protocols.threshold", "sign_task"),
    ("protocols.paillier_fast", "encrypt_incomes_task"), ("protocols.he_bfv", "encrypt_task"),
    ("protocols.he_bfv", "select_and_sum_task"),
})

# The secret arguments of every task that takes one: (module, function) -> positions.
# Positions count the arguments a task is submitted with (the KEK that keyed tasks get
# inside the worker is not one of them).
SECRET_ARGUMENTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("node.keys.workers", "threshold_rows_task"): (6, 7),         # p, q
    ("node.keys.workers", "threshold_blobs_task"): (1, 2),        # p, q
    ("protocols.threshold", "sign_task"): (0, 1),                 # p, hp
    ("protocols.paillier_fast", "encrypt_incomes_task"): (1, 2),  # p, q
    ("protocols.psi_shuffle", "multiply_batch"): (0,),            # a party's scalar
    ("protocols.cardinality", "multiply_batch"): (0,),            # a party's scalar
    # A batch's client blinding scalars: given (known-answer runs), and kept to finalize.
    ("protocols.membership", "blind_batch"): (2,),
    ("protocols.membership", "finalize_batch"): (1,),
    ("protocols.threshold_session", "blind_task"): (2,),
    ("protocols.threshold_session", "finalize_task"): (1,),
}
_TASK_KEY_INFO = b"shuqiao worker task arguments v1 "

_worker_kek: KeyEncryptionKey | None = None
_worker_sealer: Sealer | None = None


def _task_sealer(kek: KeyEncryptionKey | None, salt: bytes, key: bytes | None) -> Sealer:
    if kek is not None:
        return kek.sealer(info=_TASK_KEY_INFO + salt)
    return Sealer(SecretBytes(key))


def _init_worker(kek_path: str | None, salt: bytes = b"", key: bytes | None = None) -> None:
    global _worker_kek, _worker_sealer
    _worker_kek = KeyEncryptionKey.load(Path(kek_path)) if kek_path else None
    if salt:
        _worker_sealer = _task_sealer(_worker_kek if key is None else None, salt, key)


class SealedArgument(NamedTuple):
    """A task's secret argument on its way to a worker: sealed under the pool's key."""
    blob: bytes


def _secret_positions(fn) -> tuple[int, ...]:
    return SECRET_ARGUMENTS.get((getattr(fn, "__module__", ""), getattr(fn, "__name__", "")), ())


def _purpose(fn, position: int) -> str:
    return f"worker-task/{fn.__module__}.{fn.__name__}/{position}"


def _pack(value) -> bytes:
    # A tag byte says how to rebuild the value: Paillier numbers are ints, scalars bytes,
    # a batch's blinding scalars a list of 32-byte scalars.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"b" + bytes(value)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, bytes) and len(v) == 32 for v in value):
            raise TypeError("a secret list argument holds 32-byte scalars")
        return b"l" + b"".join(value)
    return b"i" + int(value).to_bytes((int(value).bit_length() + 8) // 8, "big", signed=True)


def _unpack(raw: bytes):
    tag, body = raw[:1], raw[1:]
    if tag == b"b":
        return body
    if tag == b"l":
        return [body[i:i + 32] for i in range(0, len(body), 32)]
    return int.from_bytes(body, "big", signed=True)


def _seal_arguments(sealer: Sealer, fn, args: Sequence) -> tuple:
    args = list(args)
    for i in _secret_positions(fn):
        if i < len(args) and args[i] is not None:  # None: an optional secret not given
            args[i] = SealedArgument(sealer.seal(_pack(args[i]), purpose=_purpose(fn, i)))
    return tuple(args)


def _open_arguments(fn, args: Sequence) -> tuple:
    opened = list(args)
    for i, value in enumerate(opened):
        if isinstance(value, SealedArgument):
            if _worker_sealer is None:
                raise RuntimeError("this worker was started without the pool's task key")
            opened[i] = _unpack(_worker_sealer.unseal(value.blob, purpose=_purpose(fn, i)))
    return tuple(opened)


def _unseal(kek: KeyEncryptionKey | None, sealed: bytes, purpose: str) -> oprf.OprfSecretKey:
    if kek is None:
        raise RuntimeError("this pool was started without the node KEK")
    return oprf.OprfSecretKey.from_bytes(kek.unseal(sealed, purpose=purpose))


def rows_task(kek: KeyEncryptionKey | None, sealed: bytes, purpose: str,
              inputs: Sequence[bytes], tag_length: int, mode: int,
              label_rows: Sequence[dict] | None, label_context: bytes, pad_to: int,
              outputs: bool = False) -> tuple[bytes, ...]:
    """Tags of a batch of rows, and their sealed labels when `label_rows` is given; with
    `outputs`, the full F_k(y) too (for the node's own threshold preparation)."""
    key = _unseal(kek, sealed, purpose)
    outs = oprf.evaluate(key, inputs, mode)
    tags = b"".join(out[:tag_length] for out in outs)
    lab = (b"" if label_rows is None else
           b"".join(labels.seal_labels(outs, label_rows, label_context, pad_to=pad_to)))
    return (tags, lab, b"".join(outs)) if outputs else (tags, lab)


def threshold_blobs_task(n: int, p: int, q: int, incomes: Sequence[int], outputs: bytes,
                         label_context: bytes) -> bytes:
    """Enc(income) sealed under each row's already computed OPRF output (64 bytes each)."""
    from protocols.paillier_fast import encrypt_incomes_task
    packed, w = encrypt_incomes_task(n, p, q, incomes), 2 * ((n.bit_length() + 7) // 8)
    outs = [outputs[i * oprf.OUTPUT_LEN:(i + 1) * oprf.OUTPUT_LEN] for i in range(len(incomes))]
    blobs = [packed[i * w:(i + 1) * w] for i in range(len(incomes))]
    return b"".join(labels.seal_blobs(outs, blobs, label_context))


def threshold_rows_task(kek: KeyEncryptionKey | None, sealed: bytes, purpose: str,
                        inputs: Sequence[bytes], tag_length: int, mode: int, n: int, p: int,
                        q: int, incomes: Sequence[int], label_context: bytes) -> tuple[bytes, bytes]:
    """A threshold table's rows: tags, and Enc(income) sealed under each row's OPRF output
    (one task per batch: the ciphertexts never cross the pipe unsealed)."""
    outs = oprf.evaluate(_unseal(kek, sealed, purpose), inputs, mode)
    return (b"".join(out[:tag_length] for out in outs),
            threshold_blobs_task(n, p, q, incomes, b"".join(outs), label_context))


def blind_evaluate_task(kek: KeyEncryptionKey | None, sealed: bytes, purpose: str,
                        packed_blinded: bytes) -> bytes:
    # k * B_i is the same arithmetic in both modes; VOPRF proofs come from prove_task.
    return oprf.blind_evaluate(_unseal(kek, sealed, purpose), packed_blinded)


def prove_task(kek: KeyEncryptionKey | None, sealed: bytes, purpose: str,
               packed_blinded: bytes, packed_evaluated: bytes) -> bytes:
    return oprf.prove(_unseal(kek, sealed, purpose), packed_blinded, packed_evaluated)


_KEYED = (rows_task, threshold_rows_task, blind_evaluate_task, prove_task)


def _call(kek: KeyEncryptionKey | None, fn, *args):
    return fn(kek, *args) if fn in _KEYED else fn(*args)


def _in_worker(fn, *args):
    return _call(_worker_kek, fn, *_open_arguments(fn, args))


def _run_now(kek: KeyEncryptionKey | None, fn, *args) -> Future:
    """Small work in-process; its result or error arrives through a future, as from a worker."""
    fut: Future = Future()
    try:
        fut.set_result(_call(kek, fn, *args))
    except Exception as exc:
        fut.set_exception(exc)
    return fut


class CryptoPool:
    """A process pool for OPRF batches; `kek_path` lets workers unseal keys."""

    def __init__(self, kek: KeyEncryptionKey | None = None, kek_path: Path | None = None,
                 workers: int = 0) -> None:
        self._kek = kek
        self._kek_path = str(kek_path) if kek_path else None
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None
        # The key secret task arguments travel under (see the module doc).
        salt = os.urandom(16)
        derived = kek is not None and self._kek_path is not None
        key = None if derived else os.urandom(32)
        self._sealer = _task_sealer(kek if derived else None, salt, key)
        self._init_args = (self._kek_path, salt, key)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the gRPC runtime's threads must not be forked.
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=self._init_args)
        return self._executor

    def warm(self) -> None:
        """Start the workers now rather than on the first large batch."""
        pool = self._pool()
        for f in [pool.submit(os.getpid) for _ in range(self.workers)]:
            f.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "CryptoPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _submit(self, n: int, fn, *args) -> Future:
        if n < INLINE_BELOW:
            return _run_now(self._kek, fn, *args)
        return self._pool().submit(_in_worker, fn, *_seal_arguments(self._sealer, fn, args))

    def _ranges(self, n: int) -> list[tuple[int, int]]:
        parts = max(1, min(self.workers, n // INLINE_BELOW))
        step = -(-n // parts)
        return [(i, min(n, i + step)) for i in range(0, n, step)]

    # -- one task each: callers that pipeline many batches use these --------------
    def submit_rows(self, sealed: bytes, purpose: str, inputs: Sequence[bytes], tag_length: int,
                    mode: int, label_rows: Sequence[dict] | None = None, label_context: bytes = b"",
                    pad_to: int = 64, outputs: bool = False) -> Future:
        return self._submit(len(inputs), rows_task, sealed, purpose, list(inputs), tag_length, mode,
                            None if label_rows is None else list(label_rows), label_context, pad_to,
                            outputs)

    def submit_threshold_rows(self, sealed: bytes, purpose: str, inputs: Sequence[bytes],
                              tag_length: int, mode: int, private_key, incomes: Sequence[int],
                              label_context: bytes) -> Future:
        """Tags and sealed Enc(income) of a batch; ``private_key``'s factors reach the
        node's own workers only, sealed."""
        return self._submit(len(inputs), threshold_rows_task, sealed, purpose, list(inputs),
                            tag_length, mode, private_key.public_key.n, private_key.p,
                            private_key.q, [int(v) for v in incomes], label_context)

    def submit_threshold_blobs(self, private_key, incomes: Sequence[int], outputs: bytes,
                               label_context: bytes) -> Future:
        """Sealed Enc(income) for rows whose OPRF outputs are known (see rows_task)."""
        return self._submit(len(incomes), threshold_blobs_task, private_key.public_key.n,
                            private_key.p, private_key.q, [int(v) for v in incomes], outputs,
                            label_context)

    def submit(self, fn, *args) -> Future:
        """``Executor.submit`` for a protocol's batch work (a picklable module function
        whose first argument is the batch): small batches run in this process."""
        return self._submit(len(args[0]), fn, *args)

    def submit_blind(self, inputs: Sequence[bytes], mode: int = oprf.MODE_OPRF) -> Future:
        return self._submit(len(inputs), blind_batch, list(inputs), mode)

    def submit_finalize(self, inputs: Sequence[bytes], packed_blinds: bytes,
                        packed_evaluated: bytes, tag_length: int, mode: int = oprf.MODE_OPRF,
                        proof: bytes = b"", public_key: bytes = b"",
                        sample: Sequence[int] = ()) -> Future:
        return self._submit(len(inputs), finalize_batch, list(inputs), packed_blinds,
                            packed_evaluated, tag_length, mode, proof, public_key, list(sample))

    def prove(self, sealed: bytes, purpose: str, packed_blinded: bytes, packed_evaluated: bytes) -> bytes:
        n = len(packed_blinded) // oprf.ELEMENT_LEN
        return self._submit(n, prove_task, sealed, purpose, packed_blinded, packed_evaluated).result()

    def map(self, fn, *iterables):
        """`map` over the workers for picklable module-level functions (protocol batches).
        Batches of cheap items (hashing, scalar multiplications) run in this process when
        they are small; items that cost milliseconds each (Paillier, BFV) always go out."""
        args = list(zip(*iterables))
        work = sum(len(x) for a in args for x in a if isinstance(x, (bytes, list)))
        costly = (getattr(fn, "__module__", ""), getattr(fn, "__name__", "")) in COSTLY_TASKS
        if len(args) < 2 or (work < 32 * INLINE_BELOW and not costly):
            return [fn(*a) for a in args]
        if not _secret_positions(fn):
            return list(self._pool().map(fn, *zip(*args)))
        sealed = [_seal_arguments(self._sealer, fn, a) for a in args]
        return list(self._pool().map(_in_worker, [fn] * len(sealed), *zip(*sealed)))

    # -- one batch spread over every worker ----------------------------------------
    def blind_evaluate(self, sealed: bytes, purpose: str, packed: bytes) -> bytes:
        w = oprf.ELEMENT_LEN
        futures = [self._submit(b - a, blind_evaluate_task, sealed, purpose, packed[a * w:b * w])
                   for a, b in self._ranges(len(packed) // w)]
        return b"".join(f.result() for f in futures)


class SealedKeyEvaluator:
    """A protocols.membership.Evaluator over an OPRF key sealed under the node KEK: each
    batch is spread over the workers, which unseal the key themselves."""

    def __init__(self, pool: CryptoPool, sealed: bytes, purpose: str) -> None:
        self._pool, self._sealed, self._purpose = pool, sealed, purpose

    def evaluate(self, packed_blinded: bytes) -> bytes:
        return self._pool.blind_evaluate(self._sealed, self._purpose, packed_blinded)

    def prove(self, packed_blinded: bytes, packed_evaluated: bytes) -> bytes:
        return self._pool.prove(self._sealed, self._purpose, packed_blinded, packed_evaluated)

"""Bulk PSI from OT extension (KKRT16): the rounds, who learns what, and the session shape.

Protocol: Kolesnikov, Kumaresan, Rosulek, Trieu, "Efficient Batched Oblivious PRF
with Applications to Private Set Intersection", ACM CCS 2016 — semi-honest
security, as that paper proves it for its PSI protocol, with statistical
security 40 and computational security 128 (:mod:`.params`). The fund centre is the
*receiver* (it learns the intersection), the agency the *sender* (it holds the big
dataset). Rounds; every message is bytes (:mod:`.messages`)::

    fund centre X (n1)                                 agency Y (n2)
    a, A = a*G (base-OT first message)
                          -- Hello(n1, bins, A) -->
    key_h <- 16 random bytes; d(x) = CBC-MAC_key_h(x)  check bins = bins(n1)
    cuckoo-place each x in one of h_0..h_2(d(x))       s <- {0,1}^512; B_i, k_i^{s_i}
      (3 functions, bins = e(n1)*n1; a failed          seed <- 32 random bytes
      table is rebuilt under a fresh key_h)
                          <-- Setup(n2, B_1..B_512, seed) --
    k_i^0, k_i^1 from the B_i; code key, hash key from seed
                          -- HashingKey(key_h) -->
                                                       d(y), h_0..h_2(d(y)) for all y,
                                                       random order of Y
    per slice of bins: u_j = t_j ^ G1_j ^ C(x_j),
      own value v_x = H_i(t_j) for x in bin j by h_i
                          -- Correction chunk 0..K-1 (u) -->
                                                       q_j = G_s,j ^ (u_j & s)
                          <-- Values chunk 0..M-1 --   H_i(q_{h_i(y)} ^ (C(y) & s)),
                                                       i = 0..2, per y in random order
    x in X n Y  iff  v_x equals a received value of its function i

The fund centre builds its table while the agency runs its base OTs, and the agency
hashes its rows while the first corrections are under way; the hashing key goes out
only once a table under it exists, so a rehash is invisible to the agency.

What each side learns.

* Agency (sender): ``n1`` and the bin count (which follows from ``n1``), ``A`` and
  a hashing key under which X fits a cuckoo table (within 2^-40 of a uniform key,
  :mod:`.params`), and the corrections ``u``, which are
  masked by the PRG streams of the seeds it did not choose: pseudorandom, whatever
  X is. Nothing about which of its elements matched: nothing comes back.
* Fund centre (receiver): ``n2``, and for each of its elements whether the agency
  holds it. The values of the agency's other elements are pseudorandom to it
  (each needs >= 128 unknown bits of ``s``), and their order is a fresh random
  permutation of the agency's rows, so a match says nothing about where the row
  sits in the dataset. A false match happens with probability <= 2^-40.
* Quotas: the fund centre obtains one OPRF evaluation per bin,
  :attr:`BulkReceiver.oprf_evaluations` (= :attr:`BulkSender.oprf_evaluations`,
  checked by the agency against ``n1``), whether or not the bin holds an element.

A malicious fund centre is out of scope (KKRT16 is semi-honest): the bin check only
stops it from asking for more OPRF evaluations than its declared size allows. Nothing
checks the corrections: flipping bits of ``u_j`` in the bin of an element the agency
holds reads bits of ``s`` off whether it still matches, and with ``s`` every value the
agency sent can be tested against guessed elements (SECURITY.md, "bulk"; shown in
tests/protocols/test_bulk_session.py).

Shape: ``start()`` (fund centre only) and ``handle(message)`` return an iterator
of outgoing messages, produced lazily so that big rounds are streamed with bounded
memory; consume it fully before the next call (else
:class:`ProtocolStateError`). ``finished`` and ``result()`` end the run. No clock,
no network; randomness only from ``random_bytes``; ``on_stage(name)`` is called as
each stage of work begins, for progress and profiling. After any error a session
is dead: every later call raises :class:`ProtocolStateError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from .blockcipher import Aes
from .messages import ProtocolStateError, message_type

__all__ = ["Session", "as_elements", "session_keys", "has_duplicates", "DEFAULT_CHUNK_ROWS",
           "DEFAULT_CHUNK_ELEMENTS", "MAX_CHUNK_ROWS", "MAX_CHUNK_ELEMENTS"]

RandomBytes = Callable[[int], bytes]
StageHook = Callable[[str], None]

DEFAULT_CHUNK_ROWS = 1 << 15        # 2 MiB of corrections per message
DEFAULT_CHUNK_ELEMENTS = 1 << 16    # ~2 MiB of values per message at 1M x 1M
MAX_CHUNK_ROWS = 1 << 18            # a peer cannot make us hold more than 16 MiB at once
MAX_CHUNK_ELEMENTS = 1 << 18


def as_elements(elements: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """A fixed-width bytes array (dtype ``S<k>``) of distinct, NUL-free elements.

    Raises:
        ValueError: empty, or an element ends in a NUL byte (which ``S`` would drop).
    """
    if isinstance(elements, np.ndarray) and elements.dtype.kind == "S":
        arr = elements.reshape(-1)
    else:
        items = list(elements)
        arr = np.array(items, dtype=bytes) if items else np.array([], "S1")
        lengths = np.fromiter(map(len, items), np.int64, len(items))
        if arr.size and np.any(np.char.str_len(arr) != lengths):
            raise ValueError("elements must not end with a NUL byte")
    if arr.size == 0:
        raise ValueError("at least one element is needed")
    return arr


def has_duplicates(digests: np.ndarray) -> bool:
    """Whether two ``(N, 16)`` digests are equal (i.e. an element is repeated, w.h.p.).

    Sorting the first 64-bit word decides almost always; the full comparison runs only
    when two first words agree.
    """
    first = np.sort(np.ascontiguousarray(digests).view(np.uint64)[:, 0])
    if not np.any(first[1:] == first[:-1]):
        return False
    return np.unique(np.ascontiguousarray(digests).view("V16")).size != digests.shape[0]


def session_keys(seed: bytes) -> tuple[Aes, Aes]:
    """The code PRF key and the hash permutation key, both from the agency's seed."""
    def derive_key(label: bytes) -> bytes:
        return hashlib.sha256(b"shuqiao/bulk/v1/" + label + seed).digest()[:16]
    return Aes(derive_key(b"code")), Aes(derive_key(b"hash"))


class Session:
    """Round bookkeeping shared by both sides; key-holding, so never printed or copied."""

    __slots__ = ("_rb", "_stage", "_pending", "_dead", "finished", "__weakref__")

    def __init__(self, random_bytes: RandomBytes, on_stage: StageHook | None) -> None:
        self._rb, self._stage = random_bytes, on_stage or (lambda _name: None)
        self._pending = self._dead = False
        self.finished = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} secret state hidden>"

    def _refuse(self, *_: object) -> None:
        raise TypeError(f"{type(self).__name__} holds per-query secrets; it is not copyable")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse

    def _check_live(self) -> None:
        if self._dead or self.finished:
            raise ProtocolStateError("the session has ended")
        if self._pending:
            raise ProtocolStateError("the previous round's messages were not all taken")

    def handle(self, message: bytes) -> Iterator[bytes]:
        """Process one peer message; returns the (lazily produced) messages to send.

        Raises:
            InvalidMessage: malformed or inconsistent message (the session dies).
            ProtocolStateError: a message of the wrong round, or after the end.
        """
        self._check_live()
        try:
            out = self._dispatch(message_type(message), message)
        except BaseException:
            self._dead = True
            raise
        self._pending = True
        return self._guard(out)

    def _guard(self, out: Iterable[bytes]) -> Iterator[bytes]:
        try:
            yield from out
        except BaseException:  # includes GeneratorExit: messages were dropped
            self._dead = True
            raise
        self._pending = False

    def _dispatch(self, kind: int, message: bytes) -> Iterable[bytes]:
        raise NotImplementedError

"""Shuffled DH matching over ristretto255: the fund centre learns a 0/1 selection over the
agency's *shuffled* rows, and nothing that ties a match to one of its own elements.

This is the "cardinality-style exchange" the aggregate and threshold kinds share (the
commutative-blinding PSI of Huberman, Franklin & Hogg, EC 1999, in the shuffled form
of Ion et al., "On Deploying Secure Computing: Private Intersection-Sum-with-
Cardinality", EuroS&P 2020). Both keys are fresh per query; the agency's cached epoch
OPRF key is never used, so nothing here can be joined with a tag table.

Rounds (every message is bytes; "packed" = concatenated 32-byte encodings)::

    fund centre (x_1..x_m)                       agency (rows y_1..y_N)
    a <- random scalar                           b <- random scalar, pi <- random perm
    A = shuffle(a*H(x_i))          --request-->  check every A_i
                                                 B = shuffle'(b*A_i)
                                   <--response-- Y_j = b*H(y_pi(j)), j = 0..N-1
    C_i = a^-1 * B_i = b*H(x_i)  (a set)
    sel_j = [Y_j in C]           -> Selection over the agency's shuffled row order

``pi`` (shuffled position -> dataset row) stays with the agency; the he_aggregate
and threshold layers lay the agency's encrypted values out in that same order.

Who learns what.

* Fund centre: N, and ``sel`` — a 0/1 vector over a fresh uniformly random order of
  the agency's rows. It therefore learns the *intersection size* |X n Y| exactly
  (un-noised; the aggregate kind's DP protects per-group figures, not this total).
  It does not learn which x_i matched: the B_i come back shuffled, so C is an
  unordered set, and b*H(x) for an x not sent is a DDH-hard value. Y_j and C_i are
  fresh pseudonyms, unlinkable across queries. A *malicious* fund centre can still
  submit one real identifier padded with made-up ones and read membership off the
  count: that is inherent in any cardinality or sum function, so the node's policy
  (minimum query size, quotas, ledger) bounds it, not this module.
* Agency: m, and m uniformly random group elements (a is fresh and unknown to it).
  It learns nothing about which of its rows matched: the selection never leaves the
  fund centre.

Costs (ristretto255 scalar multiplications, ~50 us each on this machine; H is
hash-to-group, ~15 us): fund centre m H + 2m mults (blind, unblind); agency m + N
mults plus N H. The agency's N H depend only on the dataset version (cache them, see
:func:`hash_identifiers`); its N mults and the permutation depend on no query input,
so :meth:`AgencyShuffler.prepare` can run ahead of time (one prepared state per query,
never reused). For 100k x 1M that is ~1.1M mults at the agency and ~200k at the fund
centre. (Having the fund centre re-blind the agency's N rows with a instead, and
compare a*b*H values, would cost it N mults for no gain: it can always map a*b*H to
b*H with a^-1, so unblinding its own m elements reveals exactly the same.)
The ``*_batch`` functions work on packed bytes and are picklable, so a node can hand
chunks to a process pool through the ``mapper`` argument (any ``map``-like callable,
e.g. ``ProcessPoolExecutor.map``); the scalar then travels to the node's own workers.

Every peer element that is multiplied is checked with :func:`group.is_valid_element`
(canonical, non-identity); the agency's row elements are only compared byte-wise,
so they get a structural check and duplicates are refused (a match implies equality
with a libsodium output, hence a valid element). Failures are one opaque
:class:`InvalidMessage`. Randomness: libsodium and ``os.urandom`` unless a test passes
``rng`` (a ``random.Random``).
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import rbcl

from protocols import group
from protocols.session import ProtocolStateError

__all__ = [
    "DST", "InvalidMessage", "ProtocolStateError", "ShuffleRequest", "ShuffleResponse",
    "Selection", "FundCentreMatcher", "AgencyShuffler", "hash_identifiers",
    "hash_batch", "multiply_batch", "random_permutation", "scalar_mult_counts",
]

#: Domain-separation tag of this protocol's hash-to-group (RFC 9380 §3.1).
DST = b"HashToGroup-ShuqiaoShuffleMatchV1-ristretto255-SHA512"
CHUNK = 4096  # elements per task handed to ``mapper``
_VERSION = 1
_hash_to_group = group.make_hash_to_group(DST)
Mapper = Callable[..., Iterable[bytes]]


class InvalidMessage(ValueError):
    """A peer's message or element was rejected. Deliberately opaque."""

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        super().__init__("invalid shuffle-match message from peer"
                         + ("" if index is None else f" (element {index})"))

    def __reduce__(self):  # picklable across a process pool
        return (InvalidMessage, (self.index,))


# --- packed-bytes batch functions (picklable, for process pools) --------------------


def hash_batch(identifiers: Sequence[bytes]) -> bytes:
    """Packed H(x) for normalised identifiers (the node types and normalises them).

    Raises:
        ValueError: an identifier hashes to the identity (probability ~2^-252).
    """
    out = [_hash_to_group(x) for x in identifiers]
    if group.IDENTITY in out:
        raise ValueError("an identifier hashes to the identity")
    return b"".join(out)


def multiply_batch(scalar: bytes, packed: bytes, validate: bool = True, offset: int = 0) -> bytes:
    """Packed ``scalar * P`` for every element P of ``packed``.

    Args:
        validate: check each element first (always, for anything a peer sent).
        offset: index of the first element in the whole message, for error reports.

    Raises:
        InvalidMessage: a malformed array or an invalid element (its index).
    """
    try:
        elements = group.split_elements(packed)
    except ValueError:
        raise InvalidMessage() from None
    mul, valid, out = group.element_mul, group.is_valid_element, []
    for i, e in enumerate(elements):
        if validate and not valid(e):
            raise InvalidMessage(offset + i)
        try:
            out.append(mul(scalar, e))
        except RuntimeError:  # libsodium: invalid point or identity product
            raise InvalidMessage(offset + i) from None
    return b"".join(out)


def hash_identifiers(identifiers: Sequence[bytes], mapper: Mapper = map,
                     chunk: int = CHUNK) -> bytes:
    """Packed H(y) over a dataset, in its order: the agency caches this per version."""
    parts = [list(identifiers[i:i + chunk]) for i in range(0, len(identifiers), chunk)]
    return b"".join(mapper(hash_batch, parts))


def _multiply(scalar: bytes, packed: bytes, validate: bool, mapper: Mapper, chunk: int) -> bytes:
    step = chunk * group.ELEMENT_LEN
    parts = [packed[i:i + step] for i in range(0, len(packed), step)]
    k = len(parts)
    return b"".join(mapper(multiply_batch, [scalar] * k, parts, [validate] * k,
                           [i * chunk for i in range(k)]))


def _random_scalar(rng: random.Random | None) -> bytes:
    if rng is None:
        return group.random_scalar()
    while True:
        s = rbcl.crypto_core_ristretto255_scalar_reduce(rng.randbytes(64))
        if group.is_nonzero_scalar(s):
            return s


def random_permutation(n: int, rng: random.Random | None = None) -> np.ndarray:
    """A uniformly random permutation of range(n) as an int64 array.

    Sorting 64-bit keys from the OS CSPRNG (or ``rng``); a draw with a repeated key
    (probability ~n^2/2^65) is redrawn, so every permutation is equally likely.
    """
    while True:
        raw = os.urandom(8 * n) if rng is None else rng.randbytes(8 * n)
        keys = np.frombuffer(raw, dtype="<u8")
        order = np.argsort(keys, kind="stable")
        if n < 2 or np.all(keys[order[1:]] != keys[order[:-1]]):
            return order.astype(np.int64)


def _shuffle_packed(packed: bytes, rng: random.Random | None) -> bytes:
    arr = np.frombuffer(packed, dtype=np.uint8).reshape(-1, group.ELEMENT_LEN)
    return arr[random_permutation(len(arr), rng)].tobytes()


def scalar_mult_counts(fund_centre_elements: int, agency_rows: int) -> dict[str, dict[str, int]]:
    """Group operations per side for one query (see the module docstring)."""
    m, n = fund_centre_elements, agency_rows
    return {"fund_centre": {"hash_to_group": m, "scalar_mul": 2 * m},
            "agency": {"hash_to_group_cacheable": n, "scalar_mul": n + m}}


# --- messages -----------------------------------------------------------------------


def _frame(*fields: bytes) -> bytes:
    return bytes((_VERSION,)) + b"".join(struct.pack(">Q", len(f)) + f for f in fields)


def _unframe(data: bytes, count: int) -> list[bytes]:
    data = bytes(data)
    if not data or data[0] != _VERSION:
        raise InvalidMessage()
    fields, off = [], 1
    for _ in range(count):
        if off + 8 > len(data):
            raise InvalidMessage()
        (n,) = struct.unpack_from(">Q", data, off)
        if off + 8 + n > len(data):
            raise InvalidMessage()
        fields.append(data[off + 8:off + 8 + n])
        off += 8 + n
    if off != len(data):
        raise InvalidMessage()
    for f in fields:
        if len(f) % group.ELEMENT_LEN:
            raise InvalidMessage()
    return fields


class ShuffleRequest:
    """Fund centre -> agency: packed a*H(x_i), in a random order."""

    __slots__ = ("blinded",)

    def __init__(self, blinded: bytes) -> None:
        self.blinded = bytes(blinded)

    def __len__(self) -> int:
        return len(self.blinded) // group.ELEMENT_LEN

    def to_bytes(self) -> bytes:
        return _frame(self.blinded)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShuffleRequest:
        return cls(*_unframe(data, 1))


class ShuffleResponse:
    """Agency -> fund centre: shuffled b*a*H(x_i), and b*H(y) in the agency's row order."""

    __slots__ = ("double_blinded", "rows")

    def __init__(self, double_blinded: bytes, rows: bytes) -> None:
        self.double_blinded, self.rows = bytes(double_blinded), bytes(rows)

    def to_bytes(self) -> bytes:
        return _frame(self.double_blinded, self.rows)

    @classmethod
    def from_bytes(cls, data: bytes) -> ShuffleResponse:
        return cls(*_unframe(data, 2))


class Selection:
    """The fund centre's 0/1 vector over the agency's shuffled rows."""

    __slots__ = ("bits",)

    def __init__(self, bits: np.ndarray) -> None:
        self.bits = np.asarray(bits, dtype=bool)

    def __len__(self) -> int:
        return len(self.bits)

    @property
    def count(self) -> int:
        return int(self.bits.sum())


# --- the two parties ----------------------------------------------------------------


class _Secret:
    """Key-holding state objects: no repr of secrets, no pickling or copying."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} secret state hidden>"

    def _refuse(self, *_: object) -> None:
        raise TypeError(f"{type(self).__name__} holds a per-query secret; it is not copyable")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse


class FundCentreMatcher(_Secret):
    """The asking side: ``request()`` then ``select(response)``; single use."""

    __slots__ = ("_ids", "_key", "_rng", "_mapper", "_chunk", "_sent", "finished")

    def __init__(self, identifiers: Iterable[bytes], *, rng: random.Random | None = None,
                 mapper: Mapper = map, chunk: int = CHUNK) -> None:
        self._ids = sorted(set(identifiers))  # duplicates would only show up as a count
        if not self._ids:
            raise ValueError("at least one identifier is needed")
        self._rng, self._mapper, self._chunk = rng, mapper, chunk
        self._key = _random_scalar(rng)
        self._sent: int | None = None
        self.finished = False

    def request(self) -> ShuffleRequest:
        if self._sent is not None:
            raise ProtocolStateError("request() was already sent")
        hashed = _shuffle_packed(hash_identifiers(self._ids, self._mapper, self._chunk), self._rng)
        self._sent = len(self._ids)
        return ShuffleRequest(_multiply(self._key, hashed, False, self._mapper, self._chunk))

    def select(self, response: ShuffleResponse) -> Selection:
        """Unblind the shuffled set, return the selection over the agency's rows.

        Raises:
            InvalidMessage: wrong sizes, invalid or repeated elements from the agency.
            ProtocolStateError: called before ``request()`` or twice.
        """
        if self._sent is None or self.finished:
            raise ProtocolStateError("select() needs exactly one prior request()")
        self.finished = True
        if len(response.double_blinded) != self._sent * group.ELEMENT_LEN:
            raise InvalidMessage()
        inverse = group.scalar_invert(self._key)
        mine = set(group.split_elements(
            _multiply(inverse, response.double_blinded, True, self._mapper, self._chunk)))
        if len(mine) != self._sent:
            raise InvalidMessage()
        arr = np.frombuffer(response.rows, np.uint8).reshape(-1, group.ELEMENT_LEN)
        if np.any(arr[:, -1] >= 0x80) or not np.all(arr.any(axis=1)):  # non-canonical, identity
            raise InvalidMessage()
        rows = group.split_elements(response.rows)
        if len(set(rows)) != len(rows):
            raise InvalidMessage()
        return Selection(np.fromiter((r in mine for r in rows), dtype=bool, count=len(rows)))


class AgencyShuffler(_Secret):
    """The answering side for one query: ``prepare()`` (optional, ahead of time), then
    ``respond(request)``; :attr:`permutation` maps shuffled positions to dataset rows."""

    __slots__ = ("_hashed", "_key", "_perm", "_rows", "_rng", "_mapper", "_chunk", "finished")

    def __init__(self, hashed_rows: bytes, *, rng: random.Random | None = None,
                 mapper: Mapper = map, chunk: int = CHUNK) -> None:
        """Args: hashed_rows: packed H(y) in dataset order (:func:`hash_identifiers`)."""
        n, rest = divmod(len(hashed_rows), group.ELEMENT_LEN)
        if rest or n == 0:
            raise ValueError("hashed_rows must be a non-empty packed array")
        self._hashed, self._rng, self._mapper, self._chunk = hashed_rows, rng, mapper, chunk
        self._key = _random_scalar(rng)
        self._perm = random_permutation(n, rng)
        self._rows: bytes | None = None
        self.finished = False

    @property
    def permutation(self) -> np.ndarray:
        """Agency-private: ``permutation[j]`` is the dataset row at shuffled position j."""
        return self._perm

    def prepare(self) -> None:
        """Blind the rows under b in shuffled order; depends on no query input."""
        if self._rows is None:
            arr = np.frombuffer(self._hashed, dtype=np.uint8).reshape(-1, group.ELEMENT_LEN)
            self._rows = _multiply(self._key, arr[self._perm].tobytes(), False,
                                   self._mapper, self._chunk)

    def respond(self, request: ShuffleRequest, *, min_elements: int = 1,
                max_elements: int | None = None) -> ShuffleResponse:
        """Raises:
            InvalidMessage: an invalid element, or a size outside the given bounds.
            ProtocolStateError: a second request on the same per-query state.
        """
        if self.finished:
            raise ProtocolStateError("this per-query state has already answered")
        self.finished = True
        m = len(request)
        if m < min_elements or (max_elements is not None and m > max_elements):
            raise InvalidMessage()
        self.prepare()
        evaluated = _multiply(self._key, request.blinded, True, self._mapper, self._chunk)
        return ShuffleResponse(_shuffle_packed(evaluated, self._rng), self._rows)

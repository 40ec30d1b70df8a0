"""Private intersection cardinality with fresh keys, shuffling and dummy-match noise.

The fund centre learns |X ∩ Y| plus noise the agency chose; the agency learns |X|.
Both keys are fresh per query (the cached epoch OPRF key is never used), and every
list is shuffled, so even a malicious fund centre cannot tie the count to elements.

Rounds (packed = concatenated 32-byte ristretto255 encodings; H = hash-to-group)::

    fund centre (x_1..x_m)                      agency (rows y_1..y_N)
    a <- random scalar
    A = shuffle(a*H(x_i)), P = a*G  --request-->  check every element
                                                b <- random scalar; d fakes, D-d pads
                                                t_k <- random scalars (k < d)
                                                B = shuffle({b*A_i} + {b*t_k*P} + pads)
                                <--response--   Y = shuffle({b*H(y_j)} + {b*t_k*G} + pads)
    C = {a^-1 * B_i}  (= b*H(x_i), and b*t_k*G for the fakes)
    count = |C ∩ Y| - shift

The d "fake matches" b*t_k*a*G / b*t_k*G are indistinguishable from real ones for the
fund centre (all are b times a point whose discrete log it does not know), and the pads
keep |B| = m + D and |Y| = N + D whatever d is, so the fund centre learns c + d and
nothing else. The agency draws d = clamp(shift + L, 0, D) with L a discrete Laplace
sample (drawn by the node with a vetted DP library); with shift = D/2 the release
c + d - shift is unbiased. The agency only ever sees m uniformly random elements and P.

Costs: fund centre m H + m + (m + D) scalar mults; agency m + N + 2d mults and N H (the
H(y_j) depend only on the dataset version and can be cached).

References: Huberman, Franklin, Hogg (EC 1999); Ion et al., "On Deploying Secure
Computing: Private Intersection-Sum-with-Cardinality" (EuroS&P 2020); dummy-record
noise as in Prio-style shuffled DP counting.
"""
from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np
import rbcl

from protocols import group, h2c

DST = b"HashToGroup-ShuqiaoCardinalityV1-ristretto255-SHA512"
_hash = h2c.make_hash_to_group(DST)


class InvalidMessage(ValueError):
    """A peer's cardinality message is malformed or holds an invalid element."""

    def __init__(self) -> None:
        super().__init__("invalid cardinality message from peer")


def hash_batch(identifiers: Sequence[bytes]) -> bytes:
    """H(y) for each identifier (the agency caches these per dataset version)."""
    return b"".join(map(_hash, identifiers))


def multiply_batch(scalar: bytes, packed: bytes, validate: bool = False) -> bytes:
    """scalar * each element of `packed`; with `validate`, peer elements are checked first."""
    elements = group.split_elements(packed)
    if validate and not all(map(group.is_valid_element, elements)):
        raise InvalidMessage()
    mul = rbcl.crypto_scalarmult_ristretto255
    return b"".join(mul(scalar, e) for e in elements)


def shuffle(packed: bytes, rng: random.Random | None = None) -> bytes:
    arr = np.frombuffer(packed, dtype="V32")
    order = np.arange(len(arr))
    (rng or random.SystemRandom()).shuffle(order)
    return arr[order].tobytes()


def _pads(n: int) -> bytes:
    return b"".join(rbcl.crypto_core_ristretto255_random() for _ in range(n))


class FundCentreCount:
    """The fund centre's side: one instance per query, never reused."""

    def __init__(self, identifiers: Sequence[bytes]) -> None:
        if not identifiers:
            raise ValueError("nothing to count")
        self._a = group.random_scalar()
        self.size = len(identifiers)
        self._hashed = hash_batch(identifiers)

    def request(self, mapper=map) -> tuple[bytes, bytes]:
        """(P = a*G, packed shuffled a*H(x_i)); `mapper` may spread chunks over processes."""
        parts = _chunks(self._hashed)
        blinded = b"".join(mapper(multiply_batch, [self._a] * len(parts), parts))
        return group.base_mul(self._a), shuffle(blinded)

    def count(self, packed_b: bytes, packed_y: bytes, dummies: int, shift: int, mapper=map) -> int:
        """c + d - shift from the agency's response (a^-1 applied to B, then a set join)."""
        if len(packed_b) != 32 * (self.size + dummies) or len(packed_y) % 32:
            raise InvalidMessage()
        inv = group.scalar_invert(self._a)
        parts = _chunks(packed_b)
        try:
            unblinded = b"".join(mapper(multiply_batch, [inv] * len(parts), parts, [True] * len(parts)))
        except RuntimeError:
            raise InvalidMessage() from None
        c = np.frombuffer(unblinded, dtype="S32")
        y = np.frombuffer(packed_y, dtype="S32")
        if len(np.unique(y)) != len(y):
            raise InvalidMessage()
        return int(np.isin(c, y).sum()) - shift


class AgencyCount:
    """The agency's side: fresh b per query; `fakes` comes from the node's DP mechanism."""

    def __init__(self, padding: int, fakes: int) -> None:
        if not 0 <= fakes <= padding:
            raise ValueError("fakes must lie in [0, padding]")
        self._b = group.random_scalar()
        self._t = [group.random_scalar() for _ in range(fakes)]
        self.padding = padding

    def respond(self, p: bytes, packed_a: bytes, hashed_rows: bytes, mapper=map) -> tuple[bytes, bytes]:
        """(B, Y), both shuffled; `hashed_rows` = hash_batch of the dataset version."""
        if not group.is_valid_element(p) or len(packed_a) % 32 or not packed_a:
            raise InvalidMessage()
        a_parts, y_parts = _chunks(packed_a), _chunks(hashed_rows)
        b = self._b
        blinded = b"".join(mapper(multiply_batch, [b] * len(a_parts), a_parts, [True] * len(a_parts)))
        rows = b"".join(mapper(multiply_batch, [b] * len(y_parts), y_parts))
        fake_b, fake_y = [], []
        for t in self._t:
            bt = group.scalar_mul(b, t)
            fake_b.append(group.element_mul(bt, p))
            fake_y.append(group.base_mul(bt))
        pads = self.padding - len(self._t)
        return (shuffle(blinded + b"".join(fake_b) + _pads(pads)),
                shuffle(rows + b"".join(fake_y) + _pads(pads)))


def _chunks(packed: bytes, size: int = 4096) -> list[bytes]:
    step = 32 * size
    return [packed[i:i + step] for i in range(0, len(packed), step)] or [b""]

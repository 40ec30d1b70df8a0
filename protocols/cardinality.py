"""Private intersection cardinality counted by the agency, noised by both sides.

The fund centre (x_1..x_m) learns |X ∩ Y| + L, L the agency's DP noise; the agency
(rows y_1..y_N) learns m + D' and c + d', blurred by the fund centre's own noise d'.
Both keys are fresh per query (the epoch OPRF key is never used) and every list is
shuffled. H = hash-to-group, G the ristretto255 base point, all lists packed 32-byte
encodings::

    fund centre                                  agency
    a, t_1..t_d' <- random scalars
    A = shuffle(a*H(x_i) ∪ t_k*G ∪ pads)
    |A| = m + D', P = a*G      --- 1 --->        check size, validity, distinctness
                                                 b, s_1..s_K <- random scalars
                               <--- 2 ---        Y' = shuffle(b*H(y_j) ∪ s_c*G), Q = b*G
    check Y', Q valid, Y' distinct
    Y'' = shuffle(a*Y'_j ∪ t_k*Q ∪ pads)
    |Y''| = N + K + D'         --- 3 --->        check size, validity, distinctness,
                                                 every canary s_c*P in Y'' (then dropped)
                                                 f = |b*A ∩ Y''| = c + d'
                               <--- 4 ---        release f + L (L: discrete Laplace)
    c + L = release - d'

Real pairs meet as a*b*H(x) = b*a*H(y); the d' dummies meet as b*t_k*G = t_k*b*G; pads
(uniformly random elements) meet nothing. D' is the fund centre's padding, announced
with P; it draws d' in [0, D'] from a shifted, clamped discrete Laplace (its own DP
protection of c from the agency, as the aggregate kind's per-group counts are blurred).

Who learns what. The agency sees m + D' uniformly random elements, P, Y'' (uniformly
random elements to it) and f = c + d'; with D' and m announced it learns m, and c only
through d'. The fund centre sees Y' and Q: under DDH, b*H(y_j) is indistinguishable from
random even given Q and H(x), and it is shuffled with the K canaries s_c*G; it never
receives b times anything it chose. The only value depending on the intersection that
it ever receives is the agency's noised release.

Malicious fund centre (the weakness of DH PSI-CA in Huberman–Franklin–Hogg and Ion et
al., where the client unblinds b*A itself and may blind targets under second keys): here
it never sees b*A, so a second key a' on some elements is useless to it; whatever A and
Y'' it builds, the count is computed by the agency and reaches it only noised. What it
can still shape is f's sensitivity to one agency row: each element of Y'' can carry at
most one copy of a row (A and Y'' are distinct, so each Y'' element matches at most one
element of b*A), and the rows are shuffled, so it cannot aim copies at a given row. The
canaries (s_c*G, indistinguishable from rows; the agency checks that s_c*P comes back,
i.e. that its key a was applied) make dropping rows to free places detectable with
probability 1 - (1 - K/(N+K))^r for r dropped rows; so one copy of every row takes N of
the N + D' places and at most D' < N remain for second copies. The agency therefore
calibrates L to sensitivity 2 (= ceil((N + D')/N), refusing D' >= N). Residual risk,
stated: a fund centre that spends its D' spare places on c - 1 further copies of a few
guessed positions makes one row count c times with probability <= D'/((c - 1)N) per
query (plus its undetected-drop chance), which the agency bounds by capping D'.

Without DP the release is exact; then a fund centre that pads a floor-sized query with
people it knows are absent learns one person's membership (inherent to any exact count:
the grant's floor, or its explicit `exact_small_counts`, is the control).

Costs (scalar mults): fund centre m H + (m + d') + (N + K + d'); agency N H (cached per
dataset version) + (N + K) + (m + D') + K; K = max(32, N/16) canaries.

The noise on both sides is planned here too (:func:`noise_plan` for the agency's L,
:func:`fund_centre_noise` for d' and D'); protocols/cardinality_session.py runs the rounds
as a session for each side. Randomness: libsodium's CSPRNG for keys and pads, OpenDP's
sampler for the noise and the system CSPRNG for shuffles, unless a test injects ``rng``
(a ``random.Random``) or ``draw`` (a noise sampler).

References: Huberman, Franklin, Hogg, "Enhancing privacy and trust in electronic
communities" (EC 1999); Ion et al., "On Deploying Secure Computing: Private
Intersection-Sum-with-Cardinality" (EuroS&P 2020).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import rbcl

from protocols import group
from protocols.dp import DiscreteLaplace

DST = b"HashToGroup-ShuqiaoCardinalityV2-ristretto255-SHA512"
_hash = group.make_hash_to_group(DST)
SENSITIVITY = 2   # one agency row counts at most twice in f (see the module docstring)
MAX_PADDING = 4096     # the agencies' cap on D': bounds a malicious fund centre's spare places
PADDING_DELTA = 1e-9   # P(the fund centre's own noise is clamped)


class InvalidMessage(ValueError):
    """A peer's cardinality message is malformed or holds an invalid element.

    The round steps here stay opaque; the sessions give the rule that was broken (never
    a value), which the node may send back to the peer."""

    def __init__(self, reason: str = "invalid cardinality message from peer") -> None:
        super().__init__(reason)


# -- the noise on both sides ----------------------------------------------------------------

Draw = Callable[[DiscreteLaplace], int]


def _draw(laplace: DiscreteLaplace) -> int:
    return laplace.sample()


@dataclass(frozen=True)
class NoisePlan:
    """The agency's noise for one release: L, with |L| <= bound, and the epsilon it costs."""

    noise: int
    bound: int
    epsilon: float

    @property
    def epsilon_micro(self) -> int:
        return round(self.epsilon * 1e6)


def noise_plan(epsilon: float | None, delta: float, draw: Draw = _draw) -> NoisePlan:
    """L for one release under the grant's (epsilon, delta): a discrete Laplace at
    sensitivity 2, clamped to a bound it exceeds with probability at most delta. Without
    epsilon the release is exact: (0, 0, 0.0)."""
    if epsilon is None:
        return NoisePlan(0, 0, 0.0)
    laplace = DiscreteLaplace(SENSITIVITY, epsilon)
    bound = math.ceil(laplace.scale * math.log(1.0 / delta))  # P(|L| > bound) <= delta
    return NoisePlan(min(max(draw(laplace), -bound), bound), bound, epsilon)


def fund_centre_noise(epsilon: float, rows: int, draw: Draw = _draw) -> tuple[int, int]:
    """(d', D'): the fund centre's dummy matches and padding, D' below the agency's row
    count (and at most MAX_PADDING); d' a discrete Laplace shifted and clamped into [0, D']."""
    laplace = DiscreteLaplace(1, epsilon)            # one asked person changes c by 1
    shift = math.ceil(laplace.scale * math.log(1.0 / PADDING_DELTA))
    shift = max(0, min(shift, (rows - 1) // 2, MAX_PADDING // 2))
    return min(max(shift + draw(laplace), 0), 2 * shift), 2 * shift


# -- the round steps --------------------------------------------------------------------------


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


def canaries(rows: int) -> int:
    """K, the agency's canaries among `rows` rows."""
    return max(32, rows // 16)


def _pads(n: int) -> bytes:
    return b"".join(rbcl.crypto_core_ristretto255_random() for _ in range(n))


def all_distinct(packed: bytes) -> bool:
    """Whether no 32-byte element of `packed` occurs twice."""
    arr = np.frombuffer(packed, dtype="S32")
    return len(np.unique(arr)) == len(arr)


def _peer_multiply(scalar: bytes, packed: bytes, mapper) -> bytes:
    """scalar * every element of a peer's list, each checked valid (InvalidMessage if not)."""
    parts = _chunks(packed)
    try:
        return b"".join(mapper(multiply_batch, [scalar] * len(parts), parts, [True] * len(parts)))
    except (InvalidMessage, RuntimeError):
        raise InvalidMessage() from None


def _chunks(packed: bytes, size: int = 4096) -> list[bytes]:
    step = 32 * size
    return [packed[i:i + step] for i in range(0, len(packed), step)] or [b""]


class FundCentreCount:
    """The fund centre's side: one instance per query, never reused.

    `dummies` (d') and `padding` (D') come from the node's DP mechanism: d' a discrete
    Laplace sample shifted and clamped into [0, D'].
    """

    def __init__(self, identifiers: Sequence[bytes], dummies: int = 0, padding: int = 0, *,
                 rng: random.Random | None = None) -> None:
        if not identifiers:
            raise ValueError("nothing to count")
        if len(set(identifiers)) != len(identifiers):
            raise ValueError("identifiers must be distinct")
        if not 0 <= dummies <= padding:
            raise ValueError("dummies must lie in [0, padding]")
        self._a = group.random_scalar()
        self._t = [group.random_scalar() for _ in range(dummies)]
        self.size, self.dummies, self.padding = len(identifiers), dummies, padding
        self._rng = rng
        self._hashed = hash_batch(identifiers)

    def request(self, mapper=map) -> tuple[bytes, bytes]:
        """Round 1: (P = a*G, A) with |A| = m + D'; `mapper` may spread chunks over processes."""
        parts = _chunks(self._hashed)
        blinded = b"".join(mapper(multiply_batch, [self._a] * len(parts), parts))
        dummies = b"".join(group.base_mul(t) for t in self._t)
        pads = _pads(self.padding - len(self._t))
        return group.base_mul(self._a), shuffle(blinded + dummies + pads, self._rng)

    def reply(self, q: bytes, packed_y: bytes, mapper=map) -> bytes:
        """Round 3: Y'' from the agency's Q and Y' (every element checked, Y' distinct)."""
        if not group.is_valid_element(q) or not packed_y or len(packed_y) % 32 or not all_distinct(packed_y):
            raise InvalidMessage()
        rows = _peer_multiply(self._a, packed_y, mapper)
        dummies = b"".join(group.element_mul(t, q) for t in self._t)
        return shuffle(rows + dummies + _pads(self.padding - len(self._t)), self._rng)

    def count(self, release: int) -> int:
        """c + L: the agency's release less the fund centre's own dummy matches."""
        return release - self.dummies


class AgencyCount:
    """The agency's side: fresh b and canary keys per query; one instance per query."""

    def __init__(self, rows: int, size: int, padding: int, *,
                 rng: random.Random | None = None) -> None:
        if rows < 1 or size < 1 or not 0 <= padding < rows:
            raise ValueError("a count needs rows, elements, and a padding below the row count")
        self.rows, self.size, self.padding = rows, size, padding
        self._b = group.random_scalar()
        self._s = [group.random_scalar() for _ in range(canaries(rows))]
        self._p = self._a = b""
        self._rng = rng

    @property
    def reply_size(self) -> int:
        """|Y''| the fund centre must send: N + K + D'."""
        return self.rows + len(self._s) + self.padding

    def accept(self, p: bytes, packed_a: bytes) -> None:
        """Round 1 checked: P valid, |A| = m + D', every element valid and distinct."""
        if (not group.is_valid_element(p) or len(packed_a) != 32 * (self.size + self.padding)
                or not all_distinct(packed_a)
                or not all(map(group.is_valid_element, group.split_elements(packed_a)))):
            raise InvalidMessage()
        self._p, self._a = p, packed_a

    def rows_message(self, hashed_rows: bytes, mapper=map) -> tuple[bytes, bytes]:
        """Round 2: (Q = b*G, Y'); `hashed_rows` = hash_batch of the dataset version."""
        if not self._p or len(hashed_rows) != 32 * self.rows:
            raise ValueError("accept the request first, with every row hashed")
        parts = _chunks(hashed_rows)
        rows = b"".join(mapper(multiply_batch, [self._b] * len(parts), parts))
        marks = b"".join(group.base_mul(s) for s in self._s)
        return group.base_mul(self._b), shuffle(rows + marks, self._rng)

    def matches(self, packed_y2: bytes, mapper=map) -> int:
        """Round 4's f = |b*A ∩ Y''| (= c + d' for an honest fund centre), after checking
        Y'' (size, validity, distinctness) and that every canary came back as s_c*P."""
        if len(packed_y2) != 32 * self.reply_size or not all_distinct(packed_y2):
            raise InvalidMessage()
        if not all(map(group.is_valid_element, group.split_elements(packed_y2))):
            raise InvalidMessage()
        y2 = np.frombuffer(packed_y2, dtype="S32")
        marks = np.array([group.element_mul(s, self._p) for s in self._s], dtype="S32")
        present = np.isin(marks, y2)
        if not present.all():
            raise InvalidMessage()
        ba = np.frombuffer(_peer_multiply(self._b, self._a, mapper), dtype="S32")
        return int(np.isin(ba, y2[~np.isin(y2, marks)]).sum())

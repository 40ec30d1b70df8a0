"""Parameters of the bulk PSI, derived from the set sizes rather than looked up.

Three numbers matter, each bounded by the statistical security parameter
``SIGMA = 40`` (a failure or a leak with probability at most 2^-40 per run):

* **Cuckoo table size.** The fund centre places each of its ``n`` elements in one of
  three bins (three hash functions, no stash). An insertion that fails is redone
  under a fresh hashing key ("rehash"); the agency sees only the key that worked, so
  the key is within statistical distance Pr[failure] of uniform and must not fail
  more often than 2^-SIGMA. Pinkas, Schneider, Tkachenko, Yanai (PSTY19, "Efficient
  circuit-based PSI with linear communication", EUROCRYPT 2019, §5.2) fitted
  ``lambda = a(n) * e + b(n)`` to measured failure rates of stash-less tables with
  ``e * n`` bins: ``a -> 123.5`` and ``b -> -130 - log2 n`` for large n, with
  normal-CDF corrections for small n (the same fit libOTe's cuckoo index uses). We
  solve for ``e`` at ``lambda = SIGMA``: about 1.51 at 100k elements, 1.54 at 1M.
  The bin count is rounded up to a multiple of 128 (the OT-extension chunks are
  128-row aligned); more bins only lower the failure rate.
* **Code width and distance.** KKRT's pseudorandom code maps an element to
  ``WIDTH = 512`` bits (four AES blocks). The receiver's view of a value for an
  element it does not hold is masked by ``(C(x) xor C(y)) AND s`` for the agency's
  secret ``s``; its security is the minimum Hamming distance ``d`` between
  codewords of distinct elements that ever meet (KKRT16 §4.2). Codewords are
  pseudorandom, so a pair is closer than ``d`` with probability
  ``P[Binomial(512, 1/2) < d]``; with a union bound over all pairs among the
  ``n1 + n2`` elements we take the largest ``d`` that keeps the total at 2^-SIGMA
  and require ``d >= KAPPA = 128`` (computational security). 512 bits give
  d = 142 at 1M x 1M and still 131 at 2^28 x 2^28, the largest sizes accepted.
* **Output length.** Each of the fund centre's elements is compared with ``n2``
  agency values (those made with the same hash function), so ``n1 * n2``
  comparisons of ``ell``-bit pseudorandom values make a false match with
  probability ``n1 * n2 * 2^-ell``; ``ell = SIGMA + ceil(log2(n1 * n2))`` bits,
  sent as whole bytes (10 bytes at 1M x 1M).

The number of OPRF evaluations the fund centre obtains is the number of bins: that
is what a quota charges, independent of how many of them hold real elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "SIGMA", "KAPPA", "WIDTH", "WIDTH_BYTES", "HASHES", "ROW_ALIGN", "MAX_ELEMENTS",
    "BulkParameters", "cuckoo_expansion", "bin_count", "code_distance", "output_bytes",
    "derive",
]

SIGMA = 40          #: statistical security parameter (bits)
KAPPA = 128         #: computational security parameter (bits)
WIDTH = 512         #: pseudorandom code width in bits: four AES blocks
WIDTH_BYTES = WIDTH // 8
HASHES = 3          #: cuckoo hash functions
ROW_ALIGN = 128     #: OT rows come in multiples of this (AES-CTR and transpose blocks)
MAX_ELEMENTS = 1 << 28  #: per side; beyond this 512-bit codewords fall under KAPPA


def cuckoo_expansion(n: int, sigma: int = SIGMA) -> float:
    """Bins per element for a stash-less 3-hash cuckoo table failing w.p. <= 2^-sigma.

    PSTY19's fit (see the module docstring); the erf terms only matter below ~2^12.
    """
    if n < 1:
        raise ValueError("a cuckoo table needs at least one element")
    nn = math.log2(n)
    a = 123.5 / 2 * (1 + math.erf((nn - 6.3) / (2.3 * math.sqrt(2))))
    b = -130 / 2 * (1 + math.erf((nn - 6.45) / (2.18 * math.sqrt(2)))) - nn
    return (sigma - b) / a


def bin_count(n: int, sigma: int = SIGMA) -> int:
    """Cuckoo bins (= OT-extension rows = OPRF evaluations) for ``n`` elements."""
    raw = math.ceil(cuckoo_expansion(n, sigma) * n)
    return -(-raw // ROW_ALIGN) * ROW_ALIGN


@lru_cache(maxsize=1)
def _log2_lower_tails(width: int) -> tuple[float, ...]:
    """log2 P[Binomial(width, 1/2) < d] for d = 0..width (exact integer sums)."""
    out, acc = [], 0
    for d in range(width + 1):
        out.append(math.log2(acc) - width if acc else -math.inf)
        acc += math.comb(width, d)
    return tuple(out)


def code_distance(n1: int, n2: int, width: int = WIDTH, sigma: int = SIGMA) -> int:
    """Largest d such that all pairs of the n1 + n2 codewords are >= d apart w.p. 1 - 2^-sigma."""
    log_pairs = math.log2(max(1, (n1 + n2) * (n1 + n2 - 1) // 2))
    tails = _log2_lower_tails(width)
    return max(d for d in range(width + 1) if tails[d] + log_pairs <= -sigma)


def output_bytes(n1: int, n2: int, sigma: int = SIGMA) -> int:
    """Bytes of each OPRF value sent: ceil((sigma + log2(n1 * n2)) / 8)."""
    bits = sigma + math.ceil(math.log2(n1 * n2)) if n1 * n2 > 1 else sigma
    return -(-bits // 8)


@dataclass(frozen=True)
class BulkParameters:
    """Everything both sides must agree on for given set sizes."""

    receiver_size: int   #: n1, the fund centre's elements (the agency learns it)
    sender_size: int     #: n2, the agency's elements (the fund centre learns it)
    bins: int            #: cuckoo bins = OT rows = OPRF evaluations charged
    value_bytes: int     #: bytes per OPRF value on the wire
    distance: int        #: guaranteed codeword distance (>= KAPPA)


def derive(n1: int, n2: int) -> BulkParameters:
    """Parameters for ``n1`` receiver and ``n2`` sender elements.

    Raises:
        ValueError: a side is empty or larger than :data:`MAX_ELEMENTS`.
    """
    for n in (n1, n2):
        if not 1 <= n <= MAX_ELEMENTS:
            raise ValueError(f"set sizes must lie in 1..{MAX_ELEMENTS}")
    distance = code_distance(n1, n2)
    if distance < KAPPA:  # unreachable within MAX_ELEMENTS; kept as the invariant's guard
        raise ValueError("sets too large for 512-bit codewords")
    return BulkParameters(n1, n2, bin_count(n1), output_bytes(n1, n2), distance)

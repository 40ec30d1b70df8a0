"""Cuckoo hashing of the fund centre's elements, vectorised: whole rounds of evictions.

Each element has three candidate bins, read from its 128-bit digest (words 0, 1, 2
of the little-endian uint32 view, mapped to ``[0, bins)`` by multiply-shift — the
digests are PRF outputs, so the three choices are independent and uniform). Both
parties compute the same candidates: the agency needs all three for each of its
elements, the fund centre places each of its elements in exactly one.

Insertion is the parallel form of cuckoo hashing (as GPU tables do it; Alcantara
et al., "Real-time parallel hashing on the GPU", SIGGRAPH Asia 2009): every
unplaced element writes itself into its current candidate bin at once; one writer
per bin wins; losers, and the occupants the winners displaced, move on to their
next hash function and try again next round. A round is a few numpy operations
over the still-unplaced elements, whose number shrinks geometrically, so the whole
insertion costs a small multiple of one pass. If elements remain after
``max_rounds`` the insertion fails and the caller rehashes under a fresh key
(:mod:`protocols.bulk.params` sizes the table so that happens w.p. <= 2^-40).
"""

from __future__ import annotations

import numpy as np

from .params import HASHES

__all__ = ["candidate_bins", "CuckooTable", "insert"]


def candidate_bins(digests: np.ndarray, bins: int) -> np.ndarray:
    """``(N, 16)`` uint8 digests -> ``(N, 3)`` int32 candidate bins in ``[0, bins)``."""
    if bins >= 1 << 31:
        raise ValueError("too many bins for 32-bit bin indices")
    words = np.ascontiguousarray(digests).view("<u4")[:, :HASHES].astype(np.uint64)
    return ((words * np.uint64(bins)) >> np.uint64(32)).astype(np.int32)


class CuckooTable:
    """A successful placement.

    Attributes:
        owner: ``(bins,)`` int32, the element in each bin or -1 for an empty bin.
        function: ``(N,)`` int8, the hash function that placed each element.
    """

    __slots__ = ("owner", "function")

    def __init__(self, owner: np.ndarray, function: np.ndarray) -> None:
        self.owner, self.function = owner, function


def insert(candidates: np.ndarray, bins: int, max_rounds: int | None = None) -> CuckooTable | None:
    """Place every element in one of its candidate bins, or return None.

    Args:
        candidates: ``(N, 3)`` from :func:`candidate_bins`; elements must be distinct.
        bins: table size.
        max_rounds: give up after this many rounds (default grows with log N).
    """
    n = candidates.shape[0]
    if max_rounds is None:
        max_rounds = 200 + 20 * max(1, n).bit_length()
    # 32-bit indices: half the memory traffic of the random scatters and gathers.
    owner = np.full(bins, -1, np.int32)
    function = np.zeros(n, np.int8)
    pending = np.arange(n, dtype=np.int32)
    for _ in range(max_rounds):
        if pending.size == 0:
            return CuckooTable(owner, function)
        target = candidates[pending, function[pending]]
        previous = owner[target]
        owner[target] = pending
        # Whatever numpy does with repeated indices, exactly one writer per bin remains.
        won = owner[target] == pending
        displaced = previous[won]
        pending = np.concatenate([pending[~won], displaced[displaced >= 0]])
        function[pending] = (function[pending] + 1) % HASHES
    return CuckooTable(owner, function) if pending.size == 0 else None

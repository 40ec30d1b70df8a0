"""Bit-matrix transpose for OT extension, in numpy, one horizontal slice at a time.

IKNP-style extension builds an ``m x w`` bit matrix column by column (one PRG
stream per base OT) and uses it row by row (one row per OT). :func:`columns_to_rows`
turns a slice of ``w`` columns of ``r`` bits each (``(w, r/8)`` bytes, bit ``k`` of a
column at byte ``k // 8``, bit ``k % 8``) into its ``r`` rows of ``w`` bits (same
little-endian bit order).

Method: each group of 64 columns, read as uint64 words, is already laid out
"structure of arrays" — word ``(k, R)`` holds bits ``64R..64R+63`` of column ``k``
— so the classic recursive 64x64 transpose (swap the off-diagonal half-blocks of
width 32, 16, .., 1 with shifts and masks) runs on whole contiguous slabs of
words: six steps of five vectorised operations, no per-element work. One final
uint64-granular reorder puts the words in row order. About 9 ms per 4 MB slice here,
versus ~120 ms for ``unpackbits``/``packbits`` (kept in the tests as the reference).
"""

from __future__ import annotations

import numpy as np

__all__ = ["columns_to_rows", "take_rows", "put_rows"]

_STEPS = (32, 16, 8, 4, 2, 1)


def _mask(step: int) -> np.uint64:
    # Bits whose index has the `step` bit clear: the half-block that stays put.
    return np.uint64(sum(1 << b for b in range(64) if not b & step))


_MASKS = {s: _mask(s) for s in _STEPS}


def columns_to_rows(columns: np.ndarray) -> np.ndarray:
    """Transpose ``(w, r/8)`` uint8 column bits into ``(r, w/8)`` uint8 row bits.

    Args:
        columns: C-contiguous; ``w`` a multiple of 64 and ``r`` a multiple of 64.

    Returns:
        A new C-contiguous array; ``columns`` is left untouched.
    """
    w, nbytes = columns.shape
    if w % 64 or nbytes % 8:
        raise ValueError("transpose needs multiples of 64 columns and 64 rows")
    groups, words = w // 64, nbytes // 8
    x = np.array(columns, dtype=np.uint8, order="C").view(np.uint64).reshape(groups, 64, words)
    t = np.empty((groups, 32, words), np.uint64)
    for step in _STEPS:
        v = x.reshape(groups, 64 // (2 * step), 2, step, words)
        lo, hi = v[:, :, 0], v[:, :, 1]
        tv = t.reshape(groups, 64 // (2 * step), step, words)
        shift = np.uint64(step)
        # Swap bit b+step of word k with bit b of word k+step (b without the step bit).
        np.right_shift(lo, shift, out=tv)
        tv ^= hi
        tv &= _MASKS[step]
        hi ^= tv
        np.left_shift(tv, shift, out=tv)
        lo ^= tv
    # x[G, j, R] is row 64R+j, columns 64G..64G+63: reorder to [R, j, G].
    rows = np.ascontiguousarray(x.transpose(2, 1, 0))
    return rows.view(np.uint8).reshape(words * 64, w // 8)


def take_rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]`` for a C-contiguous 2-D uint8 array, gathering whole rows at once.

    A row is moved as one opaque item (``V<k>``) instead of k one-byte elements:
    about 3x faster for the 64-byte OT rows.
    """
    a = np.ascontiguousarray(a)
    rows = np.take(a.view(f"V{a.shape[1]}").reshape(a.shape[0]), idx)
    return rows.view(np.uint8).reshape(idx.shape[0], a.shape[1])


def put_rows(a: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> None:
    """``a[idx] = rows`` for C-contiguous 2-D uint8 arrays, row-wise (see :func:`take_rows`)."""
    kind = f"V{a.shape[1]}"
    a.view(kind).reshape(a.shape[0])[idx] = np.ascontiguousarray(rows).view(kind).reshape(rows.shape[0])

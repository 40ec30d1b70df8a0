"""KKRT16 batched OPRF: IKNP-style OT extension with a 512-bit pseudorandom code.

Kolesnikov, Kumaresan, Rosulek, Trieu, "Efficient Batched Oblivious PRF with
Applications to Private Set Intersection", CCS 2016, §3–4 (semi-honest).

After ``w = 512`` base OTs the extension receiver (the fund centre) holds seed pairs
``(k_i^0, k_i^1)`` and the extension sender (the agency) holds ``k_i^{s_i}`` for its
secret ``s`` in {0,1}^w. With ``G`` the AES-CTR column PRG and ``C`` the code, for
each OT row ``j`` (one cuckoo bin) holding the receiver's element ``r_j``::

    receiver:  t_j = row j of [G(k_1^0) .. G(k_w^0)]
               u_j = t_j ^ row j of [G(k_1^1) .. G(k_w^1)] ^ C(r_j)   --> sender
    sender:    q_j = row j of [G(k_1^{s_1}) .. G(k_w^{s_w})] ^ (u_j & s)
                   = t_j ^ (C(r_j) & s)

so ``F(j, y) = H(q_j ^ (C(y) & s))`` is a PRF the sender can evaluate on any ``y``
and the receiver learns exactly at its own point, ``F(j, r_j) = H(t_j)``. For
``y != r_j`` the receiver would have to guess the ``>= d`` bits of ``s`` under
``C(y) ^ C(r_j)`` (see :mod:`protocols.bulk.params`). The corrections ``u_j`` are
masked by ``G(k_i^{1-s_i})``, pseudorandom to the sender, so it learns nothing
about the ``r_j``. Rows are produced and absorbed in slices (``ROW_ALIGN``
multiples), so ``u`` travels in chunks and neither side holds the column matrix.

The cuckoo function index ``i`` of an element enters ``H`` as a tweak, so the
three values the agency sends per element are independent even when two of its
hash functions pick the same bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .bitmatrix import columns_to_rows, take_rows
from .blockcipher import Aes, ColumnStreams, code_words, cr_hash, tweak_tile
from .params import HASHES, ROW_ALIGN, WIDTH, WIDTH_BYTES

__all__ = ["ExtensionReceiver", "ExtensionSender", "choice_bits", "pack_choices"]

def pack_choices(bits: Sequence[int]) -> np.ndarray:
    """The sender's ``s`` as a 64-byte row mask (bit i at byte i//8, bit i%8)."""
    return np.packbits(np.asarray(bits, np.uint8), bitorder="little")


def choice_bits(random_bytes: bytes) -> list[int]:
    """``WIDTH`` choice bits from ``WIDTH / 8`` random bytes."""
    if len(random_bytes) != WIDTH_BYTES:
        raise ValueError("need 64 random bytes for the choice bits")
    return np.unpackbits(np.frombuffer(random_bytes, np.uint8), bitorder="little").tolist()


def _check_slice(rows: int, done: int, total: int) -> None:
    if rows <= 0 or rows % ROW_ALIGN or done + rows > total:
        raise ValueError("OT slice out of range or not 128-row aligned")


class ExtensionReceiver:
    """The fund centre's side: corrections ``u`` and its own rows ``t``, slice by slice."""

    __slots__ = ("_g0", "_g1", "_done", "_total")

    def __init__(self, seeds0: Sequence[bytes], seeds1: Sequence[bytes], total_rows: int) -> None:
        if len(seeds0) != WIDTH or len(seeds1) != WIDTH or total_rows % ROW_ALIGN:
            raise ValueError("need 512 seed pairs and a 128-aligned row count")
        self._g0, self._g1 = ColumnStreams(seeds0), ColumnStreams(seeds1)
        self._done, self._total = 0, total_rows

    def __repr__(self) -> str:
        return "<ExtensionReceiver seeds hidden>"

    def next_rows(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``(u, t)``, each ``(c, 64)`` uint8, for the next ``c = len(codes)`` bins.

        Args:
            codes: ``C(r_j)`` per bin of the slice (zeros for empty bins).
        """
        rows = codes.shape[0]
        _check_slice(rows, self._done, self._total)
        g0 = self._g0.next(rows // 8)
        g1 = self._g1.next(rows // 8)
        t = columns_to_rows(g0)
        g1 ^= g0
        u = columns_to_rows(g1)
        u ^= codes
        self._done += rows
        return u, t

    @staticmethod
    def outputs(pi: Aes, t_rows: np.ndarray, functions: np.ndarray, out_bytes: int) -> np.ndarray:
        """``F(j, r_j) = H(t_j)`` with each row's own function tweak -> ``(c, out_bytes)``."""
        return cr_hash(pi, t_rows, tweak_tile(functions, t_rows.shape[0]), out_bytes)


class ExtensionSender:
    """The agency's side: absorbs corrections into ``q``, then evaluates ``F(j, y)``."""

    __slots__ = ("_g", "_s", "_s_rows", "_q", "_done", "_tiles")

    def __init__(self, seeds: Sequence[bytes], choices: Sequence[int], total_rows: int) -> None:
        if len(seeds) != WIDTH or len(choices) != WIDTH or total_rows % ROW_ALIGN:
            raise ValueError("need 512 seeds and choice bits and a 128-aligned row count")
        self._g = ColumnStreams(seeds)
        self._s = pack_choices(choices).view(np.uint64)
        self._s_rows = np.zeros((0, WIDTH // 64), np.uint64)
        self._q = np.empty((total_rows, WIDTH_BYTES), np.uint8)
        self._done = 0
        self._tiles: dict[tuple[int, int], np.ndarray] = {}

    def __repr__(self) -> str:
        return "<ExtensionSender seeds hidden>"

    @property
    def complete(self) -> bool:
        return self._done == self._q.shape[0]

    def _mask(self, rows: int) -> np.ndarray:
        # s repeated on every row: one contiguous AND instead of a 64-byte broadcast.
        if self._s_rows.shape[0] < rows:
            self._s_rows = np.tile(self._s, (rows, 1))
        return self._s_rows[:rows]

    def absorb(self, u_rows: np.ndarray) -> None:
        """Turn the next slice of corrections into rows ``q_j = G_s,j ^ (u_j & s)``."""
        rows = u_rows.shape[0]
        _check_slice(rows, self._done, self._q.shape[0])
        q = self._q[self._done:self._done + rows].view(np.uint64)
        np.bitwise_and(np.ascontiguousarray(u_rows).view(np.uint64), self._mask(rows), out=q)
        q ^= columns_to_rows(self._g.next(rows // 8)).view(np.uint64)
        self._done += rows

    def evaluate(self, pi: Aes, code: Aes, digests: np.ndarray, bins: np.ndarray,
                 out_bytes: int) -> np.ndarray:
        """``F(h_i(y), y)`` for every element and function: ``(N, 3, out_bytes)`` uint8.

        Args:
            digests: ``(N, 16)`` element digests.
            bins: ``(N, 3)`` their candidate bins.
        """
        if not self.complete:
            raise ValueError("corrections are incomplete")
        n = digests.shape[0]
        masked = code_words(code, digests).view(np.uint64)
        masked &= self._mask(n)
        out = np.empty((n, HASHES, out_bytes), np.uint8)
        for i in range(HASHES):
            z = take_rows(self._q, bins[:, i])
            zw = z.view(np.uint64)
            zw ^= masked
            tile = self._tiles.get((i, n))
            if tile is None:  # one per function and chunk size, reused chunk after chunk
                tile = self._tiles[(i, n)] = tweak_tile(i, n)
            out[:, i] = cr_hash(pi, z, tile, out_bytes)
        return out

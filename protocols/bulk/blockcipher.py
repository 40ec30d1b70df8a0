"""AES-128 over numpy buffers: every bulk symmetric operation of the bulk PSI.

Each function makes one ``cryptography`` (OpenSSL, AES-NI) call per large buffer
with ``update_into``, never one per element (about 9 GB/s on this machine; plain
``update`` with bytes copies and is 20x slower). Four uses:

* **Column PRG** (:class:`ColumnStreams`): AES-128-CTR keystream, zero nonce, under
  each base-OT seed; the IKNP/KKRT matrix columns are these streams.
* **Element digests** (:func:`element_digests`): CBC-MAC with the byte length in the
  first block (length-prepended CBC-MAC is a PRF on variable-length messages,
  Bellare–Kilian–Rogaway, JCSS 2000, §5) under the fund centre's fresh per-session
  key. The 128-bit digest feeds the cuckoo hash functions and the code; distinct
  elements collide with probability ~(n1 + n2)^2 / 2^129.
* **Pseudorandom code** (:func:`code_words`): ``C(d) = AES_k(d ^ 0) || .. ||
  AES_k(d ^ 3)`` (512 bits), a PRF under the agency's fresh key, which is KKRT16's
  instantiation of the pseudorandom code (§4.1; yacl does the same with four keys).
* **Correlation-robust hash** (:func:`cr_hash`): KKRT's ``H`` over a 512-bit row. A
  Merkle–Damgård chain of Guo–Katz–Wang–Yu's tweakable correlation-robust function
  ``TCCR(x, t) = pi(pi(x) ^ t) ^ pi(x)`` (GKWY20, S&P 2020, §7.3) with ``pi`` =
  AES-128 under a per-session public key: ``h_0 = 0``, ``h_{b+1} = TCCR(z_b ^ h_b,
  t(i, b))`` for the four 128-bit blocks ``z_b``, output ``h_4`` truncated. The
  tweak binds the cuckoo function index ``i`` and the block. In the random
  permutation model a prediction of ``h_4`` needs a query at every chained input,
  i.e. all of the ``>= d >= 128`` masked bits of ``s`` at once; the chaining
  stops the blocks being attacked one at a time (which a plain XOR of per-block
  hashes would allow). Reference implementations use BLAKE2/BLAKE3 here; Python has
  no batched call for those, so per-row hashing would be a per-element loop.

Bytes are little-endian everywhere; arrays are C-contiguous uint8 or uint64 views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["Aes", "scratch", "ColumnStreams", "element_digests", "code_words", "cr_hash", "tweaks",
           "tweak_tile"]

_BLOCK = 16
_DIGEST_TAG = b"SQBULK1\x00"  # second half of the length block: domain separation


class Aes:
    """AES-128 in ECB over whole arrays under one key (a PRF, or the public ``pi``)."""

    __slots__ = ("_enc",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes")
        self._enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "<Aes key hidden>"

    def __call__(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Encrypt every 16-byte block of ``data``; same shape and dtype.

        Args:
            out: optional scratch from :func:`scratch` of at least ``data.nbytes``
                (reusing it spares the page faults of a fresh buffer per call).
        """
        src = np.ascontiguousarray(data)
        if src.nbytes % _BLOCK:
            raise ValueError("AES input must be whole 16-byte blocks")
        if out is None:
            out = scratch(src.nbytes)
        self._enc.update_into(src.reshape(-1).view(np.uint8), out[: src.nbytes + _BLOCK - 1])
        return out[: src.nbytes].view(src.dtype).reshape(src.shape)


def scratch(nbytes: int) -> np.ndarray:
    """A uint8 output buffer for ``nbytes`` of AES output (OpenSSL wants 15 bytes of slack)."""
    return np.empty(nbytes + _BLOCK - 1, np.uint8)


class ColumnStreams:
    """One AES-128-CTR keystream per seed, read in lock-step, slice by slice.

    ``next(nbytes)`` returns a ``(len(seeds), nbytes)`` uint8 array whose row ``i`` is
    the next ``nbytes`` of stream ``i``: a horizontal slice of the OT-extension
    matrix in column form. Streams are generated ``prefetch`` bytes at a time, since
    each OpenSSL call costs ~5 us however short; memory is one prefetch block.
    """

    __slots__ = ("_encs", "_zeros", "_buf", "_pos", "_prefetch")

    def __init__(self, seeds: Sequence[bytes], prefetch: int = 1 << 14) -> None:
        self._encs = [Cipher(algorithms.AES(s), modes.CTR(bytes(_BLOCK))).encryptor()
                      for s in seeds]
        self._prefetch = prefetch
        self._zeros = np.zeros(prefetch, np.uint8)
        self._buf = np.zeros((len(self._encs), 0), np.uint8)
        self._pos = 0

    def __repr__(self) -> str:
        return f"<ColumnStreams {len(self._encs)} keys hidden>"

    def _refill(self, nbytes: int) -> None:
        size = max(nbytes, self._prefetch)
        zeros = self._zeros if size == self._prefetch else np.zeros(size, np.uint8)
        flat = np.empty(len(self._encs) * size + _BLOCK - 1, np.uint8)
        # Stream i writes exactly `size` bytes at offset i*size; the slack OpenSSL asks
        # for overlaps the next row, which is written afterwards.
        for i, enc in enumerate(self._encs):
            enc.update_into(zeros, flat[i * size:(i + 1) * size + _BLOCK - 1])
        rest = self._buf[:, self._pos:]
        self._buf = np.concatenate([rest, flat[: len(self._encs) * size].reshape(-1, size)], axis=1) \
            if rest.shape[1] else flat[: len(self._encs) * size].reshape(-1, size)
        self._pos = 0

    def next(self, nbytes: int) -> np.ndarray:
        if self._buf.shape[1] - self._pos < nbytes:
            self._refill(nbytes)
        out = self._buf[:, self._pos:self._pos + nbytes]
        self._pos += nbytes
        return out


def element_digests(key: bytes, elements: np.ndarray, slice_rows: int = 1 << 16) -> np.ndarray:
    """128-bit digests ``(N, 16)`` uint8 of a fixed-width bytes array (dtype ``S<k>``).

    The message is ``[len || tag] || data padded with zeros to whole blocks``;
    elements are grouped by block count so each group is one CBC pass per block, and
    taken ``slice_rows`` at a time so the scratch stays in cache. Trailing NUL bytes
    are not part of an element (numpy's ``S`` semantics).
    """
    n, width = elements.shape[0], elements.dtype.itemsize
    lengths = np.char.str_len(elements)
    blocks = np.maximum(1, (lengths + _BLOCK - 1) // _BLOCK)
    raw = np.ascontiguousarray(elements).view(np.uint8).reshape(n, width)
    aes = Aes(key)
    out = np.empty((n, 2), np.uint64)
    low, high = int(blocks.min()), int(blocks.max())
    for count in range(low, high + 1):
        group = None if low == high else np.flatnonzero(blocks == count)
        size = n if group is None else group.size
        for lo in range(0, size, slice_rows):
            idx = slice(lo, lo + slice_rows) if group is None else group[lo:lo + slice_rows]
            out[idx] = _cbc_mac(aes, raw[idx], lengths[idx], count)
    return out.view(np.uint8)


def _cbc_mac(aes: Aes, rows: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """CBC-MAC of ``[len || tag] || rows`` padded to ``count`` data blocks -> ``(n, 2)``."""
    n, take = rows.shape[0], min(rows.shape[1], count * _BLOCK)
    msg = np.zeros((n, count + 1, 2), "<u8")
    msg[:, 0, 0] = lengths
    msg[:, 0, 1] = int.from_bytes(_DIGEST_TAG, "little")
    msg.view(np.uint8).reshape(n, -1)[:, _BLOCK:_BLOCK + take] = rows[:, :take]
    bufs = scratch(n * _BLOCK), scratch(n * _BLOCK)
    h = aes(msg[:, 0], bufs[0])
    for b in range(1, count + 1):
        h ^= msg[:, b]
        h = aes(h, bufs[b % 2])  # never in place: input and output buffers alternate
    return h


# Byte-defined constants viewed as native words, so XORs mean the same on any platform.
_CODE_TWEAK = np.frombuffer(b"".join(bytes(15) + bytes([b]) for b in range(4)),
                            np.uint64).reshape(4, 2)


def code_words(aes: Aes, digests: np.ndarray) -> np.ndarray:
    """KKRT pseudorandom code: ``(N, 16)`` digests -> ``(N, 64)`` uint8 codewords."""
    n = digests.shape[0]
    x = np.repeat(np.ascontiguousarray(digests).view("V16").reshape(n), 4)
    x = x.view(np.uint64).reshape(n, 4, 2)
    x ^= _CODE_TWEAK  # block b: last byte xor b
    return aes(x).view(np.uint8).reshape(n, 4 * _BLOCK)


def tweaks(function: int) -> np.ndarray:
    """The four TCCR tweaks ``(4, 2)`` uint64 for cuckoo hash function ``function``."""
    raw = b"".join((0x5351_4255_4C4B_0000 | function << 8 | block).to_bytes(8, "little") + bytes(8)
                   for block in range(1, 5))
    return np.frombuffer(raw, np.uint64).reshape(4, 2)


_TWEAKS = np.stack([tweaks(i) for i in range(3)])  # (function, block, 2)


def tweak_tile(functions: int | np.ndarray, n: int) -> np.ndarray:
    """Block-major tweaks ``(4, n, 2)`` for ``n`` rows of one function, or per row.

    Laid out whole so every XOR in :func:`cr_hash` runs over contiguous arrays of one
    shape (numpy is ~30x slower broadcasting a 2-word tweak over the rows).
    """
    if isinstance(functions, (int, np.integer)):
        return np.ascontiguousarray(np.broadcast_to(_TWEAKS[functions][:, None, :], (4, n, 2)))
    return np.ascontiguousarray(_TWEAKS[functions].transpose(1, 0, 2))


def cr_hash(pi: Aes, rows: np.ndarray, tile: np.ndarray, out_bytes: int) -> np.ndarray:
    """``H`` over 512-bit rows: ``(N, 64)`` uint8 -> ``(N, out_bytes)`` uint8.

    Args:
        pi: the public permutation (AES under the session's hash key).
        rows: the OT rows ``t_j`` or ``q_j ^ (C(y) & s)``.
        tile: ``(4, N, 2)`` tweaks from :func:`tweak_tile`.
        out_bytes: bytes kept (at most 16).
    """
    n = rows.shape[0]
    # Block-major copy: block b of every row is one contiguous (N, 2) array.
    z = np.ascontiguousarray(np.ascontiguousarray(rows).view(np.uint64).reshape(n, 4, 2)
                             .transpose(1, 0, 2))
    h = np.empty((n, 2), np.uint64)
    buf_p, buf_h = scratch(16 * n), scratch(16 * n)
    for b in range(4):
        x = z[b]
        if b:
            x ^= h
        p = pi(x, buf_p)
        np.bitwise_xor(p, tile[b], out=x)
        np.bitwise_xor(pi(x, buf_h), p, out=h)
    return np.ascontiguousarray(h.view(np.uint8)[:, :out_bytes])

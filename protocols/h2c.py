"""Hashing to ristretto255 and to its scalars (RFC 9380, as RFC 9497 uses them).

RFC 9497 builds every random-oracle step of the ristretto255-SHA512 suite from one
primitive, ``expand_message_xmd`` with SHA-512 (RFC 9380 §5.3.1):

* ``HashToGroup``: 64 uniform bytes mapped to an element with the ristretto255 one-way
  map (RFC 9496 §4.3.4), which libsodium exposes as ``crypto_core_ristretto255_from_hash``;
* ``HashToScalar``: 64 uniform bytes read little-endian and reduced modulo the group
  order, libsodium's ``crypto_core_ristretto255_scalar_reduce``.

The expander is a small hash construction, so it lives here on top of hashlib; all curve
and scalar arithmetic stays in libsodium. The ``make_*`` factories precompute everything
that depends only on the domain-separation tag, because the server evaluates the PRF
over millions of rows and the per-row work should be the two SHA-512 calls alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import rbcl

__all__ = [
    "expand_message_xmd",
    "hash_to_group",
    "hash_to_scalar",
    "make_expand_64",
    "make_hash_to_group",
    "make_hash_to_scalar",
]

_B_IN_BYTES = 64  # SHA-512 output size
_R_IN_BYTES = 128  # SHA-512 block size: Z_pad fills one whole block
_Z_PAD = bytes(_R_IN_BYTES)
_UNIFORM_LEN = 64  # what both ristretto255 maps consume
_OVERSIZE_PREFIX = b"H2C-OVERSIZE-DST-"


def _dst_prime(dst: bytes) -> bytes:
    """DST || I2OSP(len(DST), 1), hashing tags over 255 bytes first (RFC 9380 §5.3.3)."""
    if len(dst) > 255:
        dst = hashlib.sha512(_OVERSIZE_PREFIX + dst).digest()
    return dst + bytes((len(dst),))


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 §5.3.1 expand_message_xmd instantiated with SHA-512.

    Args:
        msg: the message to expand (any length).
        dst: the domain-separation tag; tags longer than 255 bytes are hashed down.
        len_in_bytes: output length, 1..65535 and at most 255 SHA-512 blocks.

    Returns:
        ``len_in_bytes`` uniformly distributed bytes.

    Raises:
        ValueError: if the requested length is out of range.
    """
    ell = -(-len_in_bytes // _B_IN_BYTES)
    if len_in_bytes < 1 or ell > 255 or len_in_bytes > 0xFFFF:
        raise ValueError("expand_message_xmd: requested length out of range")
    dst_prime = _dst_prime(dst)
    b_0 = hashlib.sha512(
        _Z_PAD + msg + len_in_bytes.to_bytes(2, "big") + b"\x00" + dst_prime
    ).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    blocks = [b_i]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b_0, b_i))
        b_i = hashlib.sha512(mixed + bytes((i,)) + dst_prime).digest()
        blocks.append(b_i)
    return b"".join(blocks)[:len_in_bytes]


def make_expand_64(dst: bytes) -> Callable[[bytes], bytes]:
    """Return ``msg -> expand_message_xmd(msg, dst, 64)`` with the tag work done once.

    With 64 output bytes ``ell`` is 1, so the expander is exactly two SHA-512 calls.
    The all-zero first block is absorbed once into a template hash object that each
    call copies, which saves one compression per message.
    """
    dst_prime = _dst_prime(dst)
    tail_0 = _UNIFORM_LEN.to_bytes(2, "big") + b"\x00" + dst_prime
    tail_1 = b"\x01" + dst_prime
    template = hashlib.sha512(_Z_PAD)
    sha512 = hashlib.sha512

    def expand_64(msg: bytes) -> bytes:
        h = template.copy()
        h.update(msg)
        h.update(tail_0)
        return sha512(h.digest() + tail_1).digest()

    return expand_64


def make_hash_to_group(dst: bytes) -> Callable[[bytes], bytes]:
    """Return ``msg -> HashToGroup(msg)`` for ristretto255 under ``dst``.

    The result may be the identity encoding (32 zero bytes) only with negligible
    probability; callers that must reject it (RFC 9497 InvalidInputError) check.
    """
    expand_64 = make_expand_64(dst)
    from_hash = rbcl.crypto_core_ristretto255_from_hash

    def hash_to_group_dst(msg: bytes) -> bytes:
        return from_hash(expand_64(msg))

    return hash_to_group_dst


def make_hash_to_scalar(dst: bytes) -> Callable[[bytes], bytes]:
    """Return ``msg -> HashToScalar(msg)``: 64 expanded bytes reduced mod the order."""
    expand_64 = make_expand_64(dst)
    reduce = rbcl.crypto_core_ristretto255_scalar_reduce

    def hash_to_scalar_dst(msg: bytes) -> bytes:
        return reduce(expand_64(msg))

    return hash_to_scalar_dst


def hash_to_group(msg: bytes, dst: bytes) -> bytes:
    """HashToGroup for ristretto255 (RFC 9497 §4.1): one-way map of 64 expanded bytes."""
    return rbcl.crypto_core_ristretto255_from_hash(expand_message_xmd(msg, dst, _UNIFORM_LEN))


def hash_to_scalar(msg: bytes, dst: bytes) -> bytes:
    """HashToScalar for ristretto255 (RFC 9497 §4.1): 64 expanded bytes reduced mod L."""
    return rbcl.crypto_core_ristretto255_scalar_reduce(
        expand_message_xmd(msg, dst, _UNIFORM_LEN)
    )

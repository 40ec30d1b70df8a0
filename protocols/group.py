"""Typed helpers over libsodium's ristretto255 (via ``rbcl``), as RFC 9497 §4.1 needs them,
and hashing into the group and its scalars (RFC 9380).

Every point and scalar operation is libsodium's; this module only adds the checks that
the bundled libsodium (1.0.18) leaves to the caller and the packing of many elements
into one message:

* ``crypto_core_ristretto255_is_valid_point`` accepts the identity (32 zero bytes) and,
  in 1.0.18, encodings with the top bit set, which it silently decodes as if the bit
  were clear. RFC 9496 §4.3.1 requires rejecting those (the field element would be
  >= 2^255 > p), and RFC 9497 §2.1 requires rejecting the identity from a peer, so
  :func:`is_valid_element` checks both explicitly before asking libsodium.
* Scalars arrive from peers (proofs) and from storage (sealed keys), so
  :func:`is_canonical_scalar` enforces 0 <= s < L before libsodium sees them.

Packed arrays are plain concatenations of 32-byte encodings: one bytes object per batch
keeps wire messages and Python allocations small.

Hashing. RFC 9497 builds every random-oracle step of the ristretto255-SHA512 suite from one
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
import hmac
from collections.abc import Callable, Iterable, Sequence

import rbcl

__all__ = [
    "ELEMENT_LEN",
    "GENERATOR",
    "IDENTITY",
    "ORDER",
    "SCALAR_LEN",
    "add",
    "base_mul",
    "batch_invert",
    "element_mul",
    "expand_message_xmd",
    "hash_to_group",
    "hash_to_scalar",
    "is_canonical_scalar",
    "is_nonzero_scalar",
    "is_valid_element",
    "join_elements",
    "make_expand_64",
    "make_hash_to_group",
    "make_hash_to_scalar",
    "random_scalar",
    "scalar_invert",
    "scalar_mul",
    "scalar_sub",
    "split_elements",
    "weighted_sum",
]

ELEMENT_LEN = 32
SCALAR_LEN = 32
#: Order L of the ristretto255 group (RFC 9496 §4.1): only used for range checks.
ORDER = 2**252 + 27742317777372353535851937790883648493
#: Canonical encoding of the identity element; never valid from a peer.
IDENTITY = bytes(ELEMENT_LEN)
#: Canonical encoding of the standard generator B (RFC 9496 §4.4).
GENERATOR = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
_ZERO_SCALAR = bytes(SCALAR_LEN)

_is_valid_point = rbcl.crypto_core_ristretto255_is_valid_point

# Direct re-exports with names that say what they compute; all raise RuntimeError
# (libsodium's -1) when the product would be the identity or the point is invalid.
element_mul = rbcl.crypto_scalarmult_ristretto255  # (scalar, element) -> element
base_mul = rbcl.crypto_scalarmult_ristretto255_base  # (scalar) -> scalar * GENERATOR
add = rbcl.crypto_core_ristretto255_add  # (element, element) -> element
scalar_mul = rbcl.crypto_core_ristretto255_scalar_mul
scalar_sub = rbcl.crypto_core_ristretto255_scalar_sub
scalar_invert = rbcl.crypto_core_ristretto255_scalar_invert


def is_valid_element(encoding: bytes) -> bool:
    """True iff ``encoding`` is a canonical, non-identity ristretto255 element.

    Cheap checks first: exact type and length, top bit clear (libsodium 1.0.18 would
    otherwise accept a malleable second encoding), not the identity.
    """
    return (
        type(encoding) is bytes
        and len(encoding) == ELEMENT_LEN
        and encoding[31] < 0x80
        and encoding != IDENTITY
        and _is_valid_point(encoding)
    )


def is_canonical_scalar(encoding: bytes) -> bool:
    """True iff ``encoding`` is 32 little-endian bytes of an integer below L."""
    return (
        type(encoding) is bytes
        and len(encoding) == SCALAR_LEN
        and int.from_bytes(encoding, "little") < ORDER
    )


def is_nonzero_scalar(encoding: bytes) -> bool:
    """True iff ``encoding`` is canonical and not zero (compared in constant time)."""
    return is_canonical_scalar(encoding) and not hmac.compare_digest(encoding, _ZERO_SCALAR)


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar from libsodium's CSPRNG."""
    # libsodium rejection-samples until the value is canonical and non-zero.
    return rbcl.crypto_core_ristretto255_scalar_random()


def batch_invert(scalars: Sequence[bytes]) -> list[bytes]:
    """Invert many non-zero scalars with one libsodium inversion (Montgomery's trick).

    An inversion costs about as much as 50 scalar multiplications, so for a batch this
    replaces n inversions by 1 inversion and 3(n-1) multiplications.

    Raises:
        ValueError: if any scalar is zero (libsodium refuses to invert the product).
    """
    if not scalars:
        return []
    prefix = [scalars[0]]
    for s in scalars[1:]:
        prefix.append(scalar_mul(prefix[-1], s))
    acc = scalar_invert(prefix[-1])  # 1 / (s_0 * ... * s_{n-1})
    inverses = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        inverses[i] = scalar_mul(acc, prefix[i - 1])
        acc = scalar_mul(acc, scalars[i])
    inverses[0] = acc
    return inverses


def weighted_sum(weights: Sequence[bytes], elements: Sequence[bytes]) -> bytes:
    """Sum of ``w_i * P_i`` over a non-empty batch (RFC 9497 composites M and Z).

    Raises:
        RuntimeError: from libsodium if a weight is zero (probability ~2^-252).
    """
    total = element_mul(weights[0], elements[0])
    for w, e in zip(weights[1:], elements[1:]):
        total = add(total, element_mul(w, e))
    return total


def split_elements(packed: bytes, count: int | None = None) -> list[bytes]:
    """Split a concatenation of 32-byte encodings; lengths only, no validity checks.

    Args:
        packed: the concatenated encodings.
        count: the number of elements the caller expects, if it knows.

    Raises:
        ValueError: if the length is not a multiple of 32 or does not match ``count``.
    """
    if type(packed) is not bytes:
        packed = bytes(packed)
    n, rest = divmod(len(packed), ELEMENT_LEN)
    if rest:
        raise ValueError("packed elements: length is not a multiple of 32")
    if count is not None and n != count:
        raise ValueError(f"packed elements: expected {count}, got {n}")
    return [packed[i : i + ELEMENT_LEN] for i in range(0, len(packed), ELEMENT_LEN)]


def join_elements(elements: Iterable[bytes]) -> bytes:
    """Concatenate 32-byte encodings into one packed array.

    Raises:
        ValueError: if any item is not exactly 32 bytes.
    """
    items = list(elements)
    if any(len(e) != ELEMENT_LEN for e in items):
        raise ValueError("packed elements: every element must be 32 bytes")
    return b"".join(items)


# -- hashing to the group and to its scalars (RFC 9380 §5.3.1, as RFC 9497 uses it) --

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

"""Typed helpers over libsodium's ristretto255 (via ``rbcl``), as RFC 9497 §4.1 needs them.

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
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

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
    "is_canonical_scalar",
    "is_nonzero_scalar",
    "is_valid_element",
    "join_elements",
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

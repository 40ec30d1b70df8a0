"""RFC 9497 ristretto255-SHA512 building blocks: sizes, modes, errors, the per-mode hash
suites, the server's key and the checks every message goes through.

Private to :mod:`protocols.oprf`, which narrates the protocol and is the module to import.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from protocols import h2c
from protocols.group import (
    base_mul,
    batch_invert,
    element_mul,
    is_nonzero_scalar,
    is_valid_element,
    random_scalar,
    split_elements,
)

ELEMENT_LEN = 32
SCALAR_LEN = 32
OUTPUT_LEN = 64
PROOF_LEN = 2 * SCALAR_LEN
MODE_OPRF = 0x00
MODE_VOPRF = 0x01
#: The composite index is I2OSP(i, 2), so one proof covers at most 2^16 elements.
MAX_VOPRF_BATCH = 0x10000
_LEN_ELEMENT = ELEMENT_LEN.to_bytes(2, "big")


class InvalidElement(ValueError):
    """A peer-supplied element, packed array or proof was rejected. Deliberately opaque."""

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        where = "" if index is None else f" (position {index})"
        super().__init__(f"invalid OPRF message from peer{where}")

    def __reduce__(self) -> tuple[type[InvalidElement], tuple[int | None]]:
        return (InvalidElement, (self.index,))


class DeriveKeyPairError(ValueError):
    """RFC 9497 DeriveKeyPair found no non-zero scalar in 256 attempts."""


def context_string(mode: int) -> bytes:
    """``"OPRFV1-" || I2OSP(mode, 1) || "-ristretto255-SHA512"`` (RFC 9497 §3.1)."""
    return b"OPRFV1-" + bytes((mode,)) + b"-ristretto255-SHA512"


class _Suite:
    """Per-mode hash functions with their domain-separation tags precomputed."""

    __slots__ = ("hash_to_group", "hash_to_scalar", "derive_scalar", "seed_dst")

    def __init__(self, mode: int) -> None:
        ctx = context_string(mode)
        self.hash_to_group = h2c.make_hash_to_group(b"HashToGroup-" + ctx)
        self.hash_to_scalar = h2c.make_hash_to_scalar(b"HashToScalar-" + ctx)
        self.derive_scalar = h2c.make_hash_to_scalar(b"DeriveKeyPair" + ctx)
        self.seed_dst = b"Seed-" + ctx


_SUITES = {mode: _Suite(mode) for mode in (MODE_OPRF, MODE_VOPRF)}


def _suite(mode: int) -> _Suite:
    try:
        return _SUITES[mode]
    except KeyError:
        raise ValueError("unsupported mode: only 0x00 (OPRF) and 0x01 (VOPRF)") from None


_CONSTRUCT = object()


class OprfSecretKey:
    """The server's OPRF key k. Not printable, picklable or copyable.

    Build one with :meth:`generate`, :meth:`derive` or :meth:`from_bytes`. The only way
    to get the scalar out is :meth:`export_secret_bytes`, so every such place is
    greppable (it should be sealing the key under the node's key-encryption key).
    """

    __slots__ = ("_scalar", "_public")

    def __init__(self, scalar: bytes, *, _token: object = None) -> None:
        if _token is not _CONSTRUCT:
            raise TypeError("use OprfSecretKey.generate(), .derive() or .from_bytes()")
        self._scalar = scalar
        self._public: bytes | None = None

    @classmethod
    def generate(cls) -> OprfSecretKey:
        """A fresh uniformly random key from libsodium's CSPRNG."""
        return cls(random_scalar(), _token=_CONSTRUCT)

    @classmethod
    def derive(cls, seed: bytes, info: bytes, mode: int = MODE_OPRF) -> OprfSecretKey:
        """RFC 9497 §3.2.1 DeriveKeyPair from a 32-byte secret seed and public ``info``.

        Raises:
            ValueError: seed not 32 bytes, info over 65535 bytes, or unsupported mode.
            DeriveKeyPairError: no non-zero scalar in 256 counters (never in practice).
        """
        derive_scalar = _suite(mode).derive_scalar
        if len(seed) != 32 or len(info) > 0xFFFF:
            raise ValueError("DeriveKeyPair needs a 32-byte seed and info under 64 KiB")
        derive_input = bytes(seed) + len(info).to_bytes(2, "big") + bytes(info)
        for counter in range(256):
            scalar = derive_scalar(derive_input + bytes((counter,)))
            if is_nonzero_scalar(scalar):
                return cls(scalar, _token=_CONSTRUCT)
        raise DeriveKeyPairError("DeriveKeyPair: no valid key in 256 attempts")

    @classmethod
    def from_bytes(cls, encoding: bytes) -> OprfSecretKey:
        """Load a key from its canonical, non-zero 32-byte little-endian scalar.

        Raises:
            ValueError: if ``encoding`` is not such a scalar.
        """
        if not is_nonzero_scalar(encoding):
            raise ValueError("not a canonical non-zero ristretto255 scalar")
        return cls(encoding, _token=_CONSTRUCT)

    def export_secret_bytes(self) -> bytes:
        """The raw secret scalar. Seal it at once; never log, send or store it in clear."""
        return self._scalar

    def public_key(self) -> bytes:
        """pkS = k * G, what a VOPRF client verifies proofs against."""
        if self._public is None:
            self._public = base_mul(self._scalar)
        return self._public

    def __repr__(self) -> str:
        return f"<OprfSecretKey public_key={self.public_key()[:8].hex()}… secret hidden>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OprfSecretKey):
            return NotImplemented
        return hmac.compare_digest(self._scalar, other._scalar)

    __hash__ = None  # type: ignore[assignment]  # a hash() of the secret is not constant-time

    def _refuse(self, *_: object) -> None:
        raise TypeError("OprfSecretKey cannot be pickled or copied; seal export_secret_bytes()")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse


def _check_inputs(inputs: Sequence[bytes]) -> None:
    if any(len(x) > 0xFFFF for x in inputs):
        raise ValueError("an OPRF input is longer than 65535 bytes")


def _check_blinds(blinds: Sequence[bytes], count: int) -> list[bytes]:
    blinds = list(blinds)
    if len(blinds) != count or not all(map(is_nonzero_scalar, blinds)):
        raise ValueError("blinds must be one canonical non-zero scalar per input")
    return blinds


def _peer_elements(packed: bytes, count: int | None = None) -> list[bytes]:
    """Split and validate a peer's packed elements; any fault is an InvalidElement."""
    try:
        elements = split_elements(packed, count)
    except (TypeError, ValueError):
        raise InvalidElement() from None
    for index, element in enumerate(elements):
        if not is_valid_element(element):
            raise InvalidElement(index)
    return elements


def _finalize_hash(x: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(
        len(x).to_bytes(2, "big") + x + _LEN_ELEMENT + unblinded + b"Finalize"
    ).digest()


def _unblind_and_hash(
    inputs: Sequence[bytes], blinds: list[bytes], evaluated: list[bytes]
) -> list[bytes]:
    return [
        _finalize_hash(x, element_mul(inverse, e))
        for x, inverse, e in zip(inputs, batch_invert(blinds), evaluated)
    ]

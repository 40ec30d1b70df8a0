"""RFC 9497 oblivious PRF over ristretto255-SHA512: modes OPRF (0x00) and VOPRF (0x01).

The server holds a key k; for an input x the PRF output is
F_k(x) = SHA-512(len(x) || x || len(Z) || Z || "Finalize") with Z = k * HashToGroup(x).

Rounds, for a batch of m inputs (every message is bytes; packed = m 32-byte elements):

1. client ``blind(inputs)``: draws a fresh non-zero scalar r_i per input and sends
   ``r_i * HashToGroup(x_i)``. It keeps ``blinds`` (and, for VOPRF, its packed message).
2. server ``blind_evaluate(key, packed)`` returns ``k * B_i``; in VOPRF mode
   ``blind_evaluate_with_proof`` also returns one batched DLEQ proof (RFC 9497 §2.2)
   that every ``E_i`` used the same k as the public key ``pkS = k * G``.
3. client ``finalize`` (OPRF) or ``finalize_verified`` (VOPRF, proof checked first)
   unblinds ``Z_i = (1/r_i) * E_i`` and hashes to a 64-byte output.

``evaluate(key, inputs)`` is RFC 9497 §3.3.1 Evaluate: the server computes F_k directly
on its own rows (tag tables); its outputs equal the client's finalized outputs.

Who learns what. The server sees m and m uniformly random group elements: nothing about
the x_i, and it cannot tell whether two queries concern the same x (r_i is fresh each
time). The client learns F_k(x_i) for its own inputs only, and nothing about k; it can
evaluate F_k on any input it likes, so limits on what and how much it may ask belong to
the node's policy. In OPRF mode a server could answer with a different key per client;
VOPRF mode detects that, given a pkS the client obtained out of band.

Anything a peer sends is validated before use, and every failure surfaces as one opaque
:class:`InvalidElement` whose message names no data. Randomness enters only through the
optional ``blinds``/``r`` arguments (known-answer tests) and libsodium's CSPRNG.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from protocols.group import (IDENTITY, add, base_mul, batch_invert, element_mul, is_canonical_scalar,
                             is_nonzero_scalar, is_valid_element, make_hash_to_group,
                             make_hash_to_scalar, random_scalar, scalar_mul, scalar_sub,
                             split_elements, weighted_sum)

__all__ = ["ELEMENT_LEN", "SCALAR_LEN", "OUTPUT_LEN", "PROOF_LEN", "MODE_OPRF", "MODE_VOPRF",
           "MAX_VOPRF_BATCH", "InvalidElement", "DeriveKeyPairError", "OprfSecretKey",
           "context_string", "blind", "blind_evaluate", "finalize", "evaluate",
           "blind_evaluate_with_proof", "finalize_verified", "prove", "verify_proof",
           "finalize_sampled"]

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
        self.hash_to_group = make_hash_to_group(b"HashToGroup-" + ctx)
        self.hash_to_scalar = make_hash_to_scalar(b"HashToScalar-" + ctx)
        self.derive_scalar = make_hash_to_scalar(b"DeriveKeyPair" + ctx)
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
        """Load a key from its canonical, non-zero 32-byte little-endian scalar (else ValueError)."""
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
    return hashlib.sha512(len(x).to_bytes(2, "big") + x + _LEN_ELEMENT + unblinded + b"Finalize").digest()


def _unblind_and_hash(inputs: Sequence[bytes], blinds: list[bytes], evaluated: list[bytes]) -> list[bytes]:
    return [_finalize_hash(x, element_mul(inverse, e))
            for x, inverse, e in zip(inputs, batch_invert(blinds), evaluated)]


# -- the rounds ---------------------------------------------------------------------

def blind(inputs: Sequence[bytes], blinds: Sequence[bytes] | None = None,
          mode: int = MODE_OPRF) -> tuple[list[bytes], bytes]:
    """Client round 1: returns (blinds to keep, packed blinded elements to send).
    ``blinds`` is for known-answer tests only; by default each is fresh and random.

    Raises:
        ValueError: an input hashes to the identity (RFC 9497 InvalidInputError), an
            input exceeds 65535 bytes, bad injected blinds, or an unsupported mode.
    """
    hash_to_group = _suite(mode).hash_to_group
    _check_inputs(inputs)
    if blinds is None:
        blinds = [random_scalar() for _ in inputs]
    else:
        blinds = _check_blinds(blinds, len(inputs))
    blinded = []
    for index, (x, r) in enumerate(zip(inputs, blinds)):
        point = hash_to_group(x)
        if point == IDENTITY:
            raise ValueError(f"InvalidInputError: input {index} hashes to the identity")
        blinded.append(element_mul(r, point))
    return blinds, b"".join(blinded)


def blind_evaluate(key: OprfSecretKey, packed_blinded: bytes, mode: int = MODE_OPRF) -> bytes:
    """Server round (OPRF): validate every blinded element, return packed ``k * B_i``.
    Raises InvalidElement (a malformed packed array or an invalid/identity element), or
    ValueError for mode 0x01, whose evaluations must carry a proof."""
    if _suite(mode) is not _SUITES[MODE_OPRF]:
        raise ValueError("VOPRF evaluations need a proof: use blind_evaluate_with_proof, "
                         "or blind_evaluate (mode 0x00 arithmetic) followed by prove()")
    k = key._scalar
    return b"".join([element_mul(k, b) for b in _peer_elements(packed_blinded)])


def finalize(inputs: Sequence[bytes], blinds: Sequence[bytes], packed_evaluated: bytes,
             mode: int = MODE_OPRF) -> list[bytes]:
    """Client round 2 (OPRF): unblind each evaluated element and hash to 64 bytes.

    Raises:
        InvalidElement: the server's message is malformed, the wrong size or invalid.
        ValueError: local faults (blinds, input length) or mode 0x01 (verify instead).
    """
    if _suite(mode) is not _SUITES[MODE_OPRF]:
        raise ValueError("VOPRF outputs must be verified: use finalize_verified")
    _check_inputs(inputs)
    blinds = _check_blinds(blinds, len(inputs))
    evaluated = _peer_elements(packed_evaluated, len(inputs))
    return _unblind_and_hash(inputs, blinds, evaluated)


def evaluate(key: OprfSecretKey, inputs: Sequence[bytes], mode: int = MODE_OPRF) -> list[bytes]:
    """RFC 9497 §3.3.1 Evaluate: the server's direct F_k(x) over its own rows; ValueError
    if an input hashes to the identity or exceeds 65535 bytes.

    The hot loop of tag-table building: two SHA-512 calls for HashToGroup, libsodium's
    map and one scalar multiplication, one SHA-512 for the output.
    """
    hash_to_group = _suite(mode).hash_to_group
    k = key._scalar
    mul, sha512, identity, tail = element_mul, hashlib.sha512, IDENTITY, b"Finalize"
    outputs: list[bytes] = []
    append = outputs.append
    for x in inputs:
        n = len(x)
        if n > 0xFFFF:
            raise ValueError("an OPRF input is longer than 65535 bytes")
        point = hash_to_group(x)
        if point == identity:
            raise ValueError("InvalidInputError: an input hashes to the identity")
        append(sha512(n.to_bytes(2, "big") + x + _LEN_ELEMENT + mul(k, point) + tail).digest())
    return outputs


# -- VOPRF: batched DLEQ proofs (RFC 9497 §2.2) ---------------------------------------

def _composite_weights(suite: _Suite, pk: bytes, blinded: list[bytes],
                       evaluated: list[bytes]) -> list[bytes]:
    """The d_i of RFC 9497 §2.2.1 ComputeComposites, bound to pkS and to every pair."""
    seed = hashlib.sha512(_LEN_ELEMENT + pk + len(suite.seed_dst).to_bytes(2, "big")
                          + suite.seed_dst).digest()
    prefix = len(seed).to_bytes(2, "big") + seed
    return [suite.hash_to_scalar(prefix + i.to_bytes(2, "big") + _LEN_ELEMENT + c + _LEN_ELEMENT
                                 + d + b"Composite") for i, (c, d) in enumerate(zip(blinded, evaluated))]


def _challenge(suite: _Suite, *elements: bytes) -> bytes:
    """c = HashToScalar(len||Bm || len||M || len||Z || len||t2 || len||t3 || "Challenge")."""
    return suite.hash_to_scalar(b"".join(_LEN_ELEMENT + e for e in elements) + b"Challenge")


def prove(key: OprfSecretKey, packed_blinded: bytes, packed_evaluated: bytes,
          r: bytes | None = None) -> bytes:
    """RFC 9497 §2.2.1 GenerateProof (VOPRF): one DLEQ proof ``c || s`` that every
    ``E_i = k * B_i`` for the given pairs, under ``pkS = k * G``.

    The node proves either a whole batch, or a sample of it that the client chose
    *after* receiving the evaluations (the server commits to E first, and cannot tell
    which blinded element belongs to whom, so it cannot cheat on chosen people).

    Raises InvalidElement: malformed arrays, an empty or oversized set, invalid elements.
    """
    suite, k, pk = _SUITES[MODE_VOPRF], key._scalar, key.public_key()
    blinded = _peer_elements(packed_blinded)
    evaluated = _peer_elements(packed_evaluated, len(blinded))
    if not 0 < len(blinded) <= MAX_VOPRF_BATCH:
        raise InvalidElement()
    if r is None:
        r = random_scalar()
    elif not is_nonzero_scalar(r):
        raise ValueError("proof nonce must be a canonical non-zero scalar")
    # ComputeCompositesFast: the server knows k, so Z = k * M.
    m = weighted_sum(_composite_weights(suite, pk, blinded, evaluated), blinded)
    c = _challenge(suite, pk, m, element_mul(k, m), base_mul(r), element_mul(r, m))
    return c + scalar_sub(r, scalar_mul(c, k))


def blind_evaluate_with_proof(key: OprfSecretKey, packed_blinded: bytes,
                              r: bytes | None = None) -> tuple[bytes, bytes]:
    """Server round (VOPRF): packed ``k * B_i`` plus one batched DLEQ proof ``c || s``.
    ``r`` (the proof nonce) is for known-answer tests only; by default it is random.

    Raises:
        InvalidElement: a malformed or empty packed array, over MAX_VOPRF_BATCH
            elements, or an invalid/identity element.
    """
    blinded = _peer_elements(packed_blinded)
    if not 0 < len(blinded) <= MAX_VOPRF_BATCH:
        raise InvalidElement()
    k = key._scalar
    evaluated = b"".join([element_mul(k, b) for b in blinded])
    return evaluated, prove(key, packed_blinded, evaluated, r)


def verify_proof(public_key: bytes, packed_blinded: bytes, packed_evaluated: bytes,
                 proof: bytes) -> None:
    """RFC 9497 §2.2.2 VerifyProof over the given pairs; raises InvalidElement for
    malformed or invalid elements, public key or proof, or a proof that does not verify
    (all indistinguishable on purpose)."""
    suite = _SUITES[MODE_VOPRF]
    blinded = _peer_elements(packed_blinded)
    evaluated = _peer_elements(packed_evaluated, len(blinded))
    if not 0 < len(blinded) <= MAX_VOPRF_BATCH:
        raise InvalidElement()
    if not is_valid_element(public_key) or type(proof) is not bytes or len(proof) != PROOF_LEN:
        raise InvalidElement()
    c, s = proof[:SCALAR_LEN], proof[SCALAR_LEN:]
    if not (is_canonical_scalar(c) and is_canonical_scalar(s)):
        raise InvalidElement()
    try:  # libsodium refuses zero scalars and identity sums.
        weights = _composite_weights(suite, public_key, blinded, evaluated)
        m, z = weighted_sum(weights, blinded), weighted_sum(weights, evaluated)
        t2 = add(base_mul(s), element_mul(c, public_key))
        t3 = add(element_mul(s, m), element_mul(c, z))
    except RuntimeError:
        raise InvalidElement() from None
    if not hmac.compare_digest(_challenge(suite, public_key, m, z, t2, t3), c):
        raise InvalidElement()


def finalize_sampled(inputs: Sequence[bytes], blinds: Sequence[bytes],
                     packed_evaluated: bytes) -> list[bytes]:
    """Client round 2 (VOPRF) after ``verify_proof`` passed on a random sample of the batch.

    Only for the sampled-verification path: the caller must have checked a proof over
    pairs it chose after receiving ``packed_evaluated``. Use ``finalize_verified`` to
    check every element. Raises InvalidElement: the server's message is malformed, the
    wrong size or invalid.
    """
    _check_inputs(inputs)
    blinds = _check_blinds(blinds, len(inputs))
    evaluated = _peer_elements(packed_evaluated, len(inputs))
    return _unblind_and_hash(inputs, blinds, evaluated)


def finalize_verified(inputs: Sequence[bytes], blinds: Sequence[bytes], packed_blinded: bytes,
                      packed_evaluated: bytes, proof: bytes, public_key: bytes) -> list[bytes]:
    """Client round 2 (VOPRF): verify the batched proof against pkS, then finalize.

    Raises:
        InvalidElement: malformed or invalid evaluated elements, public key or proof,
            or a proof that does not verify (all indistinguishable on purpose).
        ValueError: local faults: blinds, inputs or our own blinded message.
    """
    _check_inputs(inputs)
    blinds = _check_blinds(blinds, len(inputs))
    blinded = split_elements(packed_blinded, len(inputs))
    if not 0 < len(inputs) <= MAX_VOPRF_BATCH or not all(map(is_valid_element, blinded)):
        raise ValueError("our own blinded batch is empty, too large or invalid")
    verify_proof(public_key, packed_blinded, packed_evaluated, proof)
    return _unblind_and_hash(inputs, blinds, _peer_elements(packed_evaluated, len(inputs)))

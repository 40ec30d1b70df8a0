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

This module holds the rounds and is the one to import; the suite, the key and the
message checks are in ``_oprf_suite``, the VOPRF proofs in ``_oprf_dleq``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocols._oprf_dleq import (
    blind_evaluate_with_proof,
    finalize_sampled,
    finalize_verified,
    prove,
    verify_proof,
)
from protocols._oprf_suite import (
    _LEN_ELEMENT,
    _SUITES,
    ELEMENT_LEN,
    MAX_VOPRF_BATCH,
    MODE_OPRF,
    MODE_VOPRF,
    OUTPUT_LEN,
    PROOF_LEN,
    SCALAR_LEN,
    DeriveKeyPairError,
    InvalidElement,
    OprfSecretKey,
    _check_blinds,
    _check_inputs,
    _peer_elements,
    _suite,
    _unblind_and_hash,
    context_string,
)
from protocols.group import IDENTITY, element_mul, random_scalar

__all__ = [
    "ELEMENT_LEN", "SCALAR_LEN", "OUTPUT_LEN", "PROOF_LEN", "MODE_OPRF", "MODE_VOPRF",
    "MAX_VOPRF_BATCH", "InvalidElement", "DeriveKeyPairError", "OprfSecretKey",
    "context_string", "blind", "blind_evaluate", "finalize", "evaluate",
    "blind_evaluate_with_proof", "finalize_verified", "prove", "verify_proof", "finalize_sampled",
]


def blind(
    inputs: Sequence[bytes], blinds: Sequence[bytes] | None = None, mode: int = MODE_OPRF
) -> tuple[list[bytes], bytes]:
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

    Raises:
        InvalidElement: a malformed packed array or an invalid/identity element.
        ValueError: mode 0x01, whose evaluations must carry a proof.
    """
    if _suite(mode) is not _SUITES[MODE_OPRF]:
        raise ValueError("VOPRF evaluations need a proof: use blind_evaluate_with_proof, "
                         "or blind_evaluate (mode 0x00 arithmetic) followed by prove()")
    k = key._scalar
    return b"".join([element_mul(k, b) for b in _peer_elements(packed_blinded)])


def finalize(
    inputs: Sequence[bytes], blinds: Sequence[bytes], packed_evaluated: bytes,
    mode: int = MODE_OPRF,
) -> list[bytes]:
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
    """RFC 9497 §3.3.1 Evaluate: the server's direct F_k(x) over its own rows.

    The hot loop of tag-table building: two SHA-512 calls for HashToGroup, libsodium's
    map and one scalar multiplication, one SHA-512 for the output.

    Raises:
        ValueError: an input hashes to the identity or exceeds 65535 bytes.
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

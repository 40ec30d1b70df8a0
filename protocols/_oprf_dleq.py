"""VOPRF's batched DLEQ proofs (RFC 9497 §2.2): the server proves that every evaluation
used the key behind its public key; the client verifies, over a whole batch or a sample
it chose after the evaluations arrived, and only then finalizes.

Private to :mod:`protocols.oprf`, which narrates the protocol and is the module to import.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from protocols._oprf_suite import (
    _LEN_ELEMENT,
    _SUITES,
    MAX_VOPRF_BATCH,
    MODE_VOPRF,
    PROOF_LEN,
    SCALAR_LEN,
    InvalidElement,
    OprfSecretKey,
    _check_blinds,
    _check_inputs,
    _peer_elements,
    _Suite,
    _unblind_and_hash,
)
from protocols.group import (
    add,
    base_mul,
    element_mul,
    is_canonical_scalar,
    is_nonzero_scalar,
    is_valid_element,
    random_scalar,
    scalar_mul,
    scalar_sub,
    split_elements,
    weighted_sum,
)


def _composite_weights(
    suite: _Suite, pk: bytes, blinded: list[bytes], evaluated: list[bytes]
) -> list[bytes]:
    """The d_i of RFC 9497 §2.2.1 ComputeComposites, bound to pkS and to every pair."""
    seed = hashlib.sha512(
        _LEN_ELEMENT + pk + len(suite.seed_dst).to_bytes(2, "big") + suite.seed_dst
    ).digest()
    prefix = len(seed).to_bytes(2, "big") + seed
    return [
        suite.hash_to_scalar(
            prefix + i.to_bytes(2, "big") + _LEN_ELEMENT + c + _LEN_ELEMENT + d + b"Composite"
        )
        for i, (c, d) in enumerate(zip(blinded, evaluated))
    ]


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

    Raises:
        InvalidElement: malformed arrays, an empty or oversized set, invalid elements.
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


def blind_evaluate_with_proof(
    key: OprfSecretKey, packed_blinded: bytes, r: bytes | None = None
) -> tuple[bytes, bytes]:
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
    """RFC 9497 §2.2.2 VerifyProof over the given pairs; raises InvalidElement if it fails.

    Raises:
        InvalidElement: malformed or invalid elements, public key or proof, or a proof
            that does not verify (all indistinguishable on purpose).
    """
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
    check every element.

    Raises:
        InvalidElement: the server's message is malformed, the wrong size or invalid.
    """
    _check_inputs(inputs)
    blinds = _check_blinds(blinds, len(inputs))
    evaluated = _peer_elements(packed_evaluated, len(inputs))
    return _unblind_and_hash(inputs, blinds, evaluated)


def finalize_verified(
    inputs: Sequence[bytes], blinds: Sequence[bytes], packed_blinded: bytes,
    packed_evaluated: bytes, proof: bytes, public_key: bytes,
) -> list[bytes]:
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

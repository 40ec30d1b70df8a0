"""VOPRF proofs over a sample the client picks after the answer (RFC 9497 DLEQ on a subset)."""
from __future__ import annotations

import random

import pytest

from protocols import oprf


def batch(n=64):
    key = oprf.OprfSecretKey.generate()
    inputs = [b"person-%d" % i for i in range(n)]
    blinds, blinded = oprf.blind(inputs, mode=oprf.MODE_VOPRF)
    evaluated = oprf.blind_evaluate(key, blinded)
    return key, inputs, blinds, blinded, evaluated


def pick(packed, idx):
    return b"".join(packed[i * 32:(i + 1) * 32] for i in idx)


def test_a_proof_over_a_sample_verifies_and_outputs_match_full_verification():
    key, inputs, blinds, blinded, evaluated = batch()
    sample = sorted(random.sample(range(64), 8))
    proof = oprf.prove(key, pick(blinded, sample), pick(evaluated, sample))
    oprf.verify_proof(key.public_key(), pick(blinded, sample), pick(evaluated, sample), proof)
    sampled = oprf.finalize_sampled(inputs, blinds, evaluated)
    full_eval, full_proof = oprf.blind_evaluate_with_proof(key, blinded)
    assert full_eval == evaluated
    assert sampled == oprf.finalize_verified(inputs, blinds, blinded, evaluated, full_proof,
                                             key.public_key())
    assert sampled == oprf.evaluate(key, inputs, mode=oprf.MODE_VOPRF)


def test_a_wrong_evaluation_inside_the_sample_is_caught():
    key, _, _, blinded, evaluated = batch()
    rogue = oprf.OprfSecretKey.generate()
    bad = bytearray(evaluated)
    bad[5 * 32:6 * 32] = oprf.blind_evaluate(rogue, blinded[5 * 32:6 * 32])
    sample = [1, 5, 9]
    proof = oprf.prove(key, pick(blinded, sample), pick(bytes(bad), sample))
    with pytest.raises(oprf.InvalidElement):
        oprf.verify_proof(key.public_key(), pick(blinded, sample), pick(bytes(bad), sample), proof)


def test_a_proof_is_bound_to_its_pairs_and_key():
    key, _, _, blinded, evaluated = batch()
    proof = oprf.prove(key, pick(blinded, [0, 1]), pick(evaluated, [0, 1]))
    with pytest.raises(oprf.InvalidElement):
        oprf.verify_proof(key.public_key(), pick(blinded, [0, 2]), pick(evaluated, [0, 2]), proof)
    with pytest.raises(oprf.InvalidElement):
        oprf.verify_proof(oprf.OprfSecretKey.generate().public_key(), pick(blinded, [0, 1]),
                          pick(evaluated, [0, 1]), proof)
    with pytest.raises(oprf.InvalidElement):
        oprf.verify_proof(key.public_key(), pick(blinded, [0, 1]), pick(evaluated, [0, 1]),
                          proof[:-1] + bytes([proof[-1] ^ 1]))

"""Two-party OPRF/VOPRF runs in one process, every message crossing a byte "wire".

Covers the house checklist for a protocol: a full run with serialised messages, a key
mismatch seen from both sides, tampered messages, what the server learns, and the key
object's hygiene (no repr, pickle or copy of the secret).
"""

from __future__ import annotations

import copy
import os
import pickle
import struct
from collections.abc import Callable

import pytest
import rbcl
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import group, oprf
from protocols.oprf import InvalidElement, OprfSecretKey

INPUTS = [b"320402199901011234", b"32040220000202567X", b"", b"\x00" * 100]
P_ENCODED = (2**255 - 19).to_bytes(32, "little")  # the field prime itself: non-canonical


def _wire(*fields: bytes) -> bytes:
    """Frame fields as length-prefixed bytes, as a transport would carry them."""
    return b"".join(struct.pack(">I", len(f)) + bytes(f) for f in fields)


def _unwire(frame: bytes) -> list[bytes]:
    fields, offset = [], 0
    while offset < len(frame):
        (n,) = struct.unpack_from(">I", frame, offset)
        fields.append(frame[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return fields


def _oprf_run(client_inputs: list[bytes], server_key: OprfSecretKey) -> list[bytes]:
    blinds, request = oprf.blind(client_inputs)
    (received,) = _unwire(_wire(request))
    response = oprf.blind_evaluate(server_key, received)
    (evaluated,) = _unwire(_wire(response))
    return oprf.finalize(client_inputs, blinds, evaluated)


def _voprf_exchange(
    inputs: list[bytes], key: OprfSecretKey
) -> tuple[list[bytes], bytes, bytes, bytes]:
    blinds, request = oprf.blind(inputs, mode=oprf.MODE_VOPRF)
    (received,) = _unwire(_wire(request))
    evaluated, proof = _unwire(_wire(*oprf.blind_evaluate_with_proof(key, received)))
    return blinds, request, evaluated, proof


# --- full runs ---------------------------------------------------------------------


def test_oprf_run_matches_server_tag_table() -> None:
    key = OprfSecretKey.generate()
    outputs = _oprf_run(INPUTS, key)
    assert outputs == oprf.evaluate(key, INPUTS)
    assert all(len(o) == oprf.OUTPUT_LEN for o in outputs)
    assert len(set(outputs)) == len(INPUTS)


def test_voprf_run_verifies_and_matches_server_tag_table() -> None:
    key = OprfSecretKey.generate()
    (pk,) = _unwire(_wire(key.public_key()))
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS, key)
    outputs = oprf.finalize_verified(INPUTS, blinds, request, evaluated, proof, pk)
    assert outputs == oprf.evaluate(key, INPUTS, mode=oprf.MODE_VOPRF)
    assert outputs != oprf.evaluate(key, INPUTS), "modes must be domain-separated"


def test_empty_oprf_batch_is_a_no_op() -> None:
    blinds, request = oprf.blind([])
    assert blinds == [] and request == b""
    assert oprf.finalize([], [], oprf.blind_evaluate(OprfSecretKey.generate(), request)) == []


# --- mismatch: different keys fail on both sides ------------------------------------


def test_oprf_key_mismatch_is_visible_on_both_sides() -> None:
    client_key, other_key = OprfSecretKey.generate(), OprfSecretKey.generate()
    client_view = _oprf_run(INPUTS, other_key)  # the server answered with another key
    assert not set(client_view) & set(oprf.evaluate(client_key, INPUTS))
    # ...and the server's table under its real key matches nothing the client holds.
    assert not set(oprf.evaluate(other_key, INPUTS)) & set(_oprf_run(INPUTS, client_key))


def test_voprf_key_mismatch_is_rejected_by_the_client() -> None:
    published, actual = OprfSecretKey.generate(), OprfSecretKey.generate()
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS, actual)
    with pytest.raises(InvalidElement):
        oprf.finalize_verified(INPUTS, blinds, request, evaluated, proof, published.public_key())


# --- tampered messages --------------------------------------------------------------


def _valid_element() -> bytes:
    return rbcl.crypto_core_ristretto255_random()


def _with_high_bit(element: bytes) -> bytes:
    return element[:31] + bytes((element[31] | 0x80,))


def _invalid_encoding() -> bytes:
    while True:  # about half of random 32-byte strings with a clear top bit decode
        candidate = bytearray(os.urandom(32))
        candidate[31] &= 0x7F
        if not rbcl.crypto_core_ristretto255_is_valid_point(bytes(candidate)):
            return bytes(candidate)


BAD_ELEMENTS = {
    "identity": lambda: bytes(32),
    "field-prime": lambda: P_ENCODED,
    "all-ones": lambda: b"\xff" * 31 + b"\x7f",
    "negative-s": lambda: b"\x01" + bytes(31),
    "high-bit-zero": lambda: bytes(31) + b"\x80",
    "high-bit-valid": lambda: _with_high_bit(_valid_element()),
    "random-invalid": _invalid_encoding,
}


def test_libsodium_alone_would_accept_what_we_reject() -> None:
    """Why group.is_valid_element exists: libsodium 1.0.18 is lenient on these."""
    assert rbcl.crypto_core_ristretto255_is_valid_point(bytes(32))
    element = _valid_element()
    assert rbcl.crypto_core_ristretto255_is_valid_point(_with_high_bit(element))
    assert not group.is_valid_element(bytes(32))
    assert not group.is_valid_element(_with_high_bit(element))
    assert group.is_valid_element(element)


@pytest.mark.parametrize("kind", sorted(BAD_ELEMENTS))
def test_server_rejects_bad_blinded_elements(kind: str) -> None:
    key, bad = OprfSecretKey.generate(), BAD_ELEMENTS[kind]()
    packed = _valid_element() + bad + _valid_element()
    for evaluate_batch in (oprf.blind_evaluate, oprf.blind_evaluate_with_proof):
        with pytest.raises(InvalidElement) as caught:
            evaluate_batch(key, packed)
        assert caught.value.index == 1
        assert bad.hex() not in str(caught.value) and bad.hex()[:8] not in str(caught.value)


@pytest.mark.parametrize("kind", sorted(BAD_ELEMENTS))
def test_client_rejects_bad_evaluated_elements(kind: str) -> None:
    key, bad = OprfSecretKey.generate(), BAD_ELEMENTS[kind]()
    blinds, request = oprf.blind(INPUTS[:2])
    evaluated = oprf.blind_evaluate(key, request)
    with pytest.raises(InvalidElement) as caught:
        oprf.finalize(INPUTS[:2], blinds, evaluated[:32] + bad)
    assert caught.value.index == 1
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS[:2], key)
    with pytest.raises(InvalidElement):
        oprf.finalize_verified(INPUTS[:2], blinds, request, bad + evaluated[32:], proof,
                               key.public_key())


@pytest.mark.parametrize(
    "cut", [lambda p: p[:-1], lambda p: p[:-32], lambda p: p + b"\x00", lambda p: p + p[:32],
            lambda p: b""],
    ids=["truncated-byte", "one-element-short", "trailing-byte", "extra-element", "empty"],
)
def test_wrong_length_packed_arrays_are_rejected(cut: Callable[[bytes], bytes]) -> None:
    key = OprfSecretKey.generate()
    blinds, request = oprf.blind(INPUTS[:2])
    evaluated = oprf.blind_evaluate(key, request)
    with pytest.raises(InvalidElement):
        oprf.finalize(INPUTS[:2], blinds, cut(evaluated))
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS[:2], key)
    with pytest.raises(InvalidElement):
        oprf.finalize_verified(INPUTS[:2], blinds, request, cut(evaluated), proof,
                               key.public_key())
    if len(cut(request)) % 32:
        for evaluate_batch in (oprf.blind_evaluate, oprf.blind_evaluate_with_proof):
            with pytest.raises(InvalidElement):
                evaluate_batch(key, cut(request))


def _flip(data: bytes, bit: int) -> bytes:
    return data[: bit // 8] + bytes((data[bit // 8] ^ (1 << bit % 8),)) + data[bit // 8 + 1 :]


PROOF_TAMPERS = {
    "flip-c": lambda p, other: _flip(p, 3),
    "flip-s": lambda p, other: _flip(p, 260),
    "swap-c-s": lambda p, other: p[32:] + p[:32],
    "other-batch": lambda p, other: other,
    "truncated": lambda p, other: p[:-1],
    "trailing": lambda p, other: p + b"\x00",
    "zeros": lambda p, other: bytes(64),
    "c-not-canonical": lambda p, other: b"\xff" * 32 + p[32:],
    "s-not-canonical": lambda p, other: p[:32] + b"\xff" * 32,
}


@pytest.mark.parametrize("kind", sorted(PROOF_TAMPERS))
def test_tampered_proofs_are_rejected(kind: str) -> None:
    key = OprfSecretKey.generate()
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS, key)
    other = _voprf_exchange(INPUTS, key)[3]
    with pytest.raises(InvalidElement) as caught:
        oprf.finalize_verified(INPUTS, blinds, request, evaluated,
                               PROOF_TAMPERS[kind](proof, other), key.public_key())
    assert caught.value.index is None


@pytest.mark.parametrize("kind", ["swapped-evaluations", "wrong-public-key", "bad-public-key"])
def test_voprf_client_rejects_inconsistent_answers(kind: str) -> None:
    key = OprfSecretKey.generate()
    blinds, request, evaluated, proof = _voprf_exchange(INPUTS[:2], key)
    public_key = key.public_key()
    if kind == "swapped-evaluations":
        evaluated = evaluated[32:] + evaluated[:32]
    elif kind == "wrong-public-key":
        public_key = OprfSecretKey.generate().public_key()
    else:
        public_key = bytes(32)
    with pytest.raises(InvalidElement):
        oprf.finalize_verified(INPUTS[:2], blinds, request, evaluated, proof, public_key)


def test_local_faults_are_plain_value_errors_not_peer_errors() -> None:
    key = OprfSecretKey.generate()
    blinds, request = oprf.blind(INPUTS[:2])
    evaluated = oprf.blind_evaluate(key, request)
    for bad_blinds in (blinds[:1], [bytes(32), blinds[1]], [b"\xff" * 32, blinds[1]]):
        with pytest.raises(ValueError) as caught:
            oprf.finalize(INPUTS[:2], bad_blinds, evaluated)
        assert not isinstance(caught.value, InvalidElement)
    with pytest.raises(ValueError, match="longer than 65535"):
        oprf.evaluate(key, [b"x" * 65536])
    for mode in (0x02, 0x03):
        with pytest.raises(ValueError, match="unsupported mode"):
            oprf.blind(INPUTS, mode=mode)
    with pytest.raises(ValueError, match="blind_evaluate_with_proof"):
        oprf.blind_evaluate(key, request, mode=oprf.MODE_VOPRF)
    with pytest.raises(ValueError, match="finalize_verified"):
        oprf.finalize(INPUTS[:2], blinds, evaluated, mode=oprf.MODE_VOPRF)


def test_input_hashing_to_identity_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = oprf._SUITES[oprf.MODE_OPRF]
    monkeypatch.setattr(suite, "hash_to_group", lambda x: group.IDENTITY)
    with pytest.raises(ValueError, match="InvalidInputError"):
        oprf.blind([b"x"])
    with pytest.raises(ValueError, match="InvalidInputError"):
        oprf.evaluate(OprfSecretKey.generate(), [b"x"])


# --- what the server learns -----------------------------------------------------------


def test_server_sees_fresh_valid_elements_unlinkable_across_runs() -> None:
    same = [INPUTS[0]] * 3
    _, first = oprf.blind(same)
    _, second = oprf.blind(same)
    seen = group.split_elements(first) + group.split_elements(second)
    assert len(set(seen)) == 6, "the same input must never look the same twice"
    assert all(group.is_valid_element(e) for e in seen)
    unblinded = oprf._SUITES[oprf.MODE_OPRF].hash_to_group(INPUTS[0])
    assert unblinded not in seen
    # Random-looking: over 6 elements every byte position varies (a fixed or small-
    # order encoding would not); a weak smoke check, not a statistical test.
    assert all(len({e[i] for e in seen}) > 1 for i in range(32))


# --- key hygiene ---------------------------------------------------------------------


def test_secret_key_is_not_printable_picklable_or_copyable() -> None:
    key = OprfSecretKey.generate()
    secret_hex = key.export_secret_bytes().hex()
    for text in (repr(key), str(key), f"{key}", f"{key!r}"):
        assert secret_hex not in text and secret_hex[:8] not in text
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(key, protocol=protocol)
    for clone in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            clone(key)
    with pytest.raises(TypeError):
        hash(key)
    with pytest.raises(TypeError):
        OprfSecretKey(key.export_secret_bytes())


def test_secret_key_round_trips_only_through_the_explicit_export() -> None:
    key = OprfSecretKey.generate()
    again = OprfSecretKey.from_bytes(key.export_secret_bytes())
    assert again == key and again is not key and again != OprfSecretKey.generate()
    assert again.public_key() == key.public_key() == group.base_mul(key.export_secret_bytes())
    order = group.ORDER.to_bytes(32, "little")
    for bad in (bytes(32), order, b"\xff" * 32, b"\x01" * 31, bytearray(32)):
        with pytest.raises(ValueError):
            OprfSecretKey.from_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OprfSecretKey.derive(b"short seed", b"info")


def test_invalid_element_error_survives_pickling_for_worker_pools() -> None:
    error = pickle.loads(pickle.dumps(InvalidElement(7)))
    assert isinstance(error, InvalidElement) and error.index == 7


def test_group_constants_and_batch_inversion_agree_with_libsodium() -> None:
    one = (1).to_bytes(32, "little")
    assert group.base_mul(one) == group.GENERATOR
    scalars = [group.random_scalar() for _ in range(5)]
    assert group.batch_invert(scalars) == [group.scalar_invert(s) for s in scalars]


# --- property: the oblivious path equals direct evaluation -----------------------------

_PROPERTY_KEY = OprfSecretKey.generate()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=6))
def test_finalize_of_blind_evaluate_equals_evaluate(inputs: list[bytes]) -> None:
    blinds, request = oprf.blind(inputs)
    outputs = oprf.finalize(inputs, blinds, oprf.blind_evaluate(_PROPERTY_KEY, request))
    assert outputs == oprf.evaluate(_PROPERTY_KEY, inputs)

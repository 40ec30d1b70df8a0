"""protocols.labels: sealed per-row labels opened only with the row's OPRF output.

The reference construction below rebuilds a label from RFC 5869 (HKDF over hmac) and
AES-GCM directly, so a change of key derivation, AAD, padding or layout shows up here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import labels, oprf
from protocols.labels import LabelError

CTX = labels.label_context(owner="edu", partner="fund", dataset="graduates", version=3, epoch=7)
GRAD = {"graduation_year": "2024", "school": "常州大学", "degree": "本科"}


def outputs(n: int, seed: bytes = b"rows") -> list[bytes]:
    return [hashlib.sha512(seed + i.to_bytes(4, "big")).digest() for i in range(n)]


def reference_label(output: bytes, attrs: dict, context: bytes, nonce: bytes, size: int) -> bytes:
    prk = hmac.digest(b"\x00" * 32, output, "sha256")  # RFC 5869 extract, salt absent
    key = hmac.digest(prk, b"shuqiao label key v1" + b"\x01", "sha256")  # T(1)
    body = json.dumps(attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    padded = body + b"\x80" + b"\x00" * (size - len(body) - 1)
    return nonce + AESGCM(key).encrypt(nonce, padded, output[:16] + context)


# --- round trip and known answers ------------------------------------------------------

def test_round_trip():
    rows = [GRAD, {"degree": "硕士", "graduation_year": "2025"}, {}, {"n": 3, "ok": True,
                                                                      "none": None}]
    outs = outputs(len(rows))
    sealed = labels.seal_labels(outs, rows, CTX)
    assert [labels.open_label(o, s, CTX) for o, s in zip(outs, sealed)] == rows


def test_matches_the_reference_construction():
    outs, nonces = outputs(3), bytes(range(36))
    rows = [GRAD, {"a": "x" * 40}, {}]
    sealed = labels.seal_labels(outs, rows, CTX, nonces=nonces)
    sizes = [128, 64, 32]  # encodings of 68, 48 and 2 bytes
    assert sealed == [reference_label(o, r, CTX, nonces[12 * i:12 * i + 12], sizes[i])
                      for i, (o, r) in enumerate(zip(outs, rows))]


def test_known_answer():
    """Pinned: changing the label format must be a deliberate, versioned decision."""
    (sealed,) = labels.seal_labels(outputs(1), [GRAD], CTX, nonces=bytes(12))
    assert len(sealed) == 12 + 128 + 16
    assert hashlib.sha256(sealed).hexdigest() == (
        "e92f17dd4456b4530a3bbe6682f7dd70"
        "7390e6c56cd1b55c3537db341f4f06c1")


def test_fresh_nonce_per_label():
    out = outputs(1) * 2
    first, second = labels.seal_labels(out, [GRAD, GRAD], CTX)
    assert first[:12] != second[:12] and first != second
    assert labels.open_label(out[0], first, CTX) == labels.open_label(out[0], second, CTX)


def test_with_real_oprf_outputs_only_matched_rows_open():
    """Agency seals with Evaluate; the client finalizes its own inputs; only matches open."""
    key = oprf.OprfSecretKey.generate()
    rows = [b"320402199901011234", b"32040220000202567X", b"110105194912310021"]
    attrs = [{"graduation_year": str(2022 + i)} for i in range(3)]
    table_outputs = oprf.evaluate(key, rows)
    tags = {o[:16]: i for i, o in enumerate(table_outputs)}
    sealed = labels.seal_labels(table_outputs, attrs, CTX)

    asked = [rows[1], b"320402198001010000"]
    blinds, request = oprf.blind(asked)
    finalized = oprf.finalize(asked, blinds, oprf.blind_evaluate(key, request))
    opened = {}
    for x, f in zip(asked, finalized):
        if f[:16] in tags:
            opened[x] = labels.open_label(f, sealed[tags[f[:16]]], CTX)
    assert opened == {rows[1]: attrs[1]}
    for f in finalized:
        for s in sealed:
            if f[:16] not in tags or s is not sealed[tags[f[:16]]]:
                with pytest.raises(LabelError):
                    labels.open_label(f, s, CTX)


# --- what cannot be opened -------------------------------------------------------------

def test_unmatched_output_cannot_open():
    outs = outputs(2)
    sealed = labels.seal_labels(outs[:1], [GRAD], CTX)[0]
    with pytest.raises(LabelError):
        labels.open_label(outs[1], sealed, CTX)
    other = bytearray(outs[0])
    other[-1] ^= 1  # same tag, different output
    with pytest.raises(LabelError):
        labels.open_label(bytes(other), sealed, CTX)


def test_every_flipped_bit_of_the_label_is_detected():
    out = outputs(1)
    sealed = labels.seal_labels(out, [GRAD], CTX)[0]
    for i in range(len(sealed)):
        for bit in (0, 7):
            tampered = bytearray(sealed)
            tampered[i] ^= 1 << bit
            with pytest.raises(LabelError):
                labels.open_label(out[0], bytes(tampered), CTX)


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-1], lambda s: s + b"\x00", lambda s: b"", lambda s: s[:12],
    lambda s: s[:12] + s[13:], lambda s: s[12:],
])
def test_truncated_or_extended_labels(mangle):
    out = outputs(1)
    sealed = labels.seal_labels(out, [GRAD], CTX)[0]
    with pytest.raises(LabelError):
        labels.open_label(out[0], mangle(sealed), CTX)


@pytest.mark.parametrize("field, value", [
    ("owner", "hrss"), ("partner", "other"), ("dataset", "graduates2"), ("version", 4),
    ("epoch", 6)])
def test_label_is_bound_to_its_context(field, value):
    out = outputs(1)
    sealed = labels.seal_labels(out, [GRAD], CTX)[0]
    fields = dict(owner="edu", partner="fund", dataset="graduates", version=3, epoch=7)
    with pytest.raises(LabelError):
        labels.open_label(out[0], sealed, labels.label_context(**{**fields, field: value}))
    with pytest.raises(LabelError):
        labels.open_label(out[0], sealed, CTX + b"\x00")


def test_tag_is_authenticated():
    """The AAD carries F[:16]: the same key with another tag in the AAD does not open."""
    out = outputs(1)[0]
    sealed = labels.seal_labels([out], [GRAD], CTX)[0]
    key = labels._key(out)
    AESGCM(key).decrypt(sealed[:12], sealed[12:], out[:16] + CTX)
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(sealed[:12], sealed[12:], bytes(16) + CTX)


def test_one_opaque_error():
    out = outputs(2)
    sealed = labels.seal_labels(out[:1], [GRAD], CTX)[0]
    messages = set()
    for args in [(out[1], sealed, CTX), (out[0], sealed[:-1], CTX), (out[0], sealed, b"x"),
                 (out[0][:32], sealed, CTX), (out[0], b"", CTX), (None, sealed, CTX)]:
        with pytest.raises(LabelError) as err:
            labels.open_label(*args)
        messages.add(str(err.value))
        assert err.value.__cause__ is None and err.value.__suppress_context__
    assert messages == {"label cannot be opened"}
    assert str(pickle.loads(pickle.dumps(LabelError()))) == "label cannot be opened"


def test_authentic_but_malformed_plaintexts_are_refused():
    out = outputs(1)[0]
    key = labels._key(out)
    for padded in [b"\x00" * 32, b"[1,2]\x80".ljust(32, b"\x00"), b"\xff\xfe\x80".ljust(32, b"\0"),
                   b'{"a":1}'.ljust(32, b"\x00")]:
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(key).encrypt(nonce, padded, out[:16] + CTX)
        with pytest.raises(LabelError):
            labels.open_label(out, sealed, CTX)


# --- padding ---------------------------------------------------------------------------

def test_padding_hides_lengths_within_a_bucket():
    rows = [{"s": "x" * n} for n in range(0, 25)]  # encodings of 8 to 32 bytes
    rows = [r for r in rows if len(labels.encode_attributes(r)) < 32]
    sealed = labels.seal_labels(outputs(len(rows)), rows, CTX)
    assert {len(s) for s in sealed} == {labels.sealed_size(32)}


def test_bucket_boundaries():
    assert [labels.bucket_size(n) for n in (0, 31, 32, 63, 64, 127, 4095)] == [
        32, 32, 64, 64, 128, 128, 4096]
    with pytest.raises(ValueError):
        labels.bucket_size(4096)


def test_fixed_pad_hides_the_bucket_too():
    rows = [{}, GRAD, {"note": "长" * 60}]
    sealed = labels.seal_labels(outputs(3), rows, CTX, pad_to=256)
    assert {len(s) for s in sealed} == {256 + labels.OVERHEAD}
    assert labels.open_label(outputs(3)[2], sealed[2], CTX) == rows[2]
    with pytest.raises(ValueError, match="do not fit"):
        labels.seal_labels(outputs(1), [{"note": "x" * 300}], CTX, pad_to=256)
    for bad in (0, 31, 48, 100, 8192):
        with pytest.raises(ValueError):
            labels.seal_labels(outputs(1), [{}], CTX, pad_to=bad)


# --- input validation ------------------------------------------------------------------

@pytest.mark.parametrize("outs, rows, kwargs", [
    (outputs(2), [GRAD], {}),
    ([b"short"], [GRAD], {}),
    (outputs(1), [{"nested": {"a": 1}}], {}),
    (outputs(1), [{1: "int key"}], {}),
    (outputs(1), [{"nan": float("nan")}], {}),
    (outputs(1), [["not", "a", "dict"]], {}),
    (outputs(1), [{"big": "x" * 5000}], {}),
    (outputs(2), [GRAD, GRAD], {"nonces": bytes(12)}),
])
def test_invalid_inputs(outs, rows, kwargs):
    with pytest.raises(ValueError):
        labels.seal_labels(outs, rows, CTX, **kwargs)


def test_context_encoding_is_unambiguous():
    a = labels.label_context(owner="ab", partner="c", dataset="d", version=1, epoch=2)
    b = labels.label_context(owner="a", partner="bc", dataset="d", version=1, epoch=2)
    assert a != b and labels.label_context(owner="a", partner="b", dataset="c", version=1,
                                           epoch=2) != labels.label_context(
        owner="a", partner="b", dataset="c", version=2, epoch=1)


# --- property --------------------------------------------------------------------------

ATTRS = st.dictionaries(st.text(max_size=8), st.one_of(
    st.text(max_size=20), st.integers(-10**12, 10**12), st.booleans(), st.none()), max_size=5)


@given(st.lists(st.tuples(st.binary(min_size=64, max_size=64), ATTRS), min_size=1,
                max_size=6), st.binary(max_size=40))
@settings(max_examples=150, deadline=None)
def test_round_trip_property(rows, context):
    outs = [o for o, _ in rows]
    attrs = [a for _, a in rows]
    sealed = labels.seal_labels(outs, attrs, context)
    for i, (o, a) in enumerate(rows):
        assert labels.open_label(o, sealed[i], context) == a
        assert len(sealed[i]) == labels.sealed_size(
            labels.bucket_size(len(labels.encode_attributes(a))))
        for j, other in enumerate(outs):
            if other != o:
                with pytest.raises(LabelError):
                    labels.open_label(other, sealed[i], context)
        with pytest.raises(LabelError):
            labels.open_label(o, sealed[i], context + b"!")


# --- fixed-size binary values (seal_blobs) -----------------------------------------------

def test_blobs_round_trip_match_the_reference_and_refuse_every_mismatch():
    outs, blobs = outputs(4), [os.urandom(768) for _ in range(4)]
    sealed = labels.seal_blobs(outs, blobs, CTX)
    assert all(len(s) == 768 + labels.OVERHEAD for s in sealed)
    assert [labels.open_blob(o, s, CTX, 768) for o, s in zip(outs, sealed)] == blobs
    # The reference construction: HKDF with its own info, the bytes as they are.
    prk = hmac.digest(b"\x00" * 32, outs[0], "sha256")
    key = hmac.digest(prk, b"shuqiao blob key v1" + b"\x01", "sha256")
    assert AESGCM(key).decrypt(sealed[0][:12], sealed[0][12:], outs[0][:16] + CTX) == blobs[0]
    other_ctx = labels.label_context(owner="edu", partner="fund", dataset="graduates",
                                     version=3, epoch=8)
    flipped = bytearray(sealed[0])
    flipped[100] ^= 1
    for output, blob, ctx, size in ((outs[1], sealed[0], CTX, 768),   # another row's output
                                     (outs[0], sealed[0], other_ctx, 768),
                                     (outs[0], bytes(flipped), CTX, 768),
                                     (outs[0], sealed[0], CTX, 767)):
        with pytest.raises(LabelError):
            labels.open_blob(output, blob, ctx, size)
    with pytest.raises(LabelError):  # a blob is not a label: another key
        labels.open_label(outs[0], sealed[0], CTX)
    with pytest.raises(ValueError):
        labels.seal_blobs(outs[:2], [b"x" * 768, b"y" * 767], CTX)

"""Canonical entry bytes: one encoding per entry, strict decoding, no identifiers."""
from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import synthetic_resident_id
from node.ledger import AdminEntry, LedgerSigningKey, WitnessEntry, decode, encode
from node.ledger.canonical import CanonicalError, IdentifierLeak, clean_text, dump, parse
from node.ledger.entries import make_receipt

from .helpers import query

ID = synthetic_resident_id(random.Random(7))


def test_query_entry_round_trips_to_identical_bytes():
    entry = query(matched=None, authorisation_digest=hashlib.sha256(b"approval").hexdigest(),
                  kind="predicate", predicate='age >= 35 and city = "南京"', epsilon_micro=250000)
    data = encode(entry)
    assert decode(data) == entry
    assert encode(decode(data)) == data
    d = json.loads(data)
    assert d["v"] == 1 and d["type"] == "query"
    assert data == json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "matched" not in d  # optional fields are absent, never null
    assert entry.metadata().predicate == 'age >= 35 and city = "南京"'
    assert query().metadata().predicate == ""


def test_asker_entry_with_receipt_round_trips():
    signer = LedgerSigningKey.generate("hrss")
    answered = query("hrss")
    receipt = make_receipt(signer, answered.metadata(), 4, 5, b"\x11" * 32)
    entry = query("fund", role="asker", partner="hrss", query_id=answered.query_id,
                  matched=3, receipt=receipt)
    assert decode(encode(entry)) == entry


def test_admin_and_witness_entries_round_trip():
    admin = AdminEntry("dataset_registered", "flexible_workers", "cli", "2025-03-01T08:00:00Z",
                       {"version": 2, "rows": 480000, "source": "csv"})
    assert decode(encode(admin)) == admin
    head = LedgerSigningKey.generate("fund").sign_head(3, b"\x22" * 32, "2025-03-01T08:00:00Z")
    other = LedgerSigningKey.generate("fund").sign_head(3, b"\x33" * 32, "2025-03-01T08:00:00Z")
    for entry in (WitnessEntry("fund", "cosigned", head, "2025-03-01T08:00:01Z"),
                  WitnessEntry("fund", "fork", head, "2025-03-01T08:00:01Z", conflicting_head=other)):
        assert decode(encode(entry)) == entry


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(extra=1), "unknown field"),
    (lambda d: d.pop("purpose"), "lacks field"),
    (lambda d: d.update(v=2), "version"),
    (lambda d: d.update(type="payment"), "unknown entry type"),
    (lambda d: d.update(elements=-1), "elements"),
    (lambda d: d.update(elements=True), "elements"),
    (lambda d: d.update(outcome="maybe"), "outcome"),
    (lambda d: d.update(phase="admitted"), "admitted"),
    (lambda d: d.update(matched=3), "only the asker"),
    (lambda d: d.update(time="2025-03-01 08:00:00"), "RFC 3339"),
    (lambda d: d.update(time="2025-02-30T08:00:00Z"), "valid date"),
    (lambda d: d.update(authorisation_digest="ABC"), "hex"),
    (lambda d: d.update(predicate=""), "canonical encoding"),
])
def test_decode_refuses_malformed_entries(mutate, message):
    d = json.loads(encode(query()))
    mutate(d)
    data = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(CanonicalError, match=message):
        decode(data)


@pytest.mark.parametrize("data", [
    b'{"v": 1}',  # whitespace
    b'{"v":1,"a":1}'[::-1],  # not JSON
    b'{"b":1,"a":1}',  # key order
    b'{"a":1.0}',  # float
    b'{"a":1,"a":2}',  # duplicate key
    b'{"a":"\\u4e2d"}',  # escaped non-ASCII
    b'{"a":NaN}',
    b"[1]",
    "{\"a\":\"\xe4\"}".encode("latin-1"),  # not UTF-8
])
def test_parse_accepts_only_canonical_bytes(data):
    with pytest.raises(CanonicalError):
        parse(data)


def test_dump_refuses_floats_and_huge_integers():
    with pytest.raises(CanonicalError):
        dump({"a": 0.5})
    with pytest.raises(CanonicalError):
        dump({"a": 2**60})


@pytest.mark.parametrize("place", ["reason", "dataset", "purpose"])
@pytest.mark.parametrize("text", [
    ID, ID[:17] + "X", f"refused: {ID} not allowed", "身份证" + ID, ID[:6] + ID[8:17],  # 15-digit form
    "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in ID),  # full-width digits
])
def test_identifier_shaped_strings_never_reach_the_ledger(place, text):
    entry = query(**{place: text})
    with pytest.raises(IdentifierLeak) as exc:
        encode(entry)
    assert ID[:10] not in str(exc.value)  # the message names the field, not the value
    assert place in str(exc.value)


def test_identifier_guard_covers_admin_details_keys_values_and_integers():
    for details in ({"note": ID}, {"n": int(ID[:6] + ID[8:17])}):  # old 15-digit form
        with pytest.raises(IdentifierLeak):
            encode(AdminEntry("policy_changed", "flexible_workers", "cli",
                              "2025-03-01T08:00:00Z", details))


def test_clean_text_makes_free_text_fit_for_an_entry():
    text = clean_text(f"peer said:\n{ID} is unknown\x00" + "x" * 600, 500)
    assert ID not in text and "[redacted]" in text and "\n" not in text and len(text) == 500
    assert decode(encode(query(reason=text))).reason == text


def test_ordinary_numbers_pass_the_guard():
    entry = query(reason="asked 1000000 elements in 12345678901234 (14 digits) ns")
    assert decode(encode(entry)) == entry


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_hex_digests_never_trip_the_guard(seed):
    digest = hashlib.sha256(seed).hexdigest()
    entry = query(authorisation_digest=digest)
    assert decode(encode(entry)).authorisation_digest == digest

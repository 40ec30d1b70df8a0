"""The ledger signing key, signed tree heads, cosignatures and receipts."""
from __future__ import annotations

import copy
import pickle
from dataclasses import replace

import pytest

from node.ledger import LedgerPublicKey, LedgerSigningKey, Receipt, SignedTreeHead
from node.ledger.entries import (QueryMetadata,
    ReceiptError,
    ReceiptMismatch,
    ReceiptSignatureError,
    make_receipt,
    verify_receipt)
from node.ledger.signing import (Cosignature,
    KeyChanged,
    SignatureError,
    load_or_create_signer,
    partner_key,
    pin_partner_key)
from node.keys.secrets import KeyEncryptionKey

from .helpers import query

T = "2025-03-01T08:00:00Z"


def test_signing_key_is_created_once_sealed_and_reloaded(tmp_path, sqlite_engine):
    kek = KeyEncryptionKey.create(tmp_path / "node.kek")
    first = load_or_create_signer(sqlite_engine, kek, "hrss")
    again = load_or_create_signer(sqlite_engine, kek, "hrss")
    assert again.public_key == first.public_key
    with sqlite_engine.connect() as conn:
        blob = conn.exec_driver_sql("SELECT sealed_key FROM ledger_signing_keys").scalar_one()
    head = first.sign_head(1, b"\x01" * 32, T)
    assert head.signature not in blob and len(blob) > 32
    other_kek = KeyEncryptionKey(b"\x07" * 32)
    with pytest.raises(Exception, match="could not be opened"):
        load_or_create_signer(sqlite_engine, other_kek, "hrss")


def test_partner_keys_are_pinned_on_first_use(sqlite_engine):
    first, other = (LedgerSigningKey.generate("hrss").public_key for _ in range(2))
    assert partner_key(sqlite_engine, "hrss") is None
    assert pin_partner_key(sqlite_engine, "hrss", first) == first
    assert pin_partner_key(sqlite_engine, "hrss", first) == first
    with pytest.raises(KeyChanged):
        pin_partner_key(sqlite_engine, "hrss", other)
    assert partner_key(sqlite_engine, "hrss") == first


def test_secret_half_does_not_print_or_pickle():
    signer = LedgerSigningKey.generate("hrss")
    assert "redacted" in repr(signer) and "redacted" in str(signer)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(signer, protocol=protocol)
    with pytest.raises(TypeError):
        copy.deepcopy(signer)


def test_public_key_text_round_trip_and_refusals():
    key = LedgerSigningKey.generate("hrss").public_key
    assert LedgerPublicKey.from_text(key.text) == key and key.text.startswith("ed25519:")
    for bad in ("ed25519:zz", "rsa:" + "00" * 32, key.text.upper(), key.text[:-2]):
        with pytest.raises(SignatureError):
            LedgerPublicKey.from_text(bad)


def test_tree_head_signature_covers_every_field():
    signer = LedgerSigningKey.generate("hrss")
    head = signer.sign_head(10, b"\x05" * 32, T)
    head.verify(signer.public_key)
    assert SignedTreeHead.from_dict(head.to_dict()) == head
    for changed in (replace(head, size=11), replace(head, root=b"\x06" * 32),
                    replace(head, time="2025-03-01T08:00:01Z"), replace(head, node="fund"),
                    replace(head, signature=bytes([head.signature[0] ^ 1]) + head.signature[1:])):
        with pytest.raises(SignatureError):
            changed.verify(signer.public_key)
    with pytest.raises(SignatureError):
        head.verify(LedgerSigningKey.generate("hrss").public_key)


def test_cosignature_binds_witness_head_and_time():
    partner, witness = LedgerSigningKey.generate("fund"), LedgerSigningKey.generate("hrss")
    head = partner.sign_head(3, b"\x07" * 32, T)
    cos = witness.cosign(head, T)
    cos.verify(witness.public_key)
    assert Cosignature.from_dict(cos.to_dict()) == cos
    with pytest.raises(SignatureError):
        replace(cos, head=partner.sign_head(4, b"\x07" * 32, T)).verify(witness.public_key)
    with pytest.raises(SignatureError):  # a head signature is not a cosignature
        Cosignature("fund", T, head, head.signature).verify(partner.public_key)


def _metadata() -> QueryMetadata:
    return query("hrss").metadata()


def test_receipt_round_trip():
    signer = LedgerSigningKey.generate("hrss")
    meta = _metadata()
    receipt = make_receipt(signer, meta, 41, 42, b"\x09" * 32)
    wire = Receipt.from_bytes(receipt.to_bytes())
    assert wire == receipt
    verify_receipt(signer.public_key, wire, meta)


@pytest.mark.parametrize("field, value", [
    ("query_id", "00000000-0000-0000-0000-000000000000"), ("asker", "other"),
    ("answerer", "other"), ("kind", "count"), ("dataset", "graduate_roll"), ("version", 2),
    ("epoch", 9), ("purpose", "other_purpose"), ("elements", 11), ("outcome", "refused"),
    ("predicate", "birth_year >= 1990"),
])
def test_receipt_mismatch_names_the_field(field, value):
    signer = LedgerSigningKey.generate("hrss")
    meta = _metadata()
    receipt = make_receipt(signer, meta, 0, 1, b"\x09" * 32)
    with pytest.raises(ReceiptMismatch) as exc:
        verify_receipt(signer.public_key, receipt, replace(meta, **{field: value}))
    assert exc.value.field == field


def test_receipt_from_another_key_or_tampered_is_refused():
    signer = LedgerSigningKey.generate("hrss")
    meta = _metadata()
    receipt = make_receipt(signer, meta, 0, 1, b"\x09" * 32)
    with pytest.raises(ReceiptSignatureError):
        verify_receipt(LedgerSigningKey.generate("hrss").public_key, receipt, meta)
    for forged in (replace(receipt, index=0, tree_size=2), replace(receipt, root=b"\x08" * 32),
                   replace(receipt, query=replace(meta, elements=99))):
        with pytest.raises(ReceiptSignatureError):
            verify_receipt(signer.public_key, forged, meta)
    with pytest.raises(ReceiptError, match="malformed"):
        Receipt.from_bytes(receipt.to_bytes()[:-2])
    with pytest.raises(ValueError, match="only the answering node"):
        make_receipt(LedgerSigningKey.generate("fund"), meta, 0, 1, b"\x09" * 32)

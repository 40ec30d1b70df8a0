"""Key certifications (anchor.py) check by check, and the auditor's older views, in process."""
from __future__ import annotations

import json
from concurrent import futures
from datetime import datetime, timezone

import grpc
import pytest

from node.ledger.anchor import (CertificationError,
    KeyCertification,
    KeyStatement,
    certify,
    load_roots,
    verify_certification)
from node.ledger.canonical import rfc3339
from node.ledger.audit import KnownHeads, Trust, verify
from node.ledger.grpc_service import GrpcLogSource, LedgerService
from node.ledger.http import HttpLogSource, create_app, new_token
from node.ledger.sources import ExportSource, LedgerSource, write_export
from node.keys.pki import init_ca, issue_node_cert
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as pb_grpc

from .helpers import certified, fill, make_ledger
from .test_audit import serving

HEAD_TIME = "2025-03-01T08:00:00Z"  # helpers.FixedClock


@pytest.fixture
def ledger(sqlite_engine):
    ledger = make_ledger(sqlite_engine)
    fill(ledger, 12)
    return ledger


@pytest.fixture
def roots(tmp_path):
    init_ca(tmp_path / "pki")
    return tuple(load_roots(tmp_path / "pki" / "ca.pem"))


def check(certification, roots, ledger, **kw):
    args = dict(node=ledger.node_id, key=ledger.public_key, at=HEAD_TIME) | kw
    return verify_certification(certification, roots, **args)


def test_a_certification_holds_and_survives_its_json_form(ledger, roots, tmp_path):
    c = certified(ledger, tmp_path / "pki")
    again = KeyCertification.from_json(c.to_json())
    assert again == c and check(again, roots, ledger).public_key == ledger.public_key


def test_a_certification_from_another_federation_fails(ledger, roots, tmp_path):
    c = certified(ledger, tmp_path / "other-pki")
    with pytest.raises(CertificationError, match="does not chain to the given CA"):
        check(c, roots, ledger)


def test_a_statement_signed_with_another_nodes_certificate_fails(ledger, roots, tmp_path):
    issue_node_cert(tmp_path / "pki", "fund", tmp_path / "fund")
    statement = KeyStatement("hrss", ledger.public_key, "2025-01-01T00:00:00Z",
                             "2026-01-01T00:00:00Z", rfc3339(datetime.now(timezone.utc)))
    with pytest.raises(CertificationError, match="does not name node 'hrss'"):
        certify(statement, (tmp_path / "fund" / "fund.pem").read_bytes(),
                (tmp_path / "fund" / "fund.key").read_bytes())
    fund = certified(make_ledger(ledger.engine, "fund"), tmp_path / "pki")
    relabelled = KeyCertification(statement, fund.signature, fund.chain)
    with pytest.raises(CertificationError, match="signed with the certificate of 'fund'"):
        check(relabelled, roots, ledger)


def test_an_altered_statement_fails_its_signature(ledger, roots, tmp_path):
    c = certified(ledger, tmp_path / "pki")
    d = c.to_dict()
    d["statement"]["not_after"] = "2099-01-01T00:00:00Z"
    with pytest.raises(CertificationError, match="signature does not verify"):
        check(KeyCertification.from_dict(d), roots, ledger)


def test_a_certification_not_yet_valid_at_the_head_fails(ledger, roots, tmp_path):
    c = certified(ledger, tmp_path / "pki", not_before="2025-06-01T00:00:00Z")
    with pytest.raises(CertificationError, match="valid only from 2025-06-01"):
        check(c, roots, ledger)


def test_malformed_certifications_are_refused_with_a_reason():
    for text in ("[]", "{}", json.dumps({"v": 1, "statement": {}, "signature": "00", "chain": []})):
        with pytest.raises(CertificationError):
            KeyCertification.from_json(text)


def test_grpc_and_http_sources_publish_and_are_checked(ledger, roots, tmp_path):
    trust = Trust(roots)
    token, digest = new_token()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_LedgerServicer_to_server(LedgerService(ledger, lambda ctx: "fund"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
                serving(create_app(ledger.engine, ledger, [digest])) as url:
            sources = {"grpc": lambda: GrpcLogSource(channel, "hrss"),
                       "http": lambda: HttpLogSource(url, token)}
            for name, make in sources.items():  # not certified yet
                verdict = verify(make(), KnownHeads(tmp_path / f"a-{name}"), trust=trust)
                assert [f.kind for f in verdict.findings] == ["key_not_certified"], name
                assert "carries no certification" in str(verdict)
            certified(ledger, tmp_path / "pki")
            for name, make in sources.items():
                verdict = verify(make(), KnownHeads(tmp_path / f"b-{name}"), trust=trust)
                assert verdict.ok, (name, str(verdict))
                assert "certified for hrss by the given CA" in str(verdict)
    finally:
        server.stop(None)


def test_without_an_anchor_the_verdict_says_trust_on_first_use(ledger, tmp_path):
    verdict = verify(LedgerSource(ledger), KnownHeads(tmp_path / "a"))
    assert verdict.ok and "trust on first use" in str(verdict)


def _export(ledger, path):
    with open(path, "wb") as out:
        write_export(ledger, out)
    return ExportSource(path)


def test_an_older_export_needs_the_leaves_of_a_longer_verified_log(ledger, tmp_path):
    older = _export(ledger, tmp_path / "older.jsonl")
    fill(ledger, 5)
    known = KnownHeads(tmp_path / "auditor")
    # the newer head is known only from a range check: no leaves to check the prefix
    assert verify(LedgerSource(ledger), known, start=0, end=3).ok
    verdict = verify(older, known)
    assert [(f.kind, f.where) for f in verdict.findings] == [("unchecked", "tree size 12")]
    assert verify(LedgerSource(ledger), known).ok  # now in full
    verdict = verify(older, known)
    assert verdict.ok and verdict.older_than.size == 17, str(verdict)


def test_a_rotation_in_a_range_checked_log_is_followed(ledger, tmp_path):
    """The rotation entry is found and proved by inclusion when only a range is checked."""
    from node.ledger import AdminEntry
    from node.ledger.anchor import ROTATED, rotation_details
    from node.ledger.signing import LedgerSigningKey
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    new = LedgerSigningKey.generate("hrss")
    cert = certified(make_ledger(ledger.engine), tmp_path / "pki")  # any certification will do
    with ledger.engine.begin() as conn:
        ledger.append(conn, AdminEntry(ROTATED, "node", "cli", HEAD_TIME,
                                       rotation_details(ledger.signer, new.public_key, cert)))
    ledger.signer = new
    fill(ledger, 2)
    verdict = verify(LedgerSource(ledger), known, start=13, end=15)
    assert verdict.ok, str(verdict)
    assert "handed over by the pinned key" in str(verdict) and known.key("hrss") == new.public_key
    forged = LedgerSigningKey.generate("hrss")
    ledger.signer = forged  # a key nobody handed over to
    fill(ledger, 1)
    verdict = verify(LedgerSource(ledger), known, start=15, end=16)
    assert verdict.findings[0].kind == "key_changed"
    assert "records no rotation from it" in str(verdict)


def test_a_head_signed_with_an_earlier_key_is_never_served_as_current(ledger):
    """A process that signed heads through a rotation: after a restart the latest stored
    head is the old key's; the node publishes a fresh one under its current key."""
    from node.ledger.signing import LedgerSigningKey
    ledger.sign_head()
    new = LedgerSigningKey.generate("hrss")
    new.earlier = (ledger.public_key,)
    ledger.signer = new
    head = LedgerSource(ledger).tree_head()
    head.verify(ledger.public_key)
    assert ledger.latest_head() == head


def test_a_partner_pin_moves_only_along_a_certified_rotation(ledger, roots, tmp_path):
    """fund pinned hrss's key; hrss rotates. The pin follows only a certification of the
    new key that names the pinned key as its predecessor."""
    from node.ledger.anchor import follow_partner_rotation
    from node.ledger.signing import KeyChanged, LedgerSigningKey, partner_key, pin_partner_key
    fund_engine = ledger.engine  # fund's pin table (one database serves both in this test)
    old = ledger.public_key
    pin_partner_key(fund_engine, "hrss", old)
    rotated = make_ledger(ledger.engine)
    now = rfc3339(datetime.now(timezone.utc))
    unlinked = certified(rotated, tmp_path / "pki")  # certified, but not as old's successor
    with fund_engine.begin() as conn, pytest.raises(CertificationError, match="successor"):
        follow_partner_rotation(conn, "hrss", rotated.public_key, unlinked, roots, now=now)
    linked = certify(KeyStatement("hrss", rotated.public_key, "2025-01-01T00:00:00Z",
                                  unlinked.statement.not_after, now, previous_key=old),
                     (tmp_path / "pki" / "nodes" / "hrss.pem").read_bytes(),
                     (tmp_path / "pki" / "nodes" / "hrss.key").read_bytes())
    with pytest.raises(KeyChanged):
        pin_partner_key(fund_engine, "hrss", rotated.public_key)
    with fund_engine.begin() as conn:
        assert follow_partner_rotation(conn, "hrss", rotated.public_key, linked, roots, now=now) == old
    assert partner_key(fund_engine, "hrss") == rotated.public_key
    assert pin_partner_key(fund_engine, "hrss", rotated.public_key) == rotated.public_key
    with pytest.raises(KeyChanged):  # and never back, nor to any other key
        pin_partner_key(fund_engine, "hrss", LedgerSigningKey.generate("hrss").public_key)

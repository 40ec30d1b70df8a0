"""Auditors between real nodes: verify over gRPC and HTTPS, cross-check, export, tamper, admin API."""
from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from node.ledger.http import new_token
from node.keys.pki import issue_node_cert

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    s = fx.build(root, registry_size=400, applicants=80)
    auditor_token, auditor_digest = new_token()
    admin_token, admin_digest = new_token()
    (root / "auditor.token").write_text(auditor_token)
    http = {"http": {"listen": "127.0.0.1:0", "auditor_tokens": [auditor_digest],
                     "admin_tokens": [admin_digest]},
            "auditors": [{"id": "audit-office"}]}
    s.fed.add_node("hrss", partners=[{"id": "fund"}], extra=http, datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}])
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra=http)
    issue_node_cert(s.fed.pki, "audit-office", root / "auditor")
    s.auditor = ["--cert", str(root / "auditor" / "audit-office.pem"), "--key",
                 str(root / "auditor" / "audit-office.key"), "--ca", str(s.fed.pki / "ca.pem")]
    s.token_file, s.admin_token, s.root = root / "auditor.token", admin_token, root
    fx.start(s)
    s.fed.start("fund")
    fx.register(s)
    fx.query(s, root / "q1.csv", check=True)
    fx.query(s, root / "q2.csv", "--select", "intersection", check=True)
    yield s
    s.fed.close()


def grpc_src(s, node):
    return f"grpc://{node}@{s.fed.nodes[node].address}"


def audit(s, *args, state="state"):
    return s.fed.cli("audit", *args, "--state-dir", str(s.root / state), check=False) \
        if args[0] == "verify" else s.fed.cli("audit", *args, check=False)


def test_verify_over_grpc_as_a_configured_auditor(audited):
    r = audit(audited, "verify", grpc_src(audited, "hrss"), *audited.auditor)
    assert r.returncode == 0, r.stdout + r.stderr
    # a second run checks consistency with the heads remembered from the first
    r = audit(audited, "verify", grpc_src(audited, "hrss"), *audited.auditor)
    assert r.returncode == 0, r.stdout + r.stderr


def test_verify_over_https_with_an_auditor_token(audited, tmp_path):
    url = f"https://127.0.0.1:{audited.fed.nodes['hrss'].http_port}"
    r = audit(audited, "verify", url, "--token-file", str(audited.token_file),
              "--ca", str(audited.fed.pki / "ca.pem"), state="https-state")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.token"
    bad.write_text("not-a-token")
    r = audit(audited, "verify", url, "--token-file", str(bad), "--ca", str(audited.fed.pki / "ca.pem"),
              state="bad-state")
    assert r.returncode == 1 and "token was refused" in r.stdout


def test_cross_check_matches_every_query_and_receipt(audited):
    r = audit(audited, "cross-check", "--asker", grpc_src(audited, "fund"),
              "--answerer", grpc_src(audited, "hrss"), *audited.auditor)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 queries, OK" in r.stdout


def test_cross_check_reports_a_query_missing_on_one_side(audited, tmp_path):
    old = tmp_path / "hrss-before.jsonl"
    audited.fed.cli("audit", "export", "--config", audited.cfg("hrss"), "--out", str(old))
    fx.query(audited, tmp_path / "q3.csv", check=True)   # recorded by both, but not in `old`
    r = audit(audited, "cross-check", "--asker", grpc_src(audited, "fund"),
              "--answerer", f"export:{old}", *audited.auditor)
    assert r.returncode == 1
    assert "missing_on_answerer" in r.stdout or "missing on" in r.stdout


def test_admin_api_shows_policy_only_with_an_admin_token(audited):
    base = f"https://127.0.0.1:{audited.fed.nodes['hrss'].http_port}"
    import ssl
    with httpx.Client(base_url=base, verify=ssl.create_default_context(cafile=str(audited.fed.pki / "ca.pem"))) as client:
        assert client.get("/v1/admin/policy").status_code == 401
        assert client.get("/v1/admin/policy", headers={
            "Authorization": f"Bearer {audited.token_file.read_text()}"}).status_code == 403  # wrong role
        r = client.get("/v1/admin/policy", headers={"Authorization": f"Bearer {audited.admin_token}"})
    assert r.status_code == 200
    (policy,) = r.json()
    assert policy["name"] == "flexible_workers" and policy["grants"][0]["partner"] == "fund"


def test_export_verifies_offline_and_holds_admin_actions(audited, tmp_path):
    out = tmp_path / "hrss.jsonl"
    audited.fed.cli("audit", "export", "--config", audited.cfg("hrss"), "--out", str(out))
    r = audit(audited, "verify", f"export:{out}", state="export-state")
    assert r.returncode == 0, r.stdout
    import base64
    from node.ledger import decode
    entries = [decode(base64.b64decode(json.loads(line)["e"])) for line in out.read_text().splitlines()[1:]]
    actions = [getattr(e, "action", None) for e in entries]
    assert "policy_changed" in actions and "dataset_registered" in actions
    kinds = {(e.role, e.phase, e.outcome) for e in entries if getattr(e, "type", "") == "query"}
    assert ("answerer", "admitted", "admitted") in kinds and ("answerer", "completed", "answered") in kinds


def test_tampering_with_the_database_is_named(audited, tmp_path):
    audited.fed.stop("hrss")
    db = audited.fed.nodes["hrss"].directory / "node.db"
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER IF EXISTS ledger_entries_no_update")
    triggers = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='ledger_entries'")]
    for t in triggers:
        con.execute(f"DROP TRIGGER {t}")
    con.execute("UPDATE ledger_entries SET entry = replace(entry, 'flexible-worker-deposit', 'flexible-worker-depositX') WHERE idx = 3")
    con.commit()
    con.close()
    r = audited.fed.cli("audit", "check", "--config", audited.cfg("hrss"), check=False)
    assert r.returncode == 1 and "entry 3" in r.stdout

"""Ledger keys anchored in the federation PKI, and archived exports, against real nodes.

An auditor on first contact is handed files prepared by an attacker (re-signed with a
new key, with another member's certified key, with an expired certification), meets a
rotated key, and is handed older exports of a log it has seen grow, genuine or forked.
Exports come from `shuqiao audit export`; the attacker's edits are made on those files.
"""
from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from node.ledger import canonical
from node.ledger.anchor import KeyStatement, certify, fingerprint
from node.ledger.http import new_token
from node.ledger.signing import LedgerSigningKey, load_or_create_signer
from node.keys.pki import issue_node_cert, load_tls_identity
from node.keys.secrets import KeyEncryptionKey
from protocols import merkle

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("anchor")
    s = fx.build(root, registry_size=300, applicants=60)
    token, digest = new_token()
    (root / "auditor.token").write_text(token)
    http = {"http": {"listen": "127.0.0.1:0", "auditor_tokens": [digest]},
            "auditors": [{"id": "audit-office"}]}
    s.fed.add_node("hrss", partners=[{"id": "fund"}], extra=http, datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}])
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra=http)
    issue_node_cert(s.fed.pki, "audit-office", root / "auditor")
    s.ca = str(s.fed.pki / "ca.pem")
    s.auditor = ["--cert", str(root / "auditor" / "audit-office.pem"), "--key",
                 str(root / "auditor" / "audit-office.key"), "--ca", s.ca]
    s.token_file, s.root = root / "auditor.token", root
    fx.start(s)
    s.fed.start("fund")
    fx.register(s)
    fx.query(s, root / "q1.csv", check=True)
    yield s
    s.fed.close()


# -- helpers: the auditor's commands and the attacker's edits ------------------------------

def verify(s, source, state, *args):
    return s.fed.cli("audit", "verify", source, "--state-dir", str(s.root / state), *args,
                     check=False)


def export(s, name, node="hrss"):
    path = s.root / f"{name}.jsonl"
    s.fed.cli("audit", "export", "--config", s.cfg(node), "--out", str(path))
    return path


def grpc_source(s, node="hrss"):
    return f"grpc://{node}@{s.fed.nodes[node].address}"


def https_source(s, node="hrss"):
    return f"https://127.0.0.1:{s.fed.nodes[node].http_port}?token-file={s.token_file}"


def read(path):
    header, *entries = (json.loads(line) for line in path.read_bytes().splitlines())
    return header, entries


def write(path, header, entries):
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in [header, *entries]))
    return path


def node_file(s, node, *parts):
    return s.fed.nodes[node].directory.joinpath(*parts)


def ledger_signer(s, node) -> LedgerSigningKey:
    """The node's own ledger key, as its operator (or a thief of its disk and KEK) has it."""
    engine = sa.create_engine(f"sqlite:///{node_file(s, node, 'node.db')}")
    try:
        return load_or_create_signer(engine, KeyEncryptionKey.load(node_file(s, node, "keys", "node.kek")), node)
    finally:
        engine.dispose()


def resign(header, entries, signer: LedgerSigningKey):
    """Recompute the root over the (edited) entries and sign a head for them."""
    for e in entries:
        e["h"] = merkle.hash_leaf(base64.b64decode(e["e"])).hex()
    leaves = [bytes.fromhex(e["h"]) for e in entries]
    head = signer.sign_head(len(entries), merkle.root(leaves), header["head"]["time"])
    header["head"], header["public_key"] = head.to_dict(), signer.public_key.text
    return header, entries


def edit_entry(entries, index, **changes):
    d = canonical.parse(base64.b64decode(entries[index]["e"]))
    d.update(changes)
    entries[index]["e"] = base64.b64encode(canonical.dump(d)).decode()


# -- first contact: whose key is this? ------------------------------------------------------

def test_forged_resigned_export_fails_on_first_contact_with_the_ca(fed):
    header, entries = read(export(fed, "genuine"))
    edit_entry(entries, 3, elements=1)
    forger = LedgerSigningKey.generate("hrss")
    forged = write(fed.root / "forged.jsonl", *resign(header, entries, forger))
    r = verify(fed, f"export:{forged}", "first-contact", "--ca", fed.ca)
    assert r.returncode == 1, r.stdout
    assert "not certified for node hrss" in r.stdout
    assert f"but the heads are signed with {forger.public_key.text}" in r.stdout
    header.pop("certification")  # the forger drops the genuine certification instead
    write(forged, header, entries)
    r = verify(fed, f"export:{forged}", "first-contact-2", "--ca", fed.ca)
    assert r.returncode == 1 and "carries no certification of its ledger key" in r.stdout


def test_export_signed_with_another_members_certified_key_fails(fed):
    fund_header, _ = read(export(fed, "fund", node="fund"))
    header, entries = read(export(fed, "genuine-2"))
    edit_entry(entries, 2, purpose="housing-loan")
    kek = KeyEncryptionKey.load(node_file(fed, "fund", "keys", "node.kek"))
    posing = LedgerSigningKey.unseal(kek, ledger_signer(fed, "fund").seal(kek), "hrss")
    # fund's own certified key, signing heads that name hrss
    header, entries = resign(header, entries, posing)
    header["certification"] = fund_header["certification"]  # genuinely fund's, valid
    forged = write(fed.root / "as-fund.jsonl", header, entries)
    r = verify(fed, f"export:{forged}", "other-member", "--ca", fed.ca)
    assert r.returncode == 1, r.stdout
    assert "it is certified for node 'fund', not 'hrss'" in r.stdout
    # relabelled as fund's log, it is fund's key and certification, but not hrss's log
    r = verify(fed, f"export:{forged}", "other-member-2", "--ca", fed.ca, "--node", "fund")
    assert r.returncode == 1 and "not 'fund'" in r.stdout


def _statement_signed_by_hrss(fed, **validity):
    kek = KeyEncryptionKey.load(node_file(fed, "hrss", "keys", "node.kek"))
    cert_pem, key_pem = load_tls_identity(node_file(fed, "hrss", "tls", "hrss.pem"),
                                          node_file(fed, "hrss", "tls", "hrss.key"), kek=kek)
    now = datetime.now(timezone.utc)
    statement = KeyStatement("hrss", ledger_signer(fed, "hrss").public_key,
                             canonical.rfc3339(now - timedelta(days=400)),
                             canonical.rfc3339(now - timedelta(days=1)), canonical.rfc3339(now))
    return certify(statement, cert_pem, key_pem.expose())


def test_expired_certification_fails(fed):
    header, entries = read(export(fed, "genuine-3"))
    header["certification"] = _statement_signed_by_hrss(fed).to_dict()
    path = write(fed.root / "expired.jsonl", header, entries)
    r = verify(fed, f"export:{path}", "expired", "--ca", fed.ca)
    assert r.returncode == 1, r.stdout
    assert "the certification expired at" in r.stdout and "before the head's time" in r.stdout


def test_cross_check_with_the_ca_refuses_an_answerer_export_with_a_forged_key(fed):
    header, entries = read(export(fed, "genuine-cc"))
    forged = write(fed.root / "forged-cc.jsonl",
                   *resign(header, entries, LedgerSigningKey.generate("hrss")))
    args = ["audit", "cross-check", "--asker", grpc_source(fed, "fund"), *fed.auditor]
    r = fed.fed.cli(*args, "--answerer", f"export:{fed.root / 'genuine-cc.jsonl'}", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = fed.fed.cli(*args, "--answerer", f"export:{forged}", check=False)
    assert r.returncode == 1 and "the ledger key is not certified for its node" in r.stdout, r.stdout


def test_expect_key_mismatch_fails(fed):
    path = export(fed, "genuine-4")
    other = LedgerSigningKey.generate("hrss").public_key.text
    r = verify(fed, f"export:{path}", "expect", "--expect-key", other)
    assert r.returncode == 1 and f"but {other} was expected (--expect-key)" in r.stdout
    genuine = ledger_signer(fed, "hrss").public_key
    r = verify(fed, f"export:{path}", "expect-2", "--expect-key", genuine.text)
    assert r.returncode == 0, r.stdout
    shown = fed.fed.cli("ledger", "key", "--config", fed.cfg("hrss")).stdout.split()
    assert shown[:2] == [genuine.text, fingerprint(genuine)]
    assert verify(fed, f"export:{path}", "expect-3", "--expect-key", shown[1]).returncode == 0
    r = verify(fed, f"export:{path}", "expect-4", "--expect-key", "sha256:" + "0" * 64)
    assert r.returncode == 1 and "was expected (--expect-key)" in r.stdout


def test_genuine_sources_pass_with_the_ca_over_grpc_https_and_export(fed):
    for source, extra in ((grpc_source(fed), fed.auditor),
                          (https_source(fed), ["--ca", fed.ca]),
                          (f"export:{export(fed, 'genuine-5')}", ["--ca", fed.ca])):
        r = verify(fed, source, f"genuine-{source[:4]}", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "certified for hrss by the given CA until" in r.stdout


def test_live_sources_refuse_an_expired_certification(fed):
    """The node itself serves an expired certification: gRPC and HTTPS both refuse it."""
    con = sqlite3.connect(node_file(fed, "hrss", "node.db"))
    expired = _statement_signed_by_hrss(fed)
    con.execute("INSERT INTO ledger_key_certifications (node, public_key, certification, not_after,"
                " created_at) VALUES (?, ?, ?, ?, ?)", ("hrss", expired.statement.public_key.text,
                                                        expired.to_json(), expired.statement.not_after,
                                                        datetime.now(timezone.utc).isoformat()))
    con.commit()
    con.close()
    try:
        for source, extra in ((grpc_source(fed), fed.auditor), (https_source(fed), ["--ca", fed.ca])):
            r = verify(fed, source, f"live-expired-{source[:4]}", *extra)
            assert r.returncode == 1, r.stdout + r.stderr
            assert "the certification expired at" in r.stdout
    finally:  # a restart certifies afresh
        fed.fed.stop("hrss")
        fx.start(fed)
    r = verify(fed, grpc_source(fed), "live-renewed", *fed.auditor)
    assert r.returncode == 0, r.stdout + r.stderr


# -- archived exports ---------------------------------------------------------------------------

def test_archived_prefix_passes_and_is_reported_as_an_older_view(fed):
    older = export(fed, "archive-older")
    fx.query(fed, fed.root / "q-archive.csv", check=True)
    newer = export(fed, "archive-newer")
    n, m = read(older)[0]["head"]["size"], read(newer)[0]["head"]["size"]
    assert n < m
    assert verify(fed, f"export:{newer}", "archive", "--ca", fed.ca).returncode == 0
    r = verify(fed, f"export:{older}", "archive", "--ca", fed.ca)
    assert r.returncode == 0, r.stdout
    assert f"ledger of {n} entries" in r.stdout and "an older, consistent view" in r.stdout
    assert f"size {m}" in r.stdout
    # after the node itself was verified live, the same archive is still a prefix
    assert verify(fed, grpc_source(fed), "archive-live", *fed.auditor).returncode == 0
    r = verify(fed, f"export:{older}", "archive-live", "--ca", fed.ca)
    assert r.returncode == 0 and "an older, consistent view" in r.stdout, r.stdout


def _forked(fed, path, name):
    header, entries = read(path)
    edit_entry(entries, len(entries) - 2, reason="rewritten")
    forked = write(fed.root / name, *resign(header, entries, ledger_signer(fed, "hrss")))
    return forked, read(forked)[0]["head"]["root"]


def test_forked_prefix_of_a_known_size_fails_naming_both_roots(fed):
    genuine = export(fed, "fork-same-size")
    assert verify(fed, f"export:{genuine}", "fork-same", "--ca", fed.ca).returncode == 0
    forked, forked_root = _forked(fed, genuine, "fork-same.jsonl")
    r = verify(fed, f"export:{forked}", "fork-same", "--ca", fed.ca)
    assert r.returncode == 1, r.stdout
    assert forked_root in r.stdout and read(genuine)[0]["head"]["root"] in r.stdout


def test_forked_prefix_inconsistent_with_the_newest_head_fails_naming_both_roots(fed):
    older = export(fed, "fork-older")
    fx.query(fed, fed.root / "q-fork.csv", check=True)
    newer = export(fed, "fork-newer")
    assert verify(fed, f"export:{newer}", "fork-prefix", "--ca", fed.ca).returncode == 0
    forked, forked_root = _forked(fed, older, "fork-prefix.jsonl")
    r = verify(fed, f"export:{forked}", "fork-prefix", "--ca", fed.ca)
    assert r.returncode == 1, r.stdout
    assert forked_root in r.stdout and read(older)[0]["head"]["root"] in r.stdout
    assert read(newer)[0]["head"]["root"] in r.stdout


def test_a_live_node_presenting_a_smaller_head_is_a_rollback(fed):
    state = "rollback"
    assert verify(fed, grpc_source(fed), state, *fed.auditor).returncode == 0
    backup = fed.root / "hrss-backup"
    backup.mkdir()
    fed.fed.stop("hrss")
    db_files = ("node.db", "node.db-wal", "node.db-shm")
    for name in db_files:
        if node_file(fed, "hrss", name).exists():
            shutil.copy(node_file(fed, "hrss", name), backup / name)
    fx.start(fed)
    fx.query(fed, fed.root / "q-rollback.csv", check=True)
    assert verify(fed, grpc_source(fed), state, *fed.auditor).returncode == 0
    fed.fed.stop("hrss")
    for name in db_files:  # restored from the older copy
        node_file(fed, "hrss", name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy(backup / name, node_file(fed, "hrss", name))
    fx.start(fed)
    r = verify(fed, grpc_source(fed), state, *fed.auditor)
    assert r.returncode == 1 and "the log shrank" in r.stdout, r.stdout


# -- rotation (last: it changes hrss's key for the rest of the module) ------------------------

def test_rotated_certified_key_passes_and_the_rotation_is_ledgered(fed):
    state = "rotation"
    archive = export(fed, "before-rotation")
    assert verify(fed, grpc_source(fed), state, *fed.auditor).returncode == 0
    old = ledger_signer(fed, "hrss").public_key
    fed.fed.stop("hrss")
    r = fed.fed.cli("ledger", "rotate-key", "--config", fed.cfg("hrss"), check=False)
    assert r.returncode == 0, r.stderr
    fx.start(fed)
    new = ledger_signer(fed, "hrss").public_key
    assert new != old
    r = verify(fed, grpc_source(fed), state, *fed.auditor)
    assert r.returncode == 0, r.stdout
    assert "ledger key rotated, handed over by the pinned key" in r.stdout
    header, entries = read(export(fed, "rotated"))
    assert header["public_key"] == new.text
    rotations = [json.loads(base64.b64decode(e["e"])) for e in entries]
    rotations = [d for d in rotations if d.get("action") == "ledger_key_rotated"]
    assert [(d["details"]["old_key"], d["details"]["new_key"]) for d in rotations] == [(old.text, new.text)]
    # a fresh auditor anchors the new key in the CA; the node's own check still holds
    assert verify(fed, f"export:{fed.root / 'rotated.jsonl'}", "rotation-fresh", "--ca", fed.ca).returncode == 0
    r = fed.fed.cli("audit", "check", "--config", fed.cfg("hrss"), check=False)
    assert r.returncode == 0, r.stdout
    # receipts signed with the old key still check: the rotation names it (queries the
    # rollback test took from hrss's ledger are reported, but not as receipt problems)
    r = fed.fed.cli("audit", "cross-check", "--asker", grpc_source(fed, "fund"), "--answerer",
                    grpc_source(fed), *fed.auditor, check=False)
    assert "queries" in r.stdout and "receipt_invalid" not in r.stdout, r.stdout
    # an archive signed with the old key stays an older, consistent view, also for an
    # auditor who first met the node after the rotation (the log names the old key)
    for auditor in (state, "rotation-fresh"):
        r = verify(fed, f"export:{archive}", auditor, "--ca", fed.ca)
        assert r.returncode == 0 and "an older, consistent view" in r.stdout, r.stdout


def test_a_partner_follows_a_certified_rotation_of_its_pinned_key(fed):
    """After hrss rotated, fund (which pinned the old key) still gets answers but cannot
    check hrss's receipts, until it follows the rotation hrss's certification vouches for."""
    r = fx.query(fed, fed.root / "q-before-follow.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fed.fed.cli("ledger", "follow-rotation", "--config", fed.cfg("fund"), "--partner", "hrss",
                    check=False)
    assert r.returncode == 0 and "pinned ledger key moved" in r.stdout, r.stdout + r.stderr
    r = fx.query(fed, fed.root / "q-after-follow.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    r = fed.fed.cli("audit", "cross-check", "--asker", grpc_source(fed, "fund"), "--answerer",
                    grpc_source(fed), *fed.auditor, check=False)
    assert r.stdout.count("receipt_missing") == 1, r.stdout  # only the query before following
    again = fed.fed.cli("ledger", "follow-rotation", "--config", fed.cfg("fund"), "--partner",
                        "hrss", check=False)
    assert again.returncode == 1 and "nothing to follow" in again.stderr


def test_a_key_swapped_without_a_ledgered_rotation_is_refused(fed):
    """A node restarted with another key is certified again by its TLS identity, but an
    auditor who pinned the key before sees no handover in the log."""
    state = "swap"
    assert verify(fed, grpc_source(fed), state, *fed.auditor).returncode == 0
    fed.fed.stop("hrss")
    con = sqlite3.connect(node_file(fed, "hrss", "node.db"))
    (generation,) = con.execute("SELECT max(generation) FROM ledger_signing_keys").fetchone()
    kek = KeyEncryptionKey.load(node_file(fed, "hrss", "keys", "node.kek"))
    swapped = LedgerSigningKey.generate("hrss")
    con.execute("INSERT INTO ledger_signing_keys (node, generation, public_key, sealed_key, created_at)"
                " VALUES (?, ?, ?, ?, ?)", ("hrss", generation + 1, swapped.public_key.text,
                                            swapped.seal(kek), datetime.now(timezone.utc).isoformat()))
    con.commit()
    con.close()
    fx.start(fed)
    r = verify(fed, grpc_source(fed), state, *fed.auditor)
    assert r.returncode == 1, r.stdout
    assert "the log records no rotation from it" in r.stdout

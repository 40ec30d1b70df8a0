"""Backup while serving, restore into a fresh directory, serve again — and the attacks on it.

Real `shuqiao serve` processes and the CLI in subprocesses. The agency node (hrss) answers
the fund centre, is backed up while a query runs against it, and is then lost; its backup
is restored under a new config into a new directory, started, and must give the fund
centre the same answers with the same keys, and a ledger that verifies and extends the
backed-up one. A backup altered after the fact, restored without its node key or with
another, checked against another federation's CA, or restored into a running node's
directory is refused, leaving nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from node.devtools.localnet import LocalNode
from node.keys.pki import init_ca
from node.keys.secrets import KeyEncryptionKey
from node.ledger.signing import LedgerSigningKey
from node.core.version import software_version
from node.runtime.backup_manifest import CONTEXT
from node.ledger import canonical
from protocols import merkle

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("backup")
    s = fx.build(root, registry_size=400, applicants=60)
    s.root = root
    fx.start(s)
    fx.register(s)
    fx.query(s, root / "before.csv", check=True)
    # a query runs while the backup is taken: the snapshot is of one instant, either side of it
    running = subprocess.Popen([sys.executable, "-m", "node", "query", "membership", "--config",
                                s.cfg("fund"), "--partner", "hrss", "--dataset", "flexible_workers",
                                "--purpose", fx.PURPOSE, "--input", str(s.applicants_csv),
                                "--id-column", "身份证号", "--out", str(root / "during.csv")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s.full = backup(s, "full", "--include-kek")
    assert running.wait(120) == 0
    s.nokek = backup(s, "nokek")
    yield s
    s.fed.close()


def backup(s, name: str, *extra: str) -> Path:
    out = s.root / "backups" / name
    out.parent.mkdir(exist_ok=True)
    r = s.fed.cli("backup", "--config", s.cfg("hrss"), "--out", str(out), *extra, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def fresh_config(s, name: str, *, ca: Path | None = None) -> Path:
    """hrss's config, moved to a new directory that is its data directory."""
    directory = s.root / name
    directory.mkdir()
    config = tomllib.loads(Path(s.cfg("hrss")).read_text())
    if ca is not None:
        config["tls"]["ca"] = str(ca)
    path = directory / "node.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def restore(s, config: Path, source: Path, *extra: str) -> subprocess.CompletedProcess:
    return s.fed.cli("restore", "--config", str(config), "--from", str(source), *extra, check=False)


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    text = (r.stdout + r.stderr).strip()
    assert r.returncode != 0, text
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    for word in words:
        assert word in text, text
    return text


def left_behind(config: Path) -> list[str]:
    return sorted(str(p.relative_to(config.parent)) for p in config.parent.rglob("*")
                  if p.is_file() and p != config)


def ledger_entries(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [json.loads(bytes(e)) for (e,) in conn.execute("SELECT entry FROM ledger_entries ORDER BY idx")]


def copy_backup(s, source: Path, name: str) -> Path:
    target = s.root / "backups" / name
    shutil.copytree(source, target)
    return target


def resign(path: Path, kek: KeyEncryptionKey) -> None:
    """What an attacker holding the backup and its KEK does after editing a file: new
    digests in the manifest, signed again with the node's own ledger key."""
    import hashlib
    m = manifest(path)
    for role, name in {"database": "node.db"}.items():
        data = (path / name).read_bytes()
        m["files"][role] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with sqlite3.connect(path / "node.db") as conn:
        (blob,) = conn.execute("SELECT sealed_key FROM ledger_signing_keys ORDER BY generation DESC").fetchone()
    signer = LedgerSigningKey.unseal(kek, bytes(blob), m["node"])
    body = {k: v for k, v in m.items() if k != "signature"}
    m["signature"] = signer.sign(CONTEXT, canonical.dump(body)).hex()
    (path / "manifest.json").write_text(json.dumps(m))


# -- what a backup holds ---------------------------------------------------------------------

def test_backup_is_owner_only_complete_and_ledgered(net):
    m = manifest(net.full)
    assert m["node"] == "hrss" and m["software"] == software_version() and m["kek_included"] is True
    assert stat.S_IMODE(net.full.stat().st_mode) == 0o700
    for p in net.full.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    import hashlib
    for role, name in {"database": "node.db", "config": "config.toml", "tls_cert": "tls/node.pem",
                       "tls_key": "tls/node.key", "tls_ca": "tls/ca.pem"}.items():
        data = (net.full / name).read_bytes()
        assert m["files"][role] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert m["config_sha256"] == hashlib.sha256(Path(net.cfg("hrss")).read_bytes()).hexdigest()
    assert (net.full / "kek" / "node.kek").read_bytes() == (net.fed.nodes["hrss"].directory / "keys" / "node.kek").read_bytes()
    assert not (net.nokek / "kek").exists() and manifest(net.nokek)["kek_included"] is False
    # the snapshot's ledger is what the manifest signed; the live ledger records both backups
    snapshot = ledger_entries(net.full / "node.db")
    assert m["ledger"]["size"] == len(snapshot)
    live = [e for e in ledger_entries(net.fed.nodes["hrss"].directory / "node.db")
            if e.get("action") == "node_backed_up"]
    digests = {e["details"]["manifest"] for e in live}
    for b in (net.full, net.nokek):
        assert "sha256:" + hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest() in digests
    assert {e["details"]["kek_included"] for e in live} == {"yes", "no"}


def test_backup_refuses_an_existing_directory(net):
    r = net.fed.cli("backup", "--config", net.cfg("hrss"), "--out", str(net.full), check=False)
    refused(r, "already exists")


# -- attacks: nothing is installed -----------------------------------------------------------

def test_restore_into_the_running_nodes_directory_is_refused(net):
    node = net.fed.nodes["hrss"]
    before = (node.directory / "node.db").stat().st_mtime_ns, sorted(os.listdir(node.directory))
    r = restore(net, node.config_path, net.full, "--force")
    refused(r, str(node.directory), f"pid {node.process.pid}", "shuqiao serve")
    assert node.process.poll() is None
    assert sorted(os.listdir(node.directory)) == before[1]


def test_a_flipped_byte_in_the_database_copy_is_refused(net):
    tampered = copy_backup(net, net.full, "flipped")
    db = bytearray((tampered / "node.db").read_bytes())
    db[len(db) // 2] ^= 0x01
    (tampered / "node.db").write_bytes(bytes(db))
    config = fresh_config(net, "restore-flipped")
    refused(restore(net, config, tampered), "node.db does not match its manifest")
    assert left_behind(config) == []


def test_a_manifest_rewritten_to_match_is_refused(net):
    tampered = copy_backup(net, net.full, "rewritten")
    db = bytearray((tampered / "node.db").read_bytes())
    db[len(db) // 2] ^= 0x01
    (tampered / "node.db").write_bytes(bytes(db))
    m = manifest(tampered)
    import hashlib
    m["files"]["database"]["sha256"] = hashlib.sha256(bytes(db)).hexdigest()
    (tampered / "manifest.json").write_text(json.dumps(m))
    config = fresh_config(net, "restore-rewritten")
    refused(restore(net, config, tampered), "not signed by the ledger key it names")
    assert left_behind(config) == []


def test_an_edited_ledger_is_refused_even_when_resigned_with_the_kek(net):
    """An attacker holding the backup and its KEK edits an answered query's entry, then
    fixes the digests and signs the manifest again with the node's ledger key."""
    tampered = copy_backup(net, net.full, "ledger-edited")
    with sqlite3.connect(tampered / "node.db") as conn:
        conn.execute("DROP TRIGGER ledger_entries_no_update")
        idx, entry = next((i, bytes(e)) for i, e in conn.execute("SELECT idx, entry FROM ledger_entries")
                          if json.loads(bytes(e)).get("phase") == "completed")
        conn.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?",
                     (entry.replace(b'"elements":', b'"elements":1'), idx))
    resign(tampered, KeyEncryptionKey.load(net.full / "kek" / "node.kek"))
    config = fresh_config(net, "restore-ledger-edited")
    refused(restore(net, config, tampered), "ledger does not verify", f"entry {idx}")
    assert left_behind(config) == []


def test_a_backup_without_its_kek_restored_without_one_is_refused(net):
    config = fresh_config(net, "restore-nokek")
    refused(restore(net, config, net.nokek), "holds no node key", "--include-kek",
            str(config.parent / "keys" / "node.kek"))
    assert left_behind(config) == []


def test_another_nodes_kek_is_refused(net):
    config = fresh_config(net, "restore-wrongkek")
    KeyEncryptionKey.create(config.parent / "keys" / "node.kek")  # a KEK, but not hrss's
    refused(restore(net, config, net.nokek), "does not open", "not this node's key-encryption key")
    assert left_behind(config) == ["keys/node.kek"]  # the operator's file, untouched


def test_a_ledger_key_not_certified_by_the_configured_ca_is_refused(net):
    other = net.root / "other-ca"
    init_ca(other)
    config = fresh_config(net, "restore-otherca", ca=other / "ca.pem")
    refused(restore(net, config, net.full), "not certified for node 'hrss' by the federation CA")
    assert left_behind(config) == []


def test_a_non_empty_directory_is_refused_without_force(net):
    config = fresh_config(net, "restore-busy")
    (config.parent / "notes.txt").write_text("someone's file")
    refused(restore(net, config, net.full), "not empty", "notes.txt", "--force")
    assert left_behind(config) == ["notes.txt"]


# -- the restored node serves as before (last: it stops the original) ------------------------

def test_restored_node_answers_the_same_and_its_ledger_extends_the_backup(net):
    net.fed.stop("hrss")  # the original machine is lost
    config = fresh_config(net, "restored")
    r = restore(net, config, net.full)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    db = config.parent / "node.db"
    restored = ledger_entries(db)
    m = manifest(net.full)
    assert restored[-1]["action"] == "node_restored"
    assert restored[-1]["details"]["ledger_size"] == m["ledger"]["size"] == len(restored) - 1

    net.fed.nodes["hrss-restored"] = LocalNode("hrss", config, config.parent)
    node = net.fed.start("hrss-restored")
    net.fed.set_partner_address("fund", "hrss", node.address)
    fx.query(net, net.root / "after.csv", check=True)
    assert (net.root / "after.csv").read_bytes() == (net.root / "before.csv").read_bytes()

    # the restored ledger verifies in full, anchored in the CA, and keeps extending the backup
    state, ca = net.root / "audit-state", str(net.fed.pki / "ca.pem")
    for n in (1, 2):
        export = net.root / f"restored-{n}.jsonl"
        net.fed.cli("audit", "export", "--config", str(config), "--out", str(export))
        r = net.fed.cli("audit", "verify", f"export:{export}", "--ca", ca, "--state-dir", str(state),
                        check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        if n == 1:
            fx.query(net, net.root / "after-2.csv", check=True)
    grown = ledger_entries(db)
    assert len(grown) > len(restored) and grown[:len(restored)] == restored
    size1, root1 = m["ledger"]["size"], bytes.fromhex(m["ledger"]["root"])
    proof, size2, root2 = _consistency(db, size1)
    merkle.verify_consistency(size1, size2, root1, root2, proof)


def _consistency(db: Path, size1: int) -> tuple[list[bytes], int, bytes]:
    """A consistency proof from the backup's tree to the restored node's current tree,
    built from the restored database's stored nodes."""
    with sqlite3.connect(db) as conn:
        (size2,) = conn.execute("SELECT size FROM ledger_state").fetchone()
        nodes = {(lv, ix): bytes(h) for lv, ix, h in
                 conn.execute("SELECT level, node_index, hash FROM ledger_nodes")}
        nodes.update(((0, ix), bytes(h)) for ix, h in conn.execute("SELECT idx, leaf_hash FROM ledger_entries"))
    get = lambda lv, ix: nodes[(lv, ix)]  # noqa: E731
    return (merkle.consistency_proof(size1, size2, get), size2,
            merkle.CompactRange.from_store(size2, get).root())


def test_a_backup_without_its_kek_restores_with_the_kek_put_in_place(net):
    config = fresh_config(net, "restored-nokek")
    (config.parent / "keys").mkdir(mode=0o700)
    shutil.copy2(net.full / "kek" / "node.kek", config.parent / "keys" / "node.kek")
    r = restore(net, config, net.nokek)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (config.parent / "node.db").exists()


def test_force_moves_the_stopped_nodes_database_aside(net):
    node = net.fed.nodes["hrss"]  # stopped by the test above
    assert node.process is None
    refused(restore(net, node.config_path, net.full), "not empty", "--force")
    r = restore(net, node.config_path, net.full, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    aside = [p.name for p in node.directory.iterdir() if ".before-restore-" in p.name]
    assert any(name.startswith("node.db.before-restore-") for name in aside), aside

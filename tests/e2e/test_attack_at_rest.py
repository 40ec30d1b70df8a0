"""A thief with a disk, a backup or a shell account next to the node: personal data at rest.

Real nodes register a dataset and answer real queries; then the attacker reads what the
machine holds. Other accounts must be able to read nothing under either node's data
directory or among the result files, whatever umask the operator's shell had; a copy
of the agency's data directory (database, WAL, logs, everything) must hold no registered
identifier, not even inside a compressed blob; a sealed chunk of stored rows moved to
another place must not open; and the federation CA's key must be encrypted under a
passphrase, so a copy of it mints no node identity.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.registration import iter_chunks, iter_rows
from node.keys.secrets import SealError
from node.storage.schema import dataset_chunks, datasets

from . import fixtures as fx

pytestmark = pytest.mark.e2e

GRANT = {"kinds": ["membership", "threshold"], "threshold_column": "缴费月数", "min_elements": 1}
ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")


def _inflate(data: bytes, at: int) -> bytes:
    """What a zlib stream starting at ``at`` gives before it ends or breaks (a database
    splits a long blob across pages, so a thief reads a stream as far as it goes)."""
    d, out = zlib.decompressobj(), []
    for piece in range(at, min(len(data), at + (1 << 22)), 256):
        try:
            out.append(d.decompress(data[piece:piece + 256]))
        except zlib.error:
            break
        if d.eof:
            break
    return b"".join(out)


def found(data: bytes, needles: set[bytes]) -> set[bytes]:
    """The needles in ``data``, in the clear or inside any zlib stream starting in it."""
    hits = {n for n in needles if n in data}
    for header in ZLIB_HEADERS:
        at = data.find(header)
        while at != -1:
            plain = _inflate(data, at)
            hits |= {n for n in needles if n in plain}
            at = data.find(header, at + 1)
    return hits


def scan_tree(root: Path, needles: set[bytes]) -> dict[str, int]:
    """File (relative to ``root``) -> how many needles it holds, for every file under it."""
    hits = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        n = len(found(path.read_bytes(), needles))
        if n:
            hits[str(path.relative_to(root))] = n
    return hits


def open_to_others(*roots: Path) -> list[str]:
    bad = []
    for root in roots:
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if mode & 0o077:
                bad.append(f"{path} {mode:04o}")
    return bad


def _threshold_input(s, path: Path) -> None:
    fx.write_csv(path, ["身份证号", "required"], [[p, 12] for p in s.applicants])


def test_files_of_both_nodes_and_results_are_owner_only_even_under_umask_000(tmp_path):
    old = os.umask(0)  # the careless operator's shell; the nodes' processes inherit it
    try:
        s = fx.build(tmp_path, registry_size=300, applicants=60, grant=GRANT)
        with open(s.registry_csv, "a", encoding="gb18030") as f:
            f.write("12345,5,天宁区\n")  # an invalid row: a rejects file is written
        out = tmp_path / "results"
        out.mkdir(mode=0o777)
        with s.fed:
            fx.start(s)
            fx.register(s, "--rejects", str(out / "registry-rejected.csv"))
            fx.query(s, out / "membership.csv", check=True)
            _threshold_input(s, tmp_path / "data" / "thresholds.csv")
            s.fed.cli("query", "threshold", "--config", s.cfg("fund"), "--partner", "hrss",
                      "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                      "--input", str(tmp_path / "data" / "thresholds.csv"), "--id-column", "身份证号",
                      "--threshold-column", "required", "--out", str(out / "threshold.csv"))
            hrss, fund = s.fed.nodes["hrss"].directory, s.fed.nodes["fund"].directory
            # What the attack reads, present while the node serves: the WAL, the log, the
            # fund centre's cached threshold table, and every kind of result.
            assert (hrss / "node.db-wal").exists() and (hrss / "serve.log").exists()
            assert list((fund / "statistics").glob("threshold-*.bin"))
            results = sorted(p.name for p in out.iterdir())
            assert results == sorted(
                name + suffix for name in ("membership.csv", "membership.rejected.csv",
                                           "registry-rejected.csv", "threshold.csv",
                                           "threshold.rejected.csv")
                for suffix in ("", ".meta.json"))  # each with its query's facts beside it
            assert open_to_others(hrss, fund, *out.iterdir()) == []
    finally:
        os.umask(old)


def test_a_copy_of_the_agency_data_directory_holds_no_registered_identifier(tmp_path):
    s = fx.build(tmp_path, registry_size=300, applicants=60)
    added = [p for p in s.applicants if p not in set(s.registry)][:5]
    needles = {p.encode() for p in [*s.registry, *added]}
    # Positive controls: the source holds every identifier, and the scan finds them even
    # in the form rows were stored in before sealing (zlib of JSON) amid other bytes.
    assert found(s.registry_csv.read_bytes(), needles) == {p.encode() for p in s.registry}
    legacy = zlib.compress(json.dumps([[p, {"缴费月数": "7"}] for p in s.registry[:40]]).encode(), 1)
    assert found(os.urandom(999) + legacy + os.urandom(999), needles) == {
        p.encode() for p in s.registry[:40]}
    with s.fed:
        fx.start(s)
        fx.register(s)
        fx.query(s, tmp_path / "before.csv", check=True)
        fx.write_csv(tmp_path / "add.csv", ["公民身份号码", "缴费月数"], [[p, 9] for p in added])
        s.fed.cli("dataset", "update", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                  "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"))
        fx.query(s, tmp_path / "after.csv", check=True)
        hrss, fund = s.fed.nodes["hrss"].directory, s.fed.nodes["fund"].directory
        assert (hrss / "node.db-wal").exists()
        assert scan_tree(hrss, needles) == {}  # while serving: database, WAL, SHM, log, ...
        assert scan_tree(fund, {p.encode() for p in s.applicants}) == {}  # nor the applicants
    assert scan_tree(hrss, needles) == {}  # stopped: the WAL checkpointed into the database
    # The rows are there, sealed: the node itself reads them back whole.
    with NodeContext(load_config(s.cfg("hrss"))) as ctx, ctx.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(datasets.c.id))).scalar_one()
        assert {subject for subject, _ in iter_rows(conn, newest, ctx.kek)} == {
            n.decode() for n in needles}


def test_a_sealed_chunk_moved_to_another_place_does_not_open(tmp_path):
    s = fx.build(tmp_path, registry_size=300, applicants=60)
    fx.register(s)
    added = [p for p in s.applicants if p not in set(s.registry)][:5]
    fx.write_csv(tmp_path / "add.csv", ["公民身份号码", "缴费月数"], [[p, 9] for p in added])
    s.fed.cli("dataset", "update", "--config", s.cfg("hrss"), "--name", "flexible_workers",
              "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"))
    with NodeContext(load_config(s.cfg("hrss"))) as ctx:
        with ctx.engine.connect() as conn:
            v1, v2 = conn.execute(sa.select(datasets.c.id).order_by(datasets.c.version)).scalars()
            blobs = {(d, q): b for d, q, b in conn.execute(sa.select(
                dataset_chunks.c.dataset_id, dataset_chunks.c.seq, dataset_chunks.c.rows))}
            assert sorted(blobs) == [(v1, 0), (v2, 0), (v2, 1)]
            assert [seq for seq, _ in iter_chunks(conn, v2, ctx.kek)] == [0, 1]  # in place: opens

        def put(target, blob) -> None:
            with ctx.engine.begin() as conn:
                conn.execute(sa.update(dataset_chunks).where(
                    dataset_chunks.c.dataset_id == target[0], dataset_chunks.c.seq == target[1])
                    .values(rows=blob))

        for source, target in (((v2, 1), (v2, 0)),    # another chunk of the same version
                               ((v1, 0), (v2, 0))):   # the same chunk of another version
            put(target, blobs[source])
            with ctx.engine.connect() as conn, pytest.raises(SealError):
                list(iter_chunks(conn, v2, ctx.kek))
            put(target, blobs[target])
        with ctx.engine.connect() as conn:
            assert len(list(iter_rows(conn, v2, ctx.kek))) == 305


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "SHUQIAO_CA_PASSPHRASE"}
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120,
                          env={**base, "COLUMNS": "200", **(env or {})})


def test_a_copied_ca_key_is_encrypted_and_issuing_without_its_passphrase_fails(tmp_path):
    secret = tmp_path / "ca-passphrase"
    secret.write_text("a long ca passphrase\n")
    secret.chmod(0o600)
    # No passphrase and no terminal: refused, not silently unencrypted.
    r = _cli("ca", "init", "--dir", str(tmp_path / "bare"))
    assert r.returncode != 0 and "needs a passphrase" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bare" / "ca.key").exists()
    r = _cli("ca", "init", "--dir", str(tmp_path / "ca"), "--passphrase-file", str(secret))
    assert r.returncode == 0, r.stderr
    pem = (tmp_path / "ca" / "ca.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")  # encrypted PKCS#8
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    serialization.load_pem_private_key(pem, password=b"a long ca passphrase")

    for env in ({}, {"SHUQIAO_CA_PASSPHRASE": "not the passphrase"}):
        r = _cli("ca", "issue", "--ca", str(tmp_path / "ca"), "--node", "hrss",
                 "--out", str(tmp_path / "hrss"), env=env)
        said = (r.stdout + r.stderr).strip()
        assert r.returncode != 0 and "Traceback" not in said and len(said.splitlines()) == 1, said
        assert "nothing was issued" in said and not (tmp_path / "hrss" / "hrss.key").exists()
    assert "is encrypted" in _cli("ca", "issue", "--ca", str(tmp_path / "ca"), "--node", "hrss",
                                  "--out", str(tmp_path / "hrss")).stderr
    r = _cli("ca", "issue", "--ca", str(tmp_path / "ca"), "--node", "hrss",
             "--out", str(tmp_path / "hrss"), "--passphrase-file", str(secret))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hrss" / "hrss.pem").exists()
    # The throwaway demo CA is still possible, but only when asked for, and loudly.
    r = _cli("ca", "init", "--dir", str(tmp_path / "demo"), "--unencrypted-key")
    assert r.returncode == 0 and "UNENCRYPTED" in r.stderr


def test_stored_chunks_on_postgresql_hold_no_identifier(tmp_path, pg_database_url):
    s = fx.build(tmp_path, registry_size=300, applicants=60, storage_url=pg_database_url)
    fx.register(s)
    needles = {p.encode() for p in s.registry}
    engine = sa.create_engine(pg_database_url)
    try:
        with engine.connect() as conn:
            blobs = conn.execute(sa.select(dataset_chunks.c.rows)).scalars().all()
            # every column of every table, as text, for good measure
            tables = conn.execute(sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            ).scalars().all()
            dumped = b"".join(str(list(conn.execute(sa.text(f'SELECT * FROM "{t}"')))).encode()
                              for t in tables)
    finally:
        engine.dispose()
    assert blobs and all(found(bytes(b), needles) == set() for b in blobs)
    assert found(dumped, needles) == set()
    with NodeContext(load_config(s.cfg("hrss"))) as ctx, ctx.engine.connect() as conn:
        (v1,) = conn.execute(sa.select(datasets.c.id)).scalars()
        assert {subject for subject, _ in iter_rows(conn, v1, ctx.kek)} == set(s.registry)


def test_rows_stored_before_sealing_are_sealed_by_init_and_leave_no_copy(tmp_path):
    s = fx.build(tmp_path, registry_size=300, applicants=60)
    fx.register(s)
    needles = {p.encode() for p in s.registry}
    hrss = s.fed.nodes["hrss"].directory
    with NodeContext(load_config(s.cfg("hrss"))) as ctx:  # the store as an older node left it
        with ctx.engine.begin() as conn:
            (v1,) = conn.execute(sa.select(datasets.c.id)).scalars()
            rows = list(iter_rows(conn, v1, ctx.kek))
            conn.execute(sa.update(dataset_chunks).values(rows=zlib.compress(
                json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode(), 1)))
    assert scan_tree(hrss, needles)  # the scan sees the old form
    r = s.fed.cli("dataset", "update", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                  "--id-column", "公民身份号码", "--remove", str(s.registry_csv), check=False)
    said = (r.stderr + r.stdout).strip()
    assert r.returncode != 0 and "run `shuqiao init" in said and len(said.splitlines()) == 1, said
    r = s.fed.cli("init", "--config", s.cfg("hrss"))
    assert "sealed 1 chunk(s)" in r.stderr + r.stdout
    assert scan_tree(hrss, needles) == {}  # nor a copy in free pages or the WAL
    with NodeContext(load_config(s.cfg("hrss"))) as ctx, ctx.engine.connect() as conn:
        assert list(iter_rows(conn, v1, ctx.kek)) == rows

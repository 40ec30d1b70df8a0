"""`shuqiao backup`: a consistent snapshot of a node, taken while it serves.

SQLite's online backup API (`sqlite3.Connection.backup`, all pages in one step) copies
the database under one read transaction: in WAL mode the running node keeps writing
meanwhile, and the copy is the database as of one instant, ledger included (the ledger
lives in the database, so its entries, tree nodes, heads and sealed signing keys are
snapshotted with the rows and keys they record). The copy is switched to a rollback
journal so that it is one self-contained file, checked with `PRAGMA quick_check`, and
described in a signed manifest (backup_manifest.py) with the TLS identity, the config
and their digests.

The key-encryption key opens every sealed key and row in the snapshot, so it goes into
the backup only when asked (`include_kek`), as its own file; whoever holds a backup and
its KEK can open everything the node holds. Keep it apart from the backups otherwise.

Taking a backup is ledgered (`node_backed_up`, with the manifest's SHA-256 and the
snapshot's ledger size) in the live node's ledger, so an auditor can later tell a
backup that was taken from one that was not. The directory appears only when complete:
everything is written under a temporary name beside it and renamed at the end.

PostgreSQL and MariaDB storage are backed up with their own tools (pg_dump,
mariadb-dump), which already give consistent online snapshots; `backup` says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from node.core.config import NodeConfig
from node.core.version import software_version
from node.keys.secrets import read_private_file, write_new_file
from node.ledger import Ledger
from node.ledger.anchor import current_certification
from node.ledger.canonical import rfc3339
from node.ledger.tables import ledger_signing_keys
from node.runtime.backup_manifest import (FILES, FORMAT, KEK_FILE, MANIFEST, BackupError, fsync_path,
                                          sha256_file, sign_manifest)
from node.runtime.context import NodeContext
from node.storage.schema import private_dir, write_private

__all__ = ["BackupResult", "take_backup", "sqlite_database", "snapshot_sqlite"]

_OTHER_TOOLS = {
    "postgresql": "back the database up with `pg_dump --format=custom` and restore it with "
                  "`pg_restore` into an empty database",
    "mysql": "back the database up with `mariadb-dump --single-transaction` (or mysqldump)",
    "mariadb": "back the database up with `mariadb-dump --single-transaction`",
}


@dataclass(frozen=True)
class BackupResult:
    path: Path
    node: str
    ledger_size: int
    ledger_root: str
    database_bytes: int
    kek_included: bool
    manifest_sha256: str


def sqlite_database(config: NodeConfig, what: str) -> Path:
    """The SQLite file the node stores everything in.

    Raises:
        BackupError: the storage is another database, with the tool to use instead.
    """
    url = make_url(config.storage_url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:") \
            and not url.database.startswith("file:"):
        return Path(url.database)
    dialect = url.drivername.split("+")[0]
    advice = _OTHER_TOOLS.get(dialect, "use the database's own backup tool")
    raise BackupError(
        f"`shuqiao {what}` handles SQLite storage only; this node stores its data in {dialect}: "
        f"{advice} (it holds the ledger, sealed keys and sealed rows), and copy the TLS files, the "
        "config and, kept apart, the node key file; run `shuqiao audit check` before serving a "
        "restored database")


def snapshot_sqlite(source: Path, dest: Path) -> None:
    """Copy `source` to a new `dest` (0600) as of one instant, as a single-file database.

    Raises:
        BackupError: the source is missing or the copy is not a sound database.
    """
    if not source.is_file():
        raise BackupError(f"no database at {source}: is the node initialised (`shuqiao init`)?")
    write_private(dest, b"")  # owner-only before SQLite writes a page into it
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: every page in one step, under one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
            verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if verdict != "ok":
        raise BackupError("the database snapshot fails SQLite's quick_check: the node's database "
                          "may be damaged; run `shuqiao audit check` and see the node's log")


def _ledger_facts(ctx: NodeContext, db: Path) -> dict:
    """The snapshot's ledger: size, root, its newest signing key and that key's certification."""
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            newest = conn.execute(
                select(ledger_signing_keys.c.public_key)
                .where(ledger_signing_keys.c.node == ctx.config.node.id)
                .order_by(ledger_signing_keys.c.generation.desc()).limit(1)).scalar()
            key = ctx.ledger.public_key
            if newest != key.text:
                raise BackupError("the ledger key changed while the backup was taken (a rotation?); "
                                  "run the backup again")
            ledger = Ledger(engine, ctx.ledger.signer)  # reads only: size and stored nodes
            size = ledger.size(conn)
            root = ledger.root(size, conn)
            certification = current_certification(conn, key)
    finally:
        engine.dispose()
    if certification is None:
        raise BackupError("the snapshot holds no certification of the ledger key; run "
                          "`shuqiao ledger certify` and back up again")
    return {"size": size, "root": root.hex(), "public_key": key.text,
            "certification": certification.digest()}


def _certify(ctx: NodeContext) -> None:
    """A restore checks the ledger key against the federation CA: make sure it is certified
    with the node's current TLS identity (as `serve` does at start)."""
    from node.keys.pki import TlsIdentityError
    from node.ledger.anchor import CertificationError
    from node.runtime.ledger_key import ensure_certified
    try:
        ensure_certified(ctx)
    except (CertificationError, TlsIdentityError, OSError) as exc:
        raise BackupError(f"cannot certify the ledger key with the node's TLS identity ({exc}); "
                          "a restore needs that certification") from None


def _copy_files(ctx: NodeContext, config_path: Path, work: Path, include_kek: bool) -> None:
    cfg = ctx.config
    private_dir(work / "tls")
    sources = {"config": config_path, "tls_cert": cfg.path(cfg.tls.cert),
               "tls_key": cfg.path(cfg.tls.key), "tls_ca": cfg.path(cfg.tls.ca)}
    for role, source in sources.items():
        try:
            data = read_private_file(source) if role == "tls_key" else source.read_bytes()
        except OSError as exc:
            raise BackupError(f"cannot read {source}: {exc.strerror or exc}") from None
        write_private(work / FILES[role], data)
    if include_kek:
        private_dir(work / Path(KEK_FILE).parent)
        write_new_file(work / KEK_FILE, read_private_file(cfg.kek_path), mode=0o600)


def _manifest(ctx: NodeContext, work: Path, ledger: dict, include_kek: bool) -> dict:
    files = {}
    for role, name in FILES.items():
        size, digest = sha256_file(work / name)
        files[role] = {"size": size, "sha256": digest}
    body = {"format": FORMAT, "v": 1, "node": ctx.config.node.id,
            "created": rfc3339(ctx.clock.now()), "software": software_version(),
            "storage": "sqlite", "config_sha256": files["config"]["sha256"],
            "kek_included": include_kek, "ledger": ledger, "files": files}
    return sign_manifest(body, ctx.ledger.signer)


def take_backup(ctx: NodeContext, config_path: Path, out: Path, *, include_kek: bool = False) -> BackupResult:
    """Write a complete backup of the node to the new directory `out`.

    Raises:
        BackupError: nothing was written (`out` does not exist afterwards).
    """
    db = sqlite_database(ctx.config, "backup")
    if out.exists() or out.is_symlink():
        raise BackupError(f"{out} already exists; a backup goes into a new directory")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a directory")
    _certify(ctx)
    work = private_dir(out.parent / f".{out.name}.incomplete-{secrets.token_hex(4)}")
    try:
        snapshot_sqlite(db, work / FILES["database"])
        ledger = _ledger_facts(ctx, work / FILES["database"])
        _copy_files(ctx, config_path, work, include_kek)
        manifest = _manifest(ctx, work, ledger, include_kek)
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
        write_private(work / MANIFEST, text)
        for path in [*work.rglob("*"), work]:
            fsync_path(path)
        digest = hashlib.sha256(text).hexdigest()
        _record(ctx, digest, ledger["size"], include_kek)
        os.rename(work, out)
        fsync_path(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupResult(out, ctx.config.node.id, ledger["size"], ledger["root"],
                        manifest["files"]["database"]["size"], include_kek, digest)


def _record(ctx: NodeContext, manifest_sha256: str, size: int, include_kek: bool) -> None:
    from node.runtime import admin_log
    with ctx.engine.begin() as conn:
        admin_log.record(ctx, conn, "node_backed_up", "node", manifest="sha256:" + manifest_sha256,
                         ledger_size=size, kek_included="yes" if include_kek else "no")

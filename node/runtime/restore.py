"""`shuqiao restore`: a backup installed into a node's data directory, proven first.

Order, so that a refusal leaves nothing behind and a node never serves half a restore:

1. lock the target data directory (node/runtime/data_lock.py): a running node's
   directory is refused, and no `serve` can start while the restore runs;
2. read the manifest (its signature by the ledger key it names), check every file's size
   and SHA-256, and the node id against the config's;
3. choose the key-encryption key: the backup's (taken with --include-kek) or the one
   already at the config's key path (put there by the operator from where it is kept);
   neither is a refusal that says so;
4. check the directory is fresh (nothing but the config, the lock, the key file and
   TLS files identical to the backup's), unless `force`, which moves what is in the way
   aside (`<name>.before-restore-<time>`), never deletes it;
5. copy the snapshot to a private temporary file in the directory and prove it
   (restore_checks.py: every sealed key opens, the whole ledger verifies, the ledger key
   is certified by the federation CA), then record `node_restored` in its ledger;
6. install: the key file and TLS files first, the database last, by one rename. A
   failure while installing undoes what this run wrote and moved.

Entries the original node appended after the backup are not in the restored ledger. To
its witnesses the node's log shrank: they raise a rollback alarm when they next see it,
until an operator who has established the history resolves it (`shuqiao witness
resolve` on the witness). The `node_restored` entry names the backup on the record.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from sqlalchemy import create_engine

from node.core.clock import SYSTEM_CLOCK, Clock
from node.core.config import NodeConfig
from node.keys.secrets import KekError, KeyEncryptionKey, read_private_file, write_new_file
from node.ledger import AdminEntry, Ledger, LedgerSigningKey
from node.runtime.backup import sqlite_database
from node.runtime.backup_manifest import (FILES, KEK_FILE, MANIFEST, RestoreRefused, check_files,
                                          fsync_path, read_manifest)
from node.runtime.data_lock import LOCK_NAME, DataDirLock
from node.runtime.restore_checks import verify_snapshot
from node.storage.schema import open_private, private_dir

__all__ = ["RestoreResult", "restore"]

_JOURNALS = ("-wal", "-shm", "-journal")


@dataclass
class RestoreResult:
    node: str
    backup_created: str
    ledger_size: int
    ledger_root: str
    kek_from_backup: bool
    ca_from_backup: bool
    config_matches: bool
    moved_aside: list[Path] = field(default_factory=list)


@dataclass
class _Plan:
    """What goes where: (destination, bytes) to write, and paths to move aside first."""
    writes: list[tuple[Path, bytes]] = field(default_factory=list)
    move_aside: list[Path] = field(default_factory=list)


def _choose_kek(config: NodeConfig, backup: Path, manifest: dict, force: bool,
                plan: _Plan) -> tuple[KeyEncryptionKey, str, bool]:
    """(KEK, where it comes from, whether it is the backup's)."""
    path = config.kek_path
    try:
        if manifest["kek_included"]:
            kek = KeyEncryptionKey.load(backup / KEK_FILE)  # 0600, 32 bytes
            data = read_private_file(backup / KEK_FILE)
            if path.exists() and read_private_file(path) != data:
                if not force:
                    raise RestoreRefused(f"another node key is already at {path}; move it away "
                                         "(or give --force to move it aside); not restoring")
                plan.move_aside.append(path)
            if not path.exists() or path in plan.move_aside:
                plan.writes.append((path, data))
            return kek, f"from the backup ({KEK_FILE})", True
        if not path.exists():
            raise RestoreRefused(
                f"the backup holds no node key (it was taken without --include-kek) and there is "
                f"none at {path}: copy the node's key file there from where it is kept apart from "
                "backups, then run restore again; nothing was restored")
        return KeyEncryptionKey.load(path), f"at {path}", False
    except KekError as exc:
        raise RestoreRefused(f"{exc}; not restoring") from None
    except FileNotFoundError:
        raise RestoreRefused(f"the manifest says the backup holds the node key, but {KEK_FILE} "
                             "is missing; not restoring") from None


def _plan_tls(config: NodeConfig, backup: Path, force: bool, plan: _Plan) -> bool:
    """Certificate and key: written if missing, kept if identical, else refused (or with
    `force` replaced). The CA certificate is never replaced: the restore is checked against
    the one already there. Returns whether the backup's CA certificate is installed."""
    tls = config.tls
    for role, dest in (("tls_cert", config.path(tls.cert)), ("tls_key", config.path(tls.key))):
        data = (backup / FILES[role]).read_bytes()
        if dest.exists() and dest.read_bytes() == data:
            continue
        if dest.exists():
            if not force:
                raise RestoreRefused(f"{dest} holds another TLS identity than the backup's; move "
                                     "it away (or give --force to move it aside); not restoring")
            plan.move_aside.append(dest)
        plan.writes.append((dest, data))
    ca = config.path(tls.ca)
    if ca.exists():
        return False
    plan.writes.append((ca, (backup / FILES["tls_ca"]).read_bytes()))
    return True


def _plan_fresh(config: NodeConfig, config_path: Path, db: Path, force: bool, plan: _Plan) -> None:
    """Refuse a data directory holding a node already (unless `force`: its database moves aside)."""
    tls = config.tls
    expected = {config.data_dir / LOCK_NAME, config_path.resolve(), config.kek_path,
                config.path(tls.cert), config.path(tls.key), config.path(tls.ca)}
    expected = {p.resolve() for p in expected}
    present = [p for p in config.data_dir.rglob("*") if not p.is_dir() and p.resolve() not in expected]
    if present and not force:
        shown = ", ".join(str(p.relative_to(config.data_dir)) for p in sorted(present)[:3])
        raise RestoreRefused(f"the data directory {config.data_dir} is not empty ({shown}"
                             f"{', ...' if len(present) > 3 else ''}); restore into a fresh one, or "
                             "give --force on a stopped node to move its database aside")
    plan.move_aside += [p for p in (db, *(db.with_name(db.name + j) for j in _JOURNALS)) if p.exists()]


def _record(db: Path, signer: LedgerSigningKey, manifest: dict, manifest_sha256: str,
            clock: Clock) -> None:
    """Append `node_restored` (and a head over it) to the snapshot copy's ledger."""
    from node.runtime.admin_log import actor
    engine = create_engine(f"sqlite:///{db}")
    try:
        ledger = Ledger(engine, signer, clock=clock.now)
        with engine.begin() as conn:
            ledger.append(conn, AdminEntry("node_restored", "node", actor(), ledger.now(), {
                "manifest": "sha256:" + manifest_sha256, "backup_created": manifest["created"],
                "ledger_size": manifest["ledger"]["size"],
                "kek_included": "yes" if manifest["kek_included"] else "no"}))
            ledger.sign_head(conn, force=True)
    finally:
        engine.dispose()


def _install(plan: _Plan, snapshot: Path, db: Path, now: datetime) -> list[Path]:
    """Move aside, write, rename the database into place; undo all of it on failure."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    moved: list[tuple[Path, Path]] = []
    written: list[Path] = []
    try:
        for path in plan.move_aside:
            aside = path.with_name(f"{path.name}.before-restore-{stamp}")
            os.rename(path, aside)
            moved.append((path, aside))
        for path, data in plan.writes:
            private_dir(path.parent)
            write_new_file(path, data, mode=0o600)
            written.append(path)
        private_dir(db.parent)
        os.replace(snapshot, db)
        fsync_path(db.parent)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for path, aside in reversed(moved):
            os.rename(aside, path)
        raise
    return [aside for _, aside in moved]


def _roots(config: NodeConfig, backup: Path) -> list[x509.Certificate]:
    from node.ledger.anchor import CertificationError, load_roots
    ca = config.path(config.tls.ca)
    try:
        return load_roots(ca if ca.exists() else backup / FILES["tls_ca"])
    except CertificationError as exc:
        raise RestoreRefused(f"{exc}; not restoring") from None


def restore(config: NodeConfig, config_path: Path, backup: Path, *, force: bool = False,
            clock: Clock = SYSTEM_CLOCK) -> RestoreResult:
    """Prove the backup in `backup` and install it for the node `config` describes (there is
    no node context yet: `clock` dates the restore's ledger entry and what it moves aside).

    Raises:
        DataDirLocked: a process (a running node) holds the data directory.
        RestoreRefused: a check failed, or the directory is not fresh; nothing was installed.
        BackupError: the node's storage is not SQLite (says what to use instead).
    """
    db = sqlite_database(config, "restore")
    existed = config.data_dir.exists()
    lock_existed = (config.data_dir / LOCK_NAME).exists()
    lock = DataDirLock(config.data_dir, "shuqiao restore").acquire()
    try:
        result = _restore_locked(config, config_path, backup, db, force, clock)
    except BaseException:
        # Leave no trace of a refused restore: the lock file (removed while still held, so
        # no other process can be waiting on it) and the directory, if this run made them.
        if not lock_existed:
            (config.data_dir / LOCK_NAME).unlink(missing_ok=True)
        lock.release()
        if not existed and not any(p for p in config.data_dir.rglob("*") if not p.is_dir()):
            shutil.rmtree(config.data_dir, ignore_errors=True)
        raise
    lock.release()
    return result


def _restore_locked(config: NodeConfig, config_path: Path, backup: Path, db: Path,
                    force: bool, clock: Clock) -> RestoreResult:
    manifest, key = read_manifest(backup)
    if manifest["node"] != config.node.id:
        raise RestoreRefused(f"the backup is of node {manifest['node']!r}, the config is "
                             f"{config.node.id!r}'s; not restoring")
    check_files(backup, manifest)
    plan = _Plan()
    _plan_fresh(config, config_path, db, force, plan)
    kek, kek_source, kek_from_backup = _choose_kek(config, backup, manifest, force, plan)
    ca_from_backup = _plan_tls(config, backup, force, plan)
    snapshot = config.data_dir / f".restore-{secrets.token_hex(6)}.db"
    try:
        with open(backup / FILES["database"], "rb") as src, open_private(snapshot, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        signer = verify_snapshot(snapshot, manifest, key, kek, kek_source, _roots(config, backup),
                                 backup)
        manifest_sha256 = hashlib.sha256((backup / MANIFEST).read_bytes()).hexdigest()
        _record(snapshot, signer, manifest, manifest_sha256, clock)
        moved = _install(plan, snapshot, db, clock.now())
    finally:
        for p in (snapshot, *(snapshot.with_name(snapshot.name + j) for j in _JOURNALS)):
            p.unlink(missing_ok=True)
    config_sha256 = hashlib.sha256(config_path.read_bytes()).hexdigest()
    return RestoreResult(manifest["node"], manifest["created"], manifest["ledger"]["size"],
                         manifest["ledger"]["root"], kek_from_backup, ca_from_backup,
                         config_sha256 == manifest["config_sha256"], moved)

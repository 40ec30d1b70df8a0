"""A backup directory's layout and its manifest, signed with the node's ledger key.

A backup (`shuqiao backup`) is a directory, owner-only, holding fixed file names:

    manifest.json     what follows, signed
    node.db           a consistent SQLite snapshot: datasets (rows sealed), sealed keys, ledger
    config.toml       the node's config as it was (its SHA-256 is in the manifest too)
    tls/node.pem      the node's TLS certificate, tls/node.key its key (sealed under the
    tls/ca.pem        KEK when the node seals it), and the federation CA certificate
    kek/node.kek      ONLY with --include-kek: the key-encryption key itself

The manifest lists each file's size and SHA-256, the ledger's size and root hash at the
snapshot, the ledger key and the digest of its certification, the node id, the time and
the software version, and is signed with the ledger key (context
"shuqiao/backup-manifest/v1\\n", over the canonical JSON of everything but the
signature). `restore` checks the signature with the key it finds in the snapshot, that
key's certification against the federation CA, and every file's digest, so a file edited
after the backup, or a manifest edited to match, is refused. The KEK file is not listed:
it is checked by opening the sealed keys with it, and a manifest handed around without
it then says nothing about it.

File names never come from the manifest (only sizes and digests do), so a crafted
manifest cannot point a restore at a file outside the backup.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from node.core.errors import StorageError
from node.ledger import canonical
from node.ledger.signing import LedgerPublicKey, LedgerSigningKey, SignatureError

__all__ = ["BackupError", "RestoreRefused", "MANIFEST", "FILES", "KEK_FILE", "FORMAT", "sha256_file",
           "sign_manifest", "read_manifest", "check_files", "fsync_path"]

FORMAT = "shuqiao-backup"
MANIFEST = "manifest.json"
CONTEXT = b"shuqiao/backup-manifest/v1\n"
FILES = {"database": "node.db", "config": "config.toml", "tls_cert": "tls/node.pem",
         "tls_key": "tls/node.key", "tls_ca": "tls/ca.pem"}
KEK_FILE = "kek/node.kek"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOP_KEYS = {"format", "v", "node", "created", "software", "storage", "config_sha256",
             "kek_included", "ledger", "files", "signature"}
_LEDGER_KEYS = {"size", "root", "public_key", "certification"}


class BackupError(StorageError):
    """A backup could not be taken; nothing was left behind. One line, says why."""


class RestoreRefused(BackupError):
    """A restore was refused before anything was installed; one line, says why."""


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk before it is relied on."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _payload(body: dict[str, Any]) -> bytes:
    return CONTEXT + canonical.dump({k: v for k, v in body.items() if k != "signature"})


def sign_manifest(body: dict[str, Any], signer: LedgerSigningKey) -> dict[str, Any]:
    """`body` with its signature by the ledger key (the canonical JSON, minus the signature)."""
    payload = _payload(body)
    return {**body, "signature": signer.sign(CONTEXT, payload[len(CONTEXT):]).hex()}


def _refuse(problem: str) -> RestoreRefused:
    return RestoreRefused(f"the backup's manifest {problem}; not restoring")


def _check_shape(m: Any) -> None:
    if not isinstance(m, dict) or set(m) != _TOP_KEYS:
        raise _refuse("is not a Shuqiao backup manifest (unexpected or missing fields)")
    if m["format"] != FORMAT or m["v"] != 1:
        raise _refuse(f"has format {m.get('format')!r} v{m.get('v')!r}, not {FORMAT} v1")
    if m["storage"] != "sqlite":
        raise _refuse(f"describes {m['storage']!r} storage; only SQLite backups are restored")
    ledger, files = m["ledger"], m["files"]
    if not isinstance(ledger, dict) or set(ledger) != _LEDGER_KEYS:
        raise _refuse("has no complete ledger section")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise _refuse(f"does not list exactly the files {', '.join(sorted(FILES))}")
    for role, entry in files.items():
        if (not isinstance(entry, dict) or set(entry) != {"size", "sha256"}
                or type(entry["size"]) is not int or entry["size"] < 0
                or not isinstance(entry["sha256"], str) or not _HEX64.fullmatch(entry["sha256"])):
            raise _refuse(f"has a malformed entry for {role}")
    if type(ledger["size"]) is not int or not isinstance(ledger["root"], str) \
            or not _HEX64.fullmatch(ledger["root"]) or type(m["kek_included"]) is not bool \
            or not isinstance(ledger["public_key"], str) or not isinstance(ledger["certification"], str):
        raise _refuse("has a malformed ledger section or kek_included")
    for name in ("node", "created", "software", "config_sha256", "signature"):
        if not isinstance(m[name], str):
            raise _refuse(f"has a malformed {name}")
    try:
        canonical.check_time(m["created"], "created")
    except canonical.CanonicalError:
        raise _refuse("has a malformed creation time") from None


def read_manifest(directory: Path) -> tuple[dict[str, Any], LedgerPublicKey]:
    """The manifest of the backup in `directory`, its signature checked with the key it
    names; returns (manifest, that key). The key is checked against the snapshot and the
    federation CA later (restore_checks.py); until then the signature only shows the
    manifest is whole.

    Raises:
        RestoreRefused: not a backup, malformed, or the signature does not verify.
    """
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RestoreRefused(f"{directory} holds no {MANIFEST}: it is not a Shuqiao backup") from None
    except (OSError, ValueError) as exc:
        raise RestoreRefused(f"cannot read {path}: {type(exc).__name__}") from None
    _check_shape(manifest)
    try:
        key = LedgerPublicKey.from_text(manifest["ledger"]["public_key"])
        key.verify(bytes.fromhex(manifest["signature"]), _payload(manifest))
    except (SignatureError, ValueError):  # CanonicalError is a ValueError
        raise _refuse("is not signed by the ledger key it names (it was altered)") from None
    return manifest, key


def check_files(directory: Path, manifest: dict[str, Any]) -> None:
    """Every listed file is present with the size and SHA-256 the manifest gives.

    Raises:
        RestoreRefused: naming the first file that is missing or differs.
    """
    for role, name in FILES.items():
        want = manifest["files"][role]
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise RestoreRefused(f"the backup's {name} is missing (or not a regular file); not restoring")
        size, digest = sha256_file(path)
        if (size, digest) != (want["size"], want["sha256"]):
            raise RestoreRefused(f"the backup's {name} does not match its manifest (SHA-256 differs): "
                                 "it was altered or damaged after the backup; not restoring")

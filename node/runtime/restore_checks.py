"""What `shuqiao restore` proves about a backup's snapshot before anything is installed.

Run on a private copy of the snapshot, with the key-encryption key the node will use:

1. SQLite's quick_check passes (the file is a sound database);
2. the KEK opens every generation of the sealed ledger key, each matching its stored
   public key, and the newest is the key that signed the manifest;
3. the KEK opens every sealed OPRF key (each matching its published public key) and
   every sealed Paillier key (its factors matching the stored modulus), so the restored
   node answers with the keys its partners pinned and the tables they synced;
4. the whole ledger recomputes from its entry bytes (integrity.verify_ledger, every
   entry, node and head, under any generation of the key), with the size and root the
   manifest signed;
5. the ledger key's certification chains to the federation CA, names this node, was
   valid when the backup was taken, is the one the manifest names, and was signed with
   the TLS certificate in the backup;
6. the backup's TLS key opens (with the KEK when sealed) and belongs to that
   certificate, which names this node.

Any failure is a RestoreRefused naming the check; nothing has been installed by then.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Connection, create_engine, exc as sa_exc, select, text

from node.keys import paillier_keys
from node.keys.workers import key_purpose as oprf_purpose
from node.keys.pki import TlsIdentityError, load_tls_identity, node_id_from_cert
from node.keys.secrets import KeyEncryptionKey, SealError
from node.ledger import Ledger, LedgerPublicKey, LedgerSigningKey
from node.ledger.anchor import CertificationError, current_certification, verify_certification
from node.ledger.integrity import verify_ledger
from node.ledger.signing import KeyRing
from node.ledger.tables import ledger_signing_keys
from node.runtime.backup_manifest import RestoreRefused
from node.storage.schema import oprf_keys, threshold_keys
from protocols.oprf import OprfSecretKey

__all__ = ["verify_snapshot"]


def _ledger_keys(conn: Connection, kek: KeyEncryptionKey, node: str,
                 kek_source: str) -> tuple[LedgerSigningKey, tuple[LedgerPublicKey, ...]]:
    c = ledger_signing_keys.c
    rows = conn.execute(select(c.generation, c.public_key, c.sealed_key).where(c.node == node)
                        .order_by(c.generation)).all()
    if not rows:
        raise RestoreRefused(f"the snapshot holds no ledger key of node {node!r}; not restoring")
    keys: list[LedgerPublicKey] = []
    signer = None
    for row in rows:
        try:
            signer = LedgerSigningKey.unseal(kek, row.sealed_key, node, tuple(reversed(keys)))
        except SealError:
            raise RestoreRefused(f"the node key {kek_source} does not open the snapshot's sealed "
                                 f"ledger key (generation {row.generation}): it is not this node's "
                                 "key-encryption key; not restoring") from None
        if signer.public_key.text != row.public_key:
            raise RestoreRefused(f"the snapshot's ledger key generation {row.generation} does not "
                                 "match its stored public key; not restoring")
        keys.append(signer.public_key)
    return signer, tuple(keys)


def _sealed_keys(conn: Connection, kek: KeyEncryptionKey) -> int:
    """Open every sealed OPRF and Paillier key; returns how many were opened."""
    opened = 0
    for row in conn.execute(select(oprf_keys)):
        try:
            secret = OprfSecretKey.from_bytes(kek.unseal(
                row.sealed_key, purpose=oprf_purpose(row.dataset, row.partner, row.epoch)))
            good = secret.public_key() == bytes(row.public_key)
        except (SealError, ValueError):
            good = False
        if not good:
            raise RestoreRefused(f"the snapshot's OPRF key of {row.dataset} for {row.partner}, epoch "
                                 f"{row.epoch}, does not open with the node key or does not match its "
                                 "published public key; not restoring")
        opened += 1
    for row in conn.execute(select(threshold_keys)):
        key = paillier_keys.find_key(conn, row.dataset, row.partner, row.epoch, row.income_column)
        try:
            paillier_keys.unseal_key(kek, key)
        except (SealError, ValueError):
            raise RestoreRefused(f"the snapshot's threshold key of {row.dataset} for {row.partner}, "
                                 f"epoch {row.epoch}, does not open with the node key; not "
                                 "restoring") from None
        opened += 1
    return opened


def _check_ledger(engine, signer: LedgerSigningKey, keys: tuple[LedgerPublicKey, ...],
                  manifest: dict[str, Any]) -> None:
    report = verify_ledger(engine, KeyRing(keys))
    if not report.ok:
        first = report.problems[0] if report.problems else "problems beyond the listing"
        raise RestoreRefused(f"the snapshot's ledger does not verify: {first}; not restoring")
    want = manifest["ledger"]
    if report.size != want["size"]:
        raise RestoreRefused(f"the snapshot's ledger holds {report.size} entries, the manifest "
                             f"signed {want['size']}; not restoring")
    with engine.connect() as conn:
        root = Ledger(engine, signer).root(report.size, conn)
    if root.hex() != want["root"]:
        raise RestoreRefused("the snapshot's ledger root is not the one the manifest signed; "
                             "not restoring")


def _check_identity(conn: Connection, signer: LedgerSigningKey, manifest: dict[str, Any],
                    roots: list[x509.Certificate], cert_path: Path, key_path: Path,
                    kek: KeyEncryptionKey) -> None:
    node = manifest["node"]
    certification = current_certification(conn, signer.public_key)
    try:
        verify_certification(certification, roots, node=node, key=signer.public_key,
                             at=manifest["created"])
    except CertificationError as exc:
        raise RestoreRefused(f"the snapshot's ledger key is not certified for node {node!r} by "
                             f"the federation CA: {exc}; not restoring") from None
    if certification.digest() != manifest["ledger"]["certification"]:
        raise RestoreRefused("the snapshot's ledger key certification is not the one the "
                             "manifest names; not restoring")
    sealed = b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()[:64]
    try:
        cert_pem, _ = load_tls_identity(cert_path, key_path, kek=kek if sealed else None)
    except TlsIdentityError:
        raise RestoreRefused("the backup's TLS key does not open with the node key or does not "
                             "belong to its certificate; not restoring") from None
    leaf = x509.load_pem_x509_certificate(cert_pem)
    if node_id_from_cert(leaf) != node:
        raise RestoreRefused(f"the backup's TLS certificate is not node {node!r}'s; not restoring")
    if certification.chain[0] != leaf.public_bytes(serialization.Encoding.DER):
        raise RestoreRefused("the ledger key was certified with another TLS certificate than "
                             "the one in the backup; not restoring")


def verify_snapshot(db: Path, manifest: dict[str, Any], manifest_key: LedgerPublicKey,
                    kek: KeyEncryptionKey, kek_source: str, roots: list[x509.Certificate],
                    backup: Path) -> LedgerSigningKey:
    """Every check of the module docstring on the snapshot copy `db`; returns the newest
    ledger key (to record the restore with).

    Raises:
        RestoreRefused: naming the check that failed.
    """
    from node.runtime.backup_manifest import FILES
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            if conn.execute(text("PRAGMA quick_check")).scalar() != "ok":
                raise RestoreRefused("the backup's database fails SQLite's quick_check; not restoring")
            signer, keys = _ledger_keys(conn, kek, manifest["node"], kek_source)
            if signer.public_key != manifest_key:
                raise RestoreRefused("the snapshot's ledger key is not the key that signed the "
                                     "manifest; not restoring")
            _sealed_keys(conn, kek)
            _check_identity(conn, signer, manifest, roots, backup / FILES["tls_cert"],
                            backup / FILES["tls_key"], kek)
        _check_ledger(engine, signer, keys, manifest)
    except sa_exc.DatabaseError:
        raise RestoreRefused("the backup's database cannot be read as a Shuqiao node database; "
                             "not restoring") from None
    finally:
        engine.dispose()
    return signer

"""This node's ledger key in the federation PKI: certified by its TLS identity, rotated.

`shuqiao serve` calls `ensure_certified` at start, so every node (the demo's, the test
federations', an existing node after its next restart) publishes a certification of its
ledger key signed with its CA-issued TLS identity (node/ledger/anchor.py says why and
what a verifier checks). `shuqiao ledger certify` does the same on demand, and
`shuqiao ledger rotate-key` replaces the key: the new key is certified, the old key
signs a handover, and both are ledgered, under a last head signed by the old key.
Each certification is ledgered too (`ledger_key_certified`), so the log itself shows
every key it was ever anchored with.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from node.runtime import admin_log
from node.runtime.context import NodeContext
from node.ledger import LedgerPublicKey, LedgerSigningKey
from node.ledger.anchor import (CERTIFIED,
    ROTATED,
    CertificationError,
    KeyCertification,
    KeyStatement,
    certify,
    current_certification,
    fingerprint,
    rotation_details,
    store_certification)
from node.ledger.canonical import rfc3339
from node.ledger.signing import store_signer
from node.ledger.tables import ledger_signing_keys
from node.keys.pki import load_tls_identity

__all__ = ["ensure_certified", "certify_at_start", "rotate", "RENEW_BEFORE"]

log = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(days=30)  # re-certify when the certification ends sooner than this
_SKEW = timedelta(minutes=5)


def _identity(ctx: NodeContext) -> tuple[bytes, bytes, x509.Certificate]:
    tls = ctx.config.tls
    cert_pem, key_pem = load_tls_identity(ctx.config.path(tls.cert), ctx.config.path(tls.key),
                                          kek=ctx.kek if tls.key_sealed else None)
    return cert_pem, key_pem.expose(), x509.load_pem_x509_certificates(cert_pem)[0]


def _created(ctx: NodeContext, key: LedgerPublicKey) -> datetime:
    with ctx.engine.connect() as conn:
        created = conn.execute(select(func.min(ledger_signing_keys.c.created_at))
                               .where(ledger_signing_keys.c.public_key == key.text)).scalar()
    if created is None:
        return ctx.clock.now()
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def ensure_certified(ctx: NodeContext, *, force: bool = False) -> tuple[KeyCertification, bool]:
    """The certification of the current ledger key; a new one when there is none, when
    it was signed by another TLS certificate than the configured one, or when it ends
    within RENEW_BEFORE. Returns (certification, whether it is new).

    The statement's validity starts when the key was created (heads signed before the
    certification stay covered) and ends with the TLS certificate's.
    """
    ledger = ctx.ledger
    key = ledger.public_key
    cert_pem, key_pem, leaf = _identity(ctx)
    now = ctx.clock.now()
    current = current_certification(ctx.engine, key)
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    if (not force and current is not None and current.chain[0] == leaf_der
            and current.statement.not_after > rfc3339(now + RENEW_BEFORE)):
        return current, False
    statement = KeyStatement(ledger.node_id, key, rfc3339(_created(ctx, key) - _SKEW),
                             rfc3339(leaf.not_valid_after_utc), rfc3339(now),
                             current.statement.previous_key if current else None)
    certification = certify(statement, cert_pem, key_pem)
    with ctx.engine.begin() as conn:
        store_certification(conn, certification, now=now)
        admin_log.record(ctx, conn, CERTIFIED, "node", public_key=key.text,
                         fingerprint=fingerprint(key), certification=certification.digest(),
                         not_after=statement.not_after)
    return certification, True


def certify_at_start(ctx: NodeContext) -> None:
    """`ensure_certified` for `serve`: a node that cannot certify still serves, and says why."""
    try:
        if ensure_certified(ctx)[1]:
            log.info("ledger key certified with this node's TLS identity")
    except CertificationError as exc:
        log.warning("ledger key not certified: %s", exc)


def rotate(ctx: NodeContext) -> tuple[LedgerPublicKey, LedgerPublicKey, KeyCertification]:
    """Replace the ledger key; returns (old key, new key, the new key's certification).

    One transaction: the new generation (sealed under the KEK), its certification, the
    `ledger_key_rotated` entry with the old key's handover, and a head over that entry
    signed with the old key, then the same head signed with the new one. Run it with the node stopped: a running `serve` keeps the
    key it loaded until it restarts.
    """
    ledger = ctx.ledger
    old = ledger.signer
    new = LedgerSigningKey.generate(ledger.node_id)
    cert_pem, key_pem, leaf = _identity(ctx)
    now = ctx.clock.now()
    statement = KeyStatement(ledger.node_id, new.public_key, rfc3339(now - _SKEW),
                             rfc3339(leaf.not_valid_after_utc), rfc3339(now), old.public_key)
    certification = certify(statement, cert_pem, key_pem)
    with ctx.engine.begin() as conn:
        generation = conn.execute(select(func.max(ledger_signing_keys.c.generation)).where(
            ledger_signing_keys.c.node == ledger.node_id)).scalar() or 0
        store_signer(conn, ctx.kek, new, generation + 1, now=now)
        store_certification(conn, certification, now=now)
        admin_log.record(ctx, conn, ROTATED, "node",
                         **rotation_details(old, new.public_key, certification))
        ledger.sign_head(conn, force=True)  # the old key's last word covers the handover
        new.earlier = (old.public_key, *old.earlier)
        ledger.signer = new
        try:  # and the new key's first: the head served from now on
            ledger.sign_head(conn, force=True)
        except BaseException:
            ledger.signer = old
            raise
    return old.public_key, new.public_key, certification

"""Witnesses anchored in the federation PKI: a cosignature counts only under a certified key.

An auditor asking for k cosignatures (`audit verify --witness-quorum k`) must know whose
keys made them. Out of band (`--witness-key NODE=ed25519:…`) is one answer; the other is
the one the log's own key already has (anchor.py): every witness's ledger key is
certified for its node id with its CA-issued TLS identity, and that certification
travels with the cosignatures it makes:

- push: a node that asked a partner to cosign its head fetches the partner's published
  certification over the same connection (GetPublicKey) and keeps it;
- exchange: a witness's exchange document carries its current certification
  ("certification", witness_gossip.py), kept by the node whose head it cosigned.

A node keeps a certification only when it certifies the key it checked the witness's
cosignatures with, and serves every one it holds in its witness record
("witness_certifications": {witness: [certification, ...]}, witness_evidence.py), so over
gRPC, HTTPS and in exports. `certified_witness_key` is the auditor's rule, CT-monitor
style: a cosignature of the log's head counts for witness W only if one of W's
certifications chains to the auditor's CA (`--ca`), names W, was valid at the
cosignature's time, and certifies the key the cosignature verifies with. The log's own
node is never its own witness, and each witness node counts once.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from sqlalchemy import Engine, insert, select

from node.core.clock import SYSTEM_CLOCK
from node.ledger.anchor import CertificationError, KeyCertification, verify_certification
from node.ledger.signing import Cosignature, LedgerPublicKey, SignatureError
from node.ledger.tables import witness_certifications

__all__ = ["keep_certification", "certifications_of", "certified_witness_key",
           "witness_certifications_in"]


def keep_certification(engine: Engine, witness: str, key: LedgerPublicKey,
                       certification: KeyCertification | None, *,
                       now: datetime | None = None) -> bool:
    """Keep `witness`'s certification of `key` (the key its cosignatures verified with).

    A certification of another key, or one already on record, is not kept. Whether it
    holds is the auditor's to judge against its own CA; this node only serves it.
    """
    if certification is None or certification.statement.public_key != key:
        return False
    text = certification.to_json()
    with engine.begin() as conn:
        held = set(conn.execute(select(witness_certifications.c.certification).where(
            witness_certifications.c.witness == witness)).scalars())
        if text in held:
            return False
        conn.execute(insert(witness_certifications).values(
            witness=witness, public_key=key.text, certification=text,
            created_at=now or SYSTEM_CLOCK.now()))
    return True


def certifications_of(engine: Engine, witnesses: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """{witness: [certification, ...]} for every witness named, oldest first."""
    wanted = sorted(set(witnesses))
    found: dict[str, list[dict[str, Any]]] = {}
    if not wanted:
        return found
    query = (select(witness_certifications.c.witness, witness_certifications.c.certification)
             .where(witness_certifications.c.witness.in_(wanted))
             .order_by(witness_certifications.c.id))
    with engine.connect() as conn:
        for row in conn.execute(query):
            found.setdefault(row.witness, []).append(KeyCertification.from_json(row.certification).to_dict())
    return found


def certified_witness_key(cosignature: Cosignature, certifications: Sequence[Any],
                          roots: Sequence[x509.Certificate]) -> LedgerPublicKey:
    """The certified key `cosignature` verifies with, from its witness's certifications.

    Args:
        certifications: what the log's witness record holds for `cosignature.witness`
            (dicts, as served).
        roots: the auditor's federation CA.

    Raises:
        CertificationError: no certification, or none that holds; says why (of the
            newest one when several fail).
    """
    if not certifications:
        raise CertificationError("no certification of its ledger key comes with it")
    reason = ""
    for d in reversed(certifications):  # the newest first
        try:
            certification = KeyCertification.from_dict(d)
            key = certification.statement.public_key
            verify_certification(certification, roots, node=cosignature.witness, key=key,
                                 at=cosignature.time)
            cosignature.verify(key)
            return key
        except CertificationError as exc:
            reason = reason or str(exc)
        except SignatureError:
            reason = reason or f"it does not verify with the key certified for {cosignature.witness}"
    raise CertificationError(reason)


def witness_certifications_in(doc: Mapping[str, Any] | None, witness: str) -> list[Any]:
    """The certifications a witness record holds for `witness`."""
    held = (doc or {}).get("witness_certifications") or {}
    found = held.get(witness, []) if isinstance(held, Mapping) else []
    return found if isinstance(found, list) else []

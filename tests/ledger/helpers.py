"""Ledger test helpers: engines with the ledger schema, a fixed clock, sample entries."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from node.ledger import Ledger, LedgerSigningKey, QueryEntry
from node.ledger.tables import install_ledger_triggers
from node.runtime.context import create_schema
from node.storage.schema import make_engine


def open_engine(url: str):
    engine = make_engine(url)
    create_schema(engine)
    install_ledger_triggers(engine)
    return engine


class FixedClock:
    """Injected time: entries and heads made in tests are reproducible."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def make_ledger(engine, node: str = "hrss", **kwargs) -> Ledger:
    return Ledger(engine, LedgerSigningKey.generate(node), clock=FixedClock(), **kwargs)


def query(node: str = "hrss", *, role: str = "answerer", partner: str = "fund", n: int = 10,
          outcome: str = "answered", query_id: str | None = None, phase: str = "completed",
          **extra) -> QueryEntry:
    asker, answerer = (partner, node) if role == "answerer" else (node, partner)
    fields = dict(query_id=query_id or str(uuid.uuid4()), phase=phase, role=role,
                  asker=asker, answerer=answerer, kind="membership",
                  dataset="flexible_workers", version=1, epoch=1, purpose="housing_fund",
                  elements=n, outcome="admitted" if phase == "admitted" else outcome,
                  reason="", time="2025-03-01T08:00:00Z")
    fields.update(extra)
    return QueryEntry(**fields)


def fill(ledger: Ledger, count: int, **kwargs) -> list[int]:
    with ledger.engine.begin() as conn:
        return ledger.append_batch(conn, [query(ledger.node_id, n=i + 1, **kwargs)
                                          for i in range(count)])


def certified(ledger: Ledger, pki, *, not_before: str = "2025-01-01T00:00:00Z",
              not_after: str | None = None, node: str | None = None):
    """Certify `ledger`'s key with a TLS identity from the CA in `pki` (created if missing),
    as `shuqiao serve` does, and store the certification with the ledger."""
    from pathlib import Path

    from cryptography import x509

    from node.ledger.anchor import KeyStatement, certify, store_certification
    from node.ledger.canonical import rfc3339
    from node.keys.pki import init_ca, issue_node_cert
    pki, node = Path(pki), node or ledger.node_id
    if not (pki / "ca.pem").exists():
        init_ca(pki)
    if not (pki / "nodes" / f"{node}.pem").exists():
        issue_node_cert(pki, node, pki / "nodes")
    cert_pem = (pki / "nodes" / f"{node}.pem").read_bytes()
    leaf = x509.load_pem_x509_certificate(cert_pem)
    statement = KeyStatement(node, ledger.public_key, not_before,
                             not_after or rfc3339(leaf.not_valid_after_utc),
                             rfc3339(datetime.now(timezone.utc)))
    certification = certify(statement, cert_pem, (pki / "nodes" / f"{node}.key").read_bytes())
    with ledger.engine.begin() as conn:
        store_certification(conn, certification)
    return certification

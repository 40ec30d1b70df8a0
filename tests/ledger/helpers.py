"""Ledger test helpers: engines with the ledger schema, a fixed clock, sample entries."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from node.ledger import Ledger, LedgerSigningKey, QueryEntry
from node.ledger.tables import install_ledger_triggers
from node.store import create_schema, make_engine


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

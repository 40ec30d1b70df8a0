"""The append-only query log: metadata of every query made or answered.

Entries hold who asked whom, which dataset version and key epoch, the purpose, the
number of elements and the outcome — never an identifier, an attribute value or a
message body. The database refuses UPDATE and DELETE on this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Connection, Engine, insert, select

from .store import query_log

OUTCOMES = ("answered", "refused", "failed", "aborted")


@dataclass
class QueryRecord:
    query_id: str
    role: str  # asker | answerer
    asker: str
    answerer: str
    kind: str
    dataset: str
    version: int = 0
    epoch: int = 0
    purpose: str = ""
    elements: int = 0
    matched: int | None = None
    outcome: str = "failed"
    reason: str = ""
    predicate: str = ""             # canonical predicate text, if any
    authorisation_digest: str = ""  # hex SHA-256 of the asker's authorisation references
    epsilon_micro: int = 0          # differential privacy spent by this query (millionths)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def write(self, target: Engine | Connection) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        values = {**self.__dict__, "reason": self.reason[:500],
                  "finished_at": datetime.now(timezone.utc)}
        if isinstance(target, Connection):
            target.execute(insert(query_log).values(**values))
        else:
            with target.begin() as conn:
                conn.execute(insert(query_log).values(**values))


def seen(conn: Connection, query_id: str, role: str) -> bool:
    return conn.execute(select(query_log.c.seq).where(
        query_log.c.query_id == query_id, query_log.c.role == role).limit(1)).first() is not None


def entries(conn: Connection, limit: int = 100) -> list[dict]:
    rows = conn.execute(select(query_log).order_by(query_log.c.seq.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]

"""Recording queries: the query-log row and the verifiable ledger entry, committed together.

Entries hold who asked whom, which dataset version and key epoch, the purpose, the
number of elements and the outcome — never an identifier, an attribute value or a
message body. The database refuses UPDATE and DELETE on the query log and the ledger.

The answering node appends an *admitted* entry before the first answer leaves it, and
its *completed* entry (with the receipt it signs for the asker) before the summary
leaves; so a query that yielded anything is in its ledger even if the node dies.
The asking node appends one completed entry holding the answerer's verified receipt.

An answering node's query that ends unanswered after something was evaluated (the
asker finished early, sent an invalid element or a malformed proof request, or went
away) is charged what was evaluated: its row holds that number, with the outcome
``broken_by_asker`` where the asker broke the protocol, else ``aborted`` or ``failed``.
Writing the row settles the query's admission claim (node/policy/admission.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, insert, select

from node.core.clock import SYSTEM_CLOCK
from node.policy.admission import settle, taken
from node.policy.metrics import count_query
from node.storage.schema import query_log

log = logging.getLogger("shuqiao.queries")

OUTCOMES = ("answered", "refused", "failed", "aborted", "broken_by_asker")


@dataclass
class QueryRecord:
    query_id: str
    role: str  # asker | answerer | local (a lookup in this node's own dataset)
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
    evaluated: int = 0              # answerer: elements whose answer has left (or is leaving)
    claimed: bool = False           # answerer: this record holds the query id's admission claim
    # Every record the node makes passes started_at=ctx.clock.now(); the default serves
    # records built by hand (tools, tests).
    started_at: datetime = field(default_factory=SYSTEM_CLOCK.now)
    receipt: object = None          # asker: the answerer's verified receipt
    summary: object = None          # asker: the answerer's closing message
    written: bool = False
    # When the query began, for its latency (a duration: the monotonic clock, never the wall's).
    began: float = field(default_factory=time.monotonic, repr=False)

    def entry(self, ledger, phase: str):
        from node.ledger import QueryEntry
        from node.ledger.canonical import clean_text
        admitted = phase == "admitted"
        return QueryEntry(
            query_id=self.query_id, phase=phase,
            role="asker" if self.role == "local" else self.role, asker=self.asker,
            answerer=self.answerer, kind=self.kind, dataset=clean_text(self.dataset, 64),
            version=self.version, epoch=self.epoch, purpose=clean_text(self.purpose, 64),
            elements=self.elements, outcome="admitted" if admitted else self.outcome,
            reason="" if admitted else redacted(self.reason, 500), time=ledger.now(),
            matched=None if admitted or self.role == "answerer" else self.matched,
            authorisation_digest=self.authorisation_digest or None,
            receipt=None if admitted else self.receipt,
            predicate=redacted(self.predicate, 512) or None,
            epsilon_micro=self.epsilon_micro or None)

    def admit(self, ctx) -> None:
        """Answerer: the admitted entry, committed before any answer is sent."""
        ledger = ctx.ledger  # loaded (or its key created) before our write transaction opens
        with ctx.engine.begin() as conn:
            ledger.append(conn, self.entry(ledger, "admitted"))

    def write(self, ctx):
        """The outcome: query-log row and completed ledger entry in one transaction.

        Returns the signed receipt for an answerer's answered query (send it only now,
        after the commit), else None.
        """
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        self._charge()
        values = {k: v for k, v in self.__dict__.items()
                  if k not in ("receipt", "summary", "written", "evaluated", "claimed", "began")}
        values.update(reason=redacted(self.reason, 500), predicate=redacted(self.predicate, 512),
                      finished_at=ctx.clock.now())
        receipt = None
        ledger = ctx.ledger  # loaded (or its key created) before our write transaction opens
        entry = self.entry(ledger, "completed")
        with ctx.engine.begin() as conn:
            if self.role == "answerer" and not self.claimed and taken(conn, self.query_id):
                self.written = True  # a refused stream reusing a claimed id: the claim's
                return None          # own record stands, one per id
            conn.execute(insert(query_log), values)  # bound, so the statement compiles once
            seconds = time.monotonic() - self.began
            labels = count_query(conn, ctx.config, self, seconds)  # /metrics: the same commit
            if self.claimed:  # never another stream's claim on the same id
                settle(conn, self.query_id)
            if self.role == "answerer" and self.outcome == "answered":
                receipt = ledger.append_completed(conn, entry)
            else:
                ledger.append(conn, entry)
        self.written = True
        _log_event(self, labels, seconds)
        return receipt

    def _charge(self) -> None:
        """An answerer's unanswered ending: the row holds what was evaluated, and a refusal
        after anything was evaluated is the asker breaking the protocol."""
        if self.role != "answerer" or self.outcome == "answered":
            return
        if self.outcome == "refused" and self.evaluated:
            self.outcome = "broken_by_asker"
        if self.outcome != "refused":
            self.elements = self.evaluated


def _log_event(record: QueryRecord, labels: dict[str, str], seconds: float) -> None:
    """One line per recorded query: its id and the metric labels, never a reason's text
    (a partner wrote it) nor anything asked. JSON logs carry the fields (node/core/logs.py)."""
    log.info("%s %s query %s with %s: %s, %d elements, %.2f s", labels["role"], labels["kind"],
             record.query_id, labels["partner"], labels["outcome"], record.elements, seconds,
             extra={"query_id": record.query_id, **{k: labels[k] for k in (
                 "role", "kind", "partner", "dataset", "purpose", "outcome")},
                 "elements": record.elements, "seconds": round(seconds, 3)})


def redacted(text: str, limit: int) -> str:
    """Free text fit for the query log and the ledger alike (one redaction for both)."""
    from node.ledger.canonical import clean_text
    return clean_text(text, limit)


def seen(conn: Connection, query_id: str, role: str) -> bool:
    return conn.execute(select(query_log.c.seq).where(
        query_log.c.query_id == query_id, query_log.c.role == role).limit(1)).first() is not None


def entries(conn: Connection, limit: int = 100) -> list[dict]:
    """The latest rows, newest first, each with ``ledger_index``: where this node's ledger
    holds the query's last entry (what a result file names)."""
    from node.ledger.tables import ledger_entries
    position = (select(func.max(ledger_entries.c.idx))
                .where(ledger_entries.c.query_id == query_log.c.query_id).scalar_subquery())
    rows = conn.execute(select(query_log, position.label("ledger_index"))
                        .order_by(query_log.c.seq.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]

"""Recording queries: the admission claim, the query-log row and the verifiable ledger entry,
and the running totals of the log (/metrics).

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
Writing the row settles the query's admission claim (below).

Admitting a query claims its id and reserves its quota and epsilon in one step. Checking a quota at admission and recording the charge at completion lets concurrent
queries all pass the same check. Here the check and the reservation are one
transaction, serialised per partner x dataset: SQLite takes its write lock first
(``BEGIN IMMEDIATE``); server databases lock that pair's row in ``admission_locks``
(``SELECT ... FOR UPDATE``). Under that lock the quotas and the DP budget count the
charged query-log rows plus every open claim at its full reservation, and the new
claim is inserted. The claim's primary key is the query id, so a second stream with
the same id is refused whatever the timing.

A claim is settled in the transaction that writes its query's log row, which then
holds what is charged: everything for an answered query, what was evaluated for one that ended otherwise, nothing for one refused before
any answer. A node killed mid-query leaves its claims open, and open claims keep
counting at their full amount across restarts.

Query metrics are running totals of the query log, labelled by configured names only.
Every query this node asks or answers is counted where its query-log row is written
(`QueryRecord.write`), in the same transaction: one row of `query_metrics` per label set and latency bucket holds how many queries, elements and
seconds. `/metrics` (node/http/metrics.py) reads those few rows when it is scraped, so
the queries a `shuqiao query` process asks count as well as those `shuqiao serve`
answers, a restart loses nothing, and the totals agree with the log by construction.

A label holds only a name some configuration gave: partner and node ids, dataset names,
purpose codes, query kinds, outcomes. On the answering side the dataset and purpose
must be declared in this node's config; on the asking side they are the partner's, and
only its answer vouches for them (a refused or failed query may name anything the
operator typed). Anything else is counted as "other", so neither an identifier nor a
raw value can reach a label, and the number of series stays bounded by the config.
"""
from __future__ import annotations

import bisect
import functools
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, exc, func, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite

from node.core.clock import SYSTEM_CLOCK
from node.core.config import DATASET_NAME, PURPOSE, DatasetGrant, NodeConfig, QueryKindName
from node.core.errors import AlreadyUsed
from node.policy import checks as policy
from node.storage.schema import admission_locks, query_claims, query_log, query_metrics

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


# -- admission: the claim on a query id and its reservation ----------------------------

class QueryIdTaken(AlreadyUsed):
    """The query id was already claimed or recorded by this node."""


@contextmanager
def serialised(engine: Engine, partner: str, dataset: str) -> Iterator[Connection]:
    """A transaction no other admission to (partner, dataset) runs alongside."""
    if engine.dialect.name != "sqlite":
        _ensure_lock_row(engine, partner, dataset)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's write lock, taken first
        else:
            conn.execute(select(admission_locks.c.partner).where(
                admission_locks.c.partner == partner,
                admission_locks.c.dataset == dataset).with_for_update())
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _ensure_lock_row(engine: Engine, partner: str, dataset: str) -> None:
    with engine.connect() as conn:
        found = conn.execute(select(admission_locks.c.partner).where(
            admission_locks.c.partner == partner, admission_locks.c.dataset == dataset)).first()
        if found is not None:
            return
        try:
            conn.execute(insert(admission_locks).values(partner=partner, dataset=dataset))
            conn.commit()
        except exc.IntegrityError:  # another admission created it first
            conn.rollback()


def reserve(engine: Engine, grant: DatasetGrant, *, query_id: str, dataset: str, epoch: int,
            elements: int, now: datetime, epsilon_micro: int = 0) -> None:
    """Check the quotas (and the DP budget when `epsilon_micro`) and reserve them.

    Raises:
        QueryIdTaken: the id was claimed or recorded before.
        policy.PolicyRefusal: a quota or the budget would be exceeded (nothing reserved).
    """
    try:
        with serialised(engine, grant.partner, dataset) as conn:
            if taken(conn, query_id):
                raise QueryIdTaken()
            policy.check_quotas(conn, grant, dataset=dataset, elements=elements, epoch=epoch, now=now)
            if epsilon_micro:
                policy.check_dp(conn, grant, dataset=dataset, epoch=epoch)
            conn.execute(insert(query_claims).values(
                query_id=query_id, partner=grant.partner, dataset=dataset, epoch=epoch,
                elements=elements, epsilon_micro=epsilon_micro, admitted_at=now, settled=False))
    except exc.IntegrityError:  # the same id admitted at once for another dataset
        raise QueryIdTaken() from None


def taken(conn: Connection, query_id: str) -> bool:
    """Whether this node claimed or recorded (as answerer) the query id."""
    if conn.execute(select(query_claims.c.query_id).where(
            query_claims.c.query_id == query_id)).first() is not None:
        return True
    return conn.execute(select(query_log.c.seq).where(
        query_log.c.query_id == query_id, query_log.c.role == "answerer").limit(1)).first() is not None


def settle(conn: Connection, query_id: str) -> None:
    """Close a claim; called in the transaction that writes the query's log row."""
    conn.execute(update(query_claims).where(query_claims.c.query_id == query_id,
                                            query_claims.c.settled.is_(False))
                 .values(settled=True))


# -- metrics: running totals of the query log -------------------------------------------

# Upper bounds (seconds) of the latency histogram's buckets; a last one, +Inf, is implied.
# From a cached-table membership query (tens of milliseconds) to a million-row aggregate.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
OTHER = "other"
ROLES = ("asker", "answerer", "local")
KINDS = frozenset(k.value for k in QueryKindName)
_KEY = ("role", "kind", "partner", "dataset", "purpose", "outcome", "bucket")
_DATASET, _PURPOSE = re.compile(DATASET_NAME), re.compile(PURPOSE)


def bucket_of(seconds: float) -> int:
    """Index of the smallest bucket holding `seconds` (len(LATENCY_BUCKETS): +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def _configured_purposes(config: NodeConfig) -> set[str]:
    return {p.code for d in config.datasets for g in d.grants for p in g.purposes}


def _vouched(value: str, pattern: re.Pattern) -> bool:
    """A partner's name, as its answer confirmed it: well formed and not identifier-shaped."""
    from node.ledger.canonical import clean_text
    return bool(pattern.fullmatch(value)) and clean_text(value, 64) == value


def labels(config: NodeConfig, record: QueryRecord) -> dict[str, str]:
    """The record's metric labels: configured names, "other" for anything else.

    The outcome is one of OUTCOMES: `QueryRecord.write` refuses any other.
    """
    answering = record.role == "answerer"
    partner = record.asker if answering else record.answerer
    if partner not in {p.id for p in config.partners} | {config.node.id}:
        partner = OTHER
    if record.role == "asker":  # the partner's names: vouched for only by its answer
        answered = record.outcome == "answered"
        dataset = record.dataset if answered and _vouched(record.dataset, _DATASET) else OTHER
        purpose = record.purpose if answered and _vouched(record.purpose, _PURPOSE) else OTHER
    else:
        dataset = record.dataset if any(d.name == record.dataset for d in config.datasets) else OTHER
        purpose = record.purpose if record.purpose in _configured_purposes(config) else OTHER
    return {"role": record.role if record.role in ROLES else OTHER,
            "kind": record.kind if record.kind in KINDS else OTHER,
            "partner": partner, "dataset": dataset, "purpose": purpose,
            "outcome": record.outcome}


def count_query(conn: Connection, config: NodeConfig, record: QueryRecord,
                seconds: float) -> dict[str, str]:
    """Add one query to the totals, in the caller's transaction (the query-log row's);
    returns its labels."""
    named = labels(config, record)
    add = {"queries": 1, "elements": int(record.elements), "seconds": float(seconds)}
    conn.execute(_upsert(conn.dialect.name, tuple(add)), {**named, "bucket": bucket_of(seconds), **add})
    return named


@functools.lru_cache(maxsize=8)
def _upsert(dialect: str, summed: tuple[str, ...]):
    """INSERT, or add to the existing row of the same labels: one atomic statement, built
    once per dialect (its values are bound per execution, so it is compiled once too)."""
    t = query_metrics
    if dialect in ("sqlite", "postgresql"):
        stmt = (sqlite if dialect == "sqlite" else postgresql).insert(t)
        return stmt.on_conflict_do_update(index_elements=list(_KEY),
                                          set_={c: t.c[c] + stmt.excluded[c] for c in summed})
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(t)
        return stmt.on_duplicate_key_update({c: t.c[c] + stmt.inserted[c] for c in summed})
    raise ValueError(f"unsupported database dialect for query metrics: {dialect}")


def totals(conn: Connection) -> list[dict]:
    """Every row of the totals: labels, bucket, queries, elements, seconds."""
    return [dict(r._mapping) for r in conn.execute(select(query_metrics))]

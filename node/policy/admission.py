"""Admitting a query: claim its id and reserve its quota and epsilon, in one step.

Checking a quota at admission and recording the charge at completion lets concurrent
queries all pass the same check. Here the check and the reservation are one
transaction, serialised per partner x dataset: SQLite takes its write lock first
(``BEGIN IMMEDIATE``); server databases lock that pair's row in ``admission_locks``
(``SELECT ... FOR UPDATE``). Under that lock the quotas and the DP budget count the
charged query-log rows plus every open claim at its full reservation, and the new
claim is inserted. The claim's primary key is the query id, so a second stream with
the same id is refused whatever the timing.

A claim is settled in the transaction that writes its query's log row
(node/policy/querylog.py), which then holds what is charged: everything for an answered
query, what was evaluated for one that ended otherwise, nothing for one refused before
any answer. A node killed mid-query leaves its claims open, and open claims keep
counting at their full amount across restarts.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, exc, insert, select, update

from node.core.errors import AlreadyUsed
from node.policy import checks as policy
from node.core.config import DatasetGrant
from node.storage.schema import admission_locks, query_claims, query_log


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

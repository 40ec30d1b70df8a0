"""Predicate tables a partner prepares: a daily limit, a bounded cache, a ledger entry each.

PrepareTable builds, for one partner, the table of a dataset's rows that satisfy a
predicate. Each build costs the node time and disk and tells the partner a row count,
so the policy limits builds per partner and dataset in any 24 hours
(`daily_preparations`), each build is ledgered (`predicate_prepared`: the dataset,
version, partner, epoch, the SHA-256 of the canonical predicate, its text with any
identifier-shaped literal redacted, and the row count), and the cached tables of one
partner are bounded in number and bytes (`[predicate_tables]`), the least recently
prepared going first. A query naming an evicted table is refused until the partner
prepares it again, which is a new, counted build. Preparing a table still cached only
marks it used.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from node.core.errors import LimitReached
from node.storage.schema import delete_tables, predicate_preparations, tag_chunks, tag_tables

log = logging.getLogger(__name__)
_PREDICATE_TEXT = 200  # characters of the redacted predicate kept in the ledger


class PreparationLimit(LimitReached):
    """The partner reached its daily number of predicate-table builds for a dataset."""


def predicate_digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def mark_used(conn: Connection, table_id: int, now: datetime) -> None:
    conn.execute(update(predicate_preparations).where(predicate_preparations.c.table_id == table_id)
                 .values(used_at=now))


def check_daily(conn: Connection, grant, dataset: str, peer: str, now: datetime) -> None:
    """Raise PreparationLimit if another build would exceed the grant's daily number
    (builds in the 24 hours before `now`, the context's time)."""
    since = now - timedelta(days=1)
    p = predicate_preparations.c
    built = conn.execute(select(func.count()).select_from(predicate_preparations).where(
        p.partner == peer, p.dataset == dataset, p.prepared_at >= since)).scalar_one()
    if built >= grant.daily_preparations:
        raise PreparationLimit(
            f"at most {grant.daily_preparations} predicate tables of dataset {dataset!r} may be "
            "prepared in 24 hours, and that many were; tables still prepared keep answering")


def record_build(ctx, conn: Connection, *, dataset: str, version: int, peer: str, epoch: int,
                 canonical: str, table_id: int, rows: int) -> None:
    """Count and ledger a build on the caller's transaction, then evict beyond the bounds."""
    from node.runtime.admin_log import record
    from node.ledger.canonical import clean_text
    now = ctx.clock.now()
    p = predicate_preparations.c
    # A row left by a table deleted elsewhere (retirement, pruning) may name a reused id.
    conn.execute(update(predicate_preparations).where(p.table_id == table_id).values(table_id=None))
    conn.execute(insert(predicate_preparations).values(
        partner=peer, dataset=dataset, table_id=table_id, prepared_at=now, used_at=now))
    record(ctx, conn, "predicate_prepared", dataset, version=version, partner=peer, epoch=epoch,
           predicate_digest=predicate_digest(canonical),
           predicate=clean_text(canonical, _PREDICATE_TEXT), rows=rows)
    evict(conn, ctx.config.predicate_tables, peer, keep=table_id)


def evict(conn: Connection, bounds, peer: str, keep: int | None = None) -> list[int]:
    """Delete this partner's least recently used predicate tables beyond `bounds`.

    `keep` (the table just prepared) stays even if it alone exceeds the byte bound.
    Returns the ids of the tables deleted.
    """
    t, p = tag_tables.c, predicate_preparations.c
    last_used = func.coalesce(func.max(p.used_at), t.created_at)
    rows = conn.execute(
        select(t.id, t.row_count, t.tag_length, t.label_length, last_used.label("last_used"))
        .select_from(tag_tables.outerjoin(predicate_preparations, p.table_id == t.id))
        .where(t.partner == peer, t.predicate != "")
        .group_by(t.id, t.row_count, t.tag_length, t.label_length, t.created_at)
        .order_by(last_used.desc(), t.id.desc())).all()
    rows.sort(key=lambda r: r.id != keep)  # the new table first, then by last use
    tables = used = 0
    doomed: list[int] = []
    for r in rows:
        size = r.row_count * (r.tag_length + r.label_length)
        if r.id == keep or (not doomed and tables + 1 <= bounds.max_tables
                            and used + size <= bounds.max_bytes):
            tables, used = tables + 1, used + size
        else:
            doomed.append(r.id)
    if doomed:
        delete_tables(conn, tag_tables, tag_chunks, t.id.in_(doomed))
        conn.execute(update(predicate_preparations).where(p.table_id.in_(doomed)).values(table_id=None))
        log.info("evicted %d predicate table(s) of partner %s (kept %d, %d bytes)",
                 len(doomed), peer, tables, used)
    return doomed


"""Ledger benchmarks: durable append rate on SQLite, and building and verifying 1M entries.

Each measurement is one JSON line (bench.common.emit):

* ledger_append_baseline  bare sqlite3 commits per second on the same disk: the
                    ceiling a durable append can reach at that moment.
* ledger_append     durable appends per second on a SQLite file (WAL, synchronous=FULL,
                    as node.storage.schema.make_engine sets it up), each append its own committed
                    transaction; tree heads signed on every append vs every 100 entries.
                    Target: >= 2,000/s.
* ledger_build      time to build a 1,000,000-entry ledger with append_batch in large
                    transactions (how fast a ledger of that size can be set up, not a
                    rate a node needs).
* ledger_verify     verify_all over the database, and the auditor's verify over a
                    JSON-lines export (plus the time to write the export).
                    Target: < 30 s for 1,000,000 entries.
"""
from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from node.ledger import HeadPolicy, Ledger, LedgerSigningKey, QueryEntry
from node.ledger.audit import KnownHeads, verify
from node.ledger.sources import ExportSource, write_export
from node.ledger.tables import install_ledger_triggers
from node.runtime.context import create_schema
from node.storage.schema import make_engine

from .common import emit, note

APPEND_TARGET = 2000
VERIFY_TARGET_SECONDS = 30.0


def _entry(i: int, time_text: str) -> QueryEntry:
    return QueryEntry(query_id=str(uuid.uuid4()), phase="completed", role="answerer",
                      asker="fund", answerer="hrss", kind="membership",
                      dataset="flexible_workers", version=3, epoch=2, purpose="housing_fund",
                      elements=1 + i % 5000, outcome="answered", reason="", time=time_text)


def _ledger(path: Path, policy: HeadPolicy = HeadPolicy()) -> Ledger:
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    install_ledger_triggers(engine)
    return Ledger(engine, LedgerSigningKey.generate("hrss"), policy=policy)


def bench_fsync_baseline(work: Path, count: int) -> None:
    """The disk's ceiling: bare sqlite3 commits of one small row, same pragmas.

    A durable append is one fsync'd commit, so its rate follows this one; on a shared
    machine both move with other workloads' I/O.
    """
    path = work / "baseline.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, b BLOB)")
    db.commit()
    start = time.perf_counter()
    for i in range(count):
        db.execute("INSERT INTO t VALUES (?, ?)", (i, b"x" * 400))
        db.commit()
    seconds = time.perf_counter() - start
    db.close()
    emit(bench="ledger_append_baseline", store="sqlite3-wal-full-bare-commit", commits=count,
         per_second=round(count / seconds))


def bench_appends(work: Path, count: int) -> None:
    for label, policy in (("every_append", HeadPolicy(every_entries=1)),
                          ("every_100", HeadPolicy(every_entries=100))):
        ledger = _ledger(work / f"append-{label}.db", policy)
        engine = ledger.engine
        for i in range(50):  # warm up: connection pool, statement compilation
            with engine.begin() as conn:
                ledger.append(conn, _entry(i, ledger.now()))
        start = time.perf_counter()
        for i in range(count):
            entry = _entry(i, ledger.now())
            with engine.begin() as conn:
                ledger.append(conn, entry)
        seconds = time.perf_counter() - start
        rate = count / seconds
        emit(bench="ledger_append", store="sqlite-wal-full", head_signing=label, appends=count,
             seconds=round(seconds, 3), per_second=round(rate), target_per_second=APPEND_TARGET,
             meets_target=rate >= APPEND_TARGET, heads=len(ledger.heads()))
        engine.dispose()


def bench_million(work: Path, count: int, batch: int = 50_000) -> None:
    ledger = _ledger(work / "million.db")
    stamp = ledger.now()
    start = time.perf_counter()
    for first in range(0, count, batch):
        entries = [_entry(i, stamp) for i in range(first, min(count, first + batch))]
        with ledger.engine.begin() as conn:
            ledger.append_batch(conn, entries)
        note(f"ledger: built {first + len(entries)} of {count}")
    head = ledger.sign_head()
    emit(bench="ledger_build", entries=count, batch=batch,
         seconds=round(time.perf_counter() - start, 1))

    start = time.perf_counter()
    report = ledger.verify_all()
    seconds = time.perf_counter() - start
    emit(bench="ledger_verify", method="verify_all", entries=count, intact=report.ok,
         seconds=round(seconds, 2), target_seconds=VERIFY_TARGET_SECONDS,
         meets_target=report.ok and seconds < VERIFY_TARGET_SECONDS)

    export = work / "million.jsonl"
    start = time.perf_counter()
    with open(export, "wb") as out:
        write_export(ledger, out, head)
    emit(bench="ledger_export", entries=count, seconds=round(time.perf_counter() - start, 2),
         megabytes=round(export.stat().st_size / 1e6, 1))

    start = time.perf_counter()
    verdict = verify(ExportSource(export), KnownHeads(work / "auditor"))
    seconds = time.perf_counter() - start
    emit(bench="ledger_verify", method="audit_verify_export", entries=verdict.checked_entries,
         intact=verdict.ok, seconds=round(seconds, 2), target_seconds=VERIFY_TARGET_SECONDS,
         meets_target=verdict.ok and seconds < VERIFY_TARGET_SECONDS)
    ledger.engine.dispose()


def run(work: Path | str | None = None, *, quick: bool = False) -> None:
    """Run every ledger benchmark in `work` (a temporary directory if None)."""
    own = work is None
    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="shuqiao-ledger-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bench_fsync_baseline(work, 500 if quick else 5000)
        bench_appends(work, 500 if quick else 5000)
        bench_million(work, 20_000 if quick else 1_000_000)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run()

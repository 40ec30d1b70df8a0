"""The auditor charts' numbers: query-log rows counted per calendar day in the console's time
zone, by partner, purpose and outcome (SQLite and the real PostgreSQL server)."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import insert

from node.console.audit_stats import MAX_DAYS, collect
from node.runtime.context import open_store
from node.storage.schema import query_log


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'node.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_database_url"))
    engine = open_store(url)
    yield engine
    engine.dispose()


def row(n: int, when: str, *, role="answerer", asker="fund", answerer="hrss", purpose="deposit",
        outcome="answered", elements=10, epsilon_micro=0) -> dict:
    moment = datetime.fromisoformat(when).replace(tzinfo=timezone.utc)
    return dict(query_id=f"q{n}", role=role, asker=asker, answerer=answerer, kind="membership",
                dataset="flexible_workers", version=1, epoch=1, purpose=purpose, elements=elements,
                outcome=outcome, reason="", epsilon_micro=epsilon_micro, started_at=moment, finished_at=moment)


def test_days_are_local_days_and_every_series_adds_up(engine):
    rows = [row(1, "2026-12-01T15:59:59"),                       # 23:59:59 in Shanghai: Dec 1
            row(2, "2026-12-01T16:00:00", outcome="refused", elements=3),  # 00:00 Dec 2 in Shanghai
            row(3, "2026-12-02T03:00:00", asker="tax", purpose="audit", epsilon_micro=250_000),
            row(4, "2026-12-02T04:00:00", role="asker", asker="hrss", answerer="tax", elements=5),
            row(5, "2026-11-30T15:59:59"),                       # Nov 30 in Shanghai: outside
            row(6, "2026-12-02T16:00:00")]                       # Dec 3 in Shanghai: outside
    with engine.begin() as conn:
        conn.execute(insert(query_log), rows)
    with engine.connect() as conn:
        stats = collect(conn, "hrss", "Asia/Shanghai", date(2026, 12, 1), date(2026, 12, 2))
        assert stats.days == ["2026-12-01", "2026-12-02"] and stats.queries == 4
        assert stats.by_partner.series == {"fund": [1, 1], "tax": [0, 2]}
        assert stats.by_outcome.series == {"answered": [1, 2], "refused": [0, 1]}
        assert stats.by_purpose.series == {"deposit": [1, 2], "audit": [0, 1]}
        assert stats.elements.series == {"fund": [10, 3], "tax": [0, 15]}
        assert stats.refusals.series == {"fund": [0, 1]}
        assert stats.epsilon.series == {"tax": [0, 0.25]}
        assert stats.by_partner.totals() == [1, 3]
        assert stats.by_outcome.ordered(("answered", "refused"))[0][0] == "answered"
        answered_only = collect(conn, "hrss", "Asia/Shanghai", date(2026, 12, 1), date(2026, 12, 2), "answerer")
        assert answered_only.queries == 3 and "tax" in answered_only.by_partner.series
        utc = collect(conn, "hrss", "UTC", date(2026, 12, 1), date(2026, 12, 1))
        assert utc.queries == 2  # rows 1 and 2 are both Dec 1 in UTC


def test_ranges_are_bounded_and_roles_checked(engine):
    with engine.connect() as conn:
        with pytest.raises(ValueError, match="at most"):
            collect(conn, "hrss", "UTC", date(2026, 1, 1), date(2026, 4, 3))  # 93 days
        with pytest.raises(ValueError, match="role"):
            collect(conn, "hrss", "UTC", date(2026, 1, 1), date(2026, 1, 2), "anyone")
        empty = collect(conn, "hrss", "UTC", date(2026, 1, 1), date(2026, 4, 2))
        assert len(empty.days) == MAX_DAYS and empty.queries == 0 and empty.by_partner.series == {}

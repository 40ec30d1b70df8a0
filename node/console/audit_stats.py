"""The auditor's numbers from the query log: queries per day by partner, purpose and outcome,
elements asked, refusals and differential-privacy budget spent.

Read from `query_log` (node/policy/querylog.py), the append-only record of every query this
node asked or answered, the same rows the `query_metrics` totals on /metrics are counted
from. Rows hold metadata only (partners, dataset, purpose, numbers, outcome): nothing here
reaches a person's identifier or attribute. Days are calendar days in the console's time
zone (`[service] console_timezone`); the partner of a row is the other side of the query
(this node's own id for a local lookup).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from node.storage.schema import query_log

__all__ = ["DayTable", "Stats", "ROLES", "MAX_DAYS", "collect", "day_range"]

ROLES = ("all", "answerer", "asker")  # all queries, those partners asked us, those we asked
MAX_DAYS = 92
OUTCOME_ORDER = ("answered", "refused", "failed", "aborted", "broken_by_asker")


@dataclass
class DayTable:
    """Values per day (rows) and series (columns): what a stacked chart and its table show."""
    days: list[str]
    series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, day: int, value: float) -> None:
        self.series.setdefault(name, [0] * len(self.days))[day] += value

    def ordered(self, first: tuple[str, ...] = ()) -> list[tuple[str, list[float]]]:
        """Series in a stable order: `first` as given, then the largest totals first."""
        names = [n for n in first if n in self.series]
        names += sorted((n for n in self.series if n not in names), key=lambda n: (-sum(self.series[n]), n))
        return [(n, self.series[n]) for n in names]

    def totals(self) -> list[float]:
        return [sum(v[i] for v in self.series.values()) for i in range(len(self.days))]

    def by_series(self) -> list[tuple[str, float]]:
        return [(name, sum(values)) for name, values in self.ordered()]


@dataclass
class Stats:
    days: list[str]
    by_partner: DayTable
    by_purpose: DayTable
    by_outcome: DayTable
    elements: DayTable  # by partner
    refusals: DayTable  # by partner
    epsilon: DayTable  # by partner, in epsilon (not millionths)
    queries: int = 0


def day_range(first: date, last: date) -> list[date]:
    if last < first:
        first, last = last, first
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def collect(conn: Connection, node_id: str, zone: str, first: date, last: date, role: str = "all") -> Stats:
    """The numbers for days `first`..`last` (inclusive, in `zone`), for `role` rows (ROLES).

    Raises:
        ValueError: more than MAX_DAYS days, or an unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    days = day_range(first, last)
    if len(days) > MAX_DAYS:
        raise ValueError(f"choose at most {MAX_DAYS} days")
    tz = ZoneInfo(zone)
    start = datetime.combine(days[0], time(), tz).astimezone(timezone.utc)
    end = datetime.combine(days[-1] + timedelta(days=1), time(), tz).astimezone(timezone.utc)
    labels = [d.isoformat() for d in days]
    position = {d: i for i, d in enumerate(days)}
    stats = Stats(labels, *(DayTable(labels) for _ in range(6)))
    q = query_log.c
    query = select(q.role, q.asker, q.answerer, q.purpose, q.outcome, q.elements, q.epsilon_micro,
                   q.started_at).where(
        q.started_at >= _stored(conn, start), q.started_at < _stored(conn, end))
    if role != "all":
        query = query.where(q.role == role)
    for row in conn.execute(query):
        moment = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=timezone.utc)
        i = position.get(moment.astimezone(tz).date())
        if i is None:
            continue
        partner = {"answerer": row.asker, "asker": row.answerer}.get(row.role, node_id)
        stats.queries += 1
        stats.by_partner.add(partner, i, 1)
        stats.by_purpose.add(row.purpose or "-", i, 1)
        stats.by_outcome.add(row.outcome, i, 1)
        stats.elements.add(partner, i, row.elements or 0)
        if row.outcome == "refused":
            stats.refusals.add(partner, i, 1)
        if row.epsilon_micro:
            stats.epsilon.add(partner, i, row.epsilon_micro / 1_000_000)
    return stats


def _stored(conn: Connection, moment: datetime) -> datetime:
    # The log stores UTC; SQLite keeps it as zone-less text, so compare naive UTC there.
    moment = moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment

"""The agency's policy on one query: kind, size and quotas, checked before any work.

Quotas count the elements a partner had answered (the agency cannot tell distinct
people apart: it only ever sees blinded elements), over a rolling day, a rolling
30 days and the current key epoch. Every refusal names the rule that was broken; the
caller records it in the query log.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import Connection, func, select

from .config import DatasetGrant
from .store import query_log


class PolicyRefusal(Exception):
    """The policy refuses the query; `kind` says which rule (size, quota, kind)."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def answered_elements(conn: Connection, partner: str, dataset: str, *, since: datetime | None = None,
                      epoch: int | None = None) -> int:
    q = select(func.coalesce(func.sum(query_log.c.elements), 0)).where(
        query_log.c.role == "answerer", query_log.c.asker == partner,
        query_log.c.dataset == dataset, query_log.c.outcome.in_(("answered", "aborted")))
    if since is not None:
        q = q.where(query_log.c.started_at >= since)
    if epoch is not None:
        q = q.where(query_log.c.epoch == epoch)
    return int(conn.execute(q).scalar())


def check(conn: Connection, grant: DatasetGrant, *, dataset: str, kind: str, elements: int,
          epoch: int, now: datetime | None = None) -> None:
    """Raise PolicyRefusal unless `grant` allows this query now."""
    if kind not in {k.value for k in grant.kinds}:
        allowed = ", ".join(k.value for k in grant.kinds)
        raise PolicyRefusal("kind", f"query kind {kind!r} is not granted for dataset {dataset!r}; "
                                    f"granted kinds: {allowed}")
    if elements < grant.min_elements:
        raise PolicyRefusal("size", f"a query must ask at least {grant.min_elements} elements "
                                    f"(asked {elements})")
    if elements > grant.max_elements:
        raise PolicyRefusal("size", f"a query may ask at most {grant.max_elements} elements "
                                    f"(asked {elements})")
    now = now or datetime.now(timezone.utc)
    windows = (("daily", grant.daily_elements, now - timedelta(days=1), None),
               ("monthly", grant.monthly_elements, now - timedelta(days=30), None),
               ("epoch", grant.epoch_elements, None, epoch))
    for name, limit, since, ep in windows:
        if limit is None:
            continue
        used = answered_elements(conn, grant.partner, dataset, since=since, epoch=ep)
        if used + elements > limit:
            raise PolicyRefusal("quota", f"{name} quota of {limit} elements for dataset {dataset!r} "
                                         f"would be exceeded ({used} used, {elements} asked)")


def dp_spent(conn: Connection, partner: str, dataset: str, epoch: int) -> float:
    """Epsilon a partner has spent on a dataset in a key epoch (answered queries)."""
    q = select(func.coalesce(func.sum(query_log.c.epsilon_micro), 0)).where(
        query_log.c.role == "answerer", query_log.c.asker == partner, query_log.c.dataset == dataset,
        query_log.c.epoch == epoch, query_log.c.outcome.in_(("answered", "aborted")))
    return int(conn.execute(q).scalar()) / 1e6


def check_dp(conn: Connection, grant: DatasetGrant, *, dataset: str, epoch: int) -> None:
    if grant.dp_epsilon is None or grant.dp_budget is None:
        return
    spent = dp_spent(conn, grant.partner, dataset, epoch)
    if spent + grant.dp_epsilon > grant.dp_budget + 1e-9:
        raise PolicyRefusal("quota", f"differential-privacy budget of {grant.dp_budget:g} for dataset "
                                     f"{dataset!r} in key epoch {epoch} is spent ({spent:g} used, "
                                     f"{grant.dp_epsilon:g} per query)")

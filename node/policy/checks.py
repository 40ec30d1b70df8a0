"""The agency's policy on one query: kind, size and quotas, checked before any work.

Quotas count the elements a partner had evaluated (the agency cannot tell distinct
people apart: it only ever sees blinded elements), over a rolling day, a rolling
30 days and the current key epoch. What counts is every element of an answered query,
every element evaluated by a query that ended otherwise (broken off by the asker,
aborted, failed), and the full reservation of every query still open (admitted but
not yet settled, or never settled because the node stopped). DP epsilon counts the
same way. Every refusal names the rule that was broken; the caller records it in the
query log.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from node.core.clock import SYSTEM_CLOCK
from node.core.config import COUNTING_KINDS, DatasetGrant
from node.core.errors import InvalidRequest, LimitReached, NotPermitted, Refusal
from node.storage.schema import query_claims, query_log

# Outcomes whose query-log row charges its elements and epsilon (for an unanswered
# ending the row holds only what was evaluated; a refusal evaluated nothing).
CHARGED = ("answered", "aborted", "broken_by_asker", "failed")


class PolicyRefusal(Refusal):
    """The policy refuses the query; `rule` names the rule (size, quota, kind) and stays
    stable for logs, `reason` is the message for the partner."""

    rule = ""


class KindNotGranted(PolicyRefusal, NotPermitted):
    rule = "kind"


class SizeRefused(PolicyRefusal, InvalidRequest):
    rule = "size"


class QuotaExceeded(PolicyRefusal, LimitReached):
    """A quota of elements, or the differential-privacy budget, would be exceeded."""

    rule = "quota"


def _charged(conn: Connection, column_log, column_claim, partner: str, dataset: str, *,
             since: datetime | None, epoch: int | None) -> int:
    logged = select(func.coalesce(func.sum(column_log), 0)).where(
        query_log.c.role == "answerer", query_log.c.asker == partner,
        query_log.c.dataset == dataset, query_log.c.outcome.in_(CHARGED))
    reserved = select(func.coalesce(func.sum(column_claim), 0)).where(
        query_claims.c.partner == partner, query_claims.c.dataset == dataset,
        query_claims.c.settled.is_(False))
    if since is not None:
        logged = logged.where(query_log.c.started_at >= since)
        reserved = reserved.where(query_claims.c.admitted_at >= since)
    if epoch is not None:
        logged = logged.where(query_log.c.epoch == epoch)
        reserved = reserved.where(query_claims.c.epoch == epoch)
    return int(conn.execute(logged).scalar()) + int(conn.execute(reserved).scalar())


def answered_elements(conn: Connection, partner: str, dataset: str, *, since: datetime | None = None,
                      epoch: int | None = None) -> int:
    """Elements charged to a partner on a dataset (settled and still reserved)."""
    return _charged(conn, query_log.c.elements, query_claims.c.elements, partner, dataset,
                    since=since, epoch=epoch)


def min_elements(grant: DatasetGrant, kind: str) -> int:
    """The smallest query of `kind` the grant allows (counting kinds have their own floor)."""
    if kind in COUNTING_KINDS:
        return max(grant.min_elements, grant.min_counting_elements)
    return grant.min_elements


def check_request(grant: DatasetGrant, *, dataset: str, kind: str, elements: int) -> None:
    """Raise PolicyRefusal unless the grant allows a query of this kind and size."""
    if kind not in {k.value for k in grant.kinds}:
        allowed = ", ".join(k.value for k in grant.kinds)
        raise KindNotGranted(f"query kind {kind!r} is not granted for dataset {dataset!r}; "
                             f"granted kinds: {allowed}")
    floor = min_elements(grant, kind)
    if elements < floor:
        raise SizeRefused(f"a query must ask at least {floor} elements, all distinct "
                          f"(asked {elements})")
    if elements > grant.max_elements:
        raise SizeRefused(f"a query may ask at most {grant.max_elements} elements "
                          f"(asked {elements})")


def check_quotas(conn: Connection, grant: DatasetGrant, *, dataset: str, elements: int, epoch: int,
                 now: datetime | None = None) -> None:
    """Raise PolicyRefusal if `elements` more would exceed a quota. Race-free only inside
    node.policy.querylog's serialised transaction."""
    now = now or SYSTEM_CLOCK.now()
    windows = (("daily", grant.daily_elements, now - timedelta(days=1), None),
               ("monthly", grant.monthly_elements, now - timedelta(days=30), None),
               ("epoch", grant.epoch_elements, None, epoch))
    for name, limit, since, ep in windows:
        if limit is None:
            continue
        used = answered_elements(conn, grant.partner, dataset, since=since, epoch=ep)
        if used + elements > limit:
            raise QuotaExceeded(f"{name} quota of {limit} elements for dataset {dataset!r} "
                                f"would be exceeded ({used} used, {elements} asked)")


def check(conn: Connection, grant: DatasetGrant, *, dataset: str, kind: str, elements: int,
          epoch: int, now: datetime | None = None) -> None:
    """Raise PolicyRefusal unless `grant` allows this query now (no reservation made)."""
    check_request(grant, dataset=dataset, kind=kind, elements=elements)
    check_quotas(conn, grant, dataset=dataset, elements=elements, epoch=epoch, now=now)


def dp_spent(conn: Connection, partner: str, dataset: str, epoch: int) -> float:
    """Epsilon a partner has spent (or holds reserved) on a dataset in a key epoch."""
    micro = _charged(conn, query_log.c.epsilon_micro, query_claims.c.epsilon_micro, partner,
                     dataset, since=None, epoch=epoch)
    return micro / 1e6


def check_dp(conn: Connection, grant: DatasetGrant, *, dataset: str, epoch: int) -> None:
    if grant.dp_epsilon is None or grant.dp_budget is None:
        return
    spent = dp_spent(conn, grant.partner, dataset, epoch)
    if spent + grant.dp_epsilon > grant.dp_budget + 1e-9:
        raise QuotaExceeded(f"differential-privacy budget of {grant.dp_budget:g} for dataset "
                            f"{dataset!r} in key epoch {epoch} is spent ({spent:g} used, "
                            f"{grant.dp_epsilon:g} per query)")


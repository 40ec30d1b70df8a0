"""What a partner may ask of one dataset, told to that partner only (ListDatasets).

The view is built from the caller's own grant in the config in force (so it changes
with a reload) and from the same charges admission counts (node/policy/checks.py):
elements of answered queries, of queries broken off after being evaluated, and of
queries still open at their full reservation; DP epsilon likewise, per key epoch. It
names no other partner, and counts nothing but the caller's own queries: what a
partner learns here is what its own refusals would tell it one query at a time.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from node.core.config import DatasetGrant
from node.policy import checks as policy
from node.rpc.shuqiao.v1 import membership_pb2 as pb

# (window, how far back it reaches (None: the current key epoch), the grant's limit field)
_WINDOWS = (("day", timedelta(days=1), "daily_elements"),
            ("month", timedelta(days=30), "monthly_elements"),
            ("epoch", None, "epoch_elements"))


def quota_uses(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int,
               now: datetime) -> list[pb.QuotaUse]:
    uses = []
    for window, span, field in _WINDOWS:
        used = policy.answered_elements(conn, grant.partner, dataset,
                                        since=now - span if span else None,
                                        epoch=None if span else epoch)
        limit = getattr(grant, field)
        use = pb.QuotaUse(window=window, used=used)
        if limit is not None:
            use.limit, use.left = limit, max(0, limit - used)
        uses.append(use)
    return uses


def privacy_budget(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int) -> pb.PrivacyBudget | None:
    if grant.dp_epsilon is None:
        return None  # exact counts: no budget is spent
    spent = policy.dp_spent(conn, grant.partner, dataset, epoch)
    budget = pb.PrivacyBudget(epsilon_per_query=grant.dp_epsilon, spent=spent)
    if grant.dp_budget is not None:
        budget.budget, budget.left = grant.dp_budget, max(0.0, grant.dp_budget - spent)
    return budget


def caller_grant(conn: Connection, grant: DatasetGrant, dataset: str, epoch: int,
                 now: datetime) -> pb.CallerGrant:
    """The caller's grant on `dataset` and what is left of it in key epoch `epoch`."""
    view = pb.CallerGrant(
        purposes=[pb.GrantedPurpose(code=p.code, legal_basis=p.legal_basis) for p in grant.purposes],
        predicate_columns=grant.predicate_columns, label_attributes=grant.label_attributes,
        min_elements=grant.min_elements, max_elements=grant.max_elements,
        min_counting_elements=policy.min_elements(grant, "cardinality"),
        quotas=quota_uses(conn, grant, dataset, epoch, now),
        aggregate_columns=grant.aggregate_columns, threshold_column=grant.threshold_column or "",
        min_group_size=grant.min_group_size)
    budget = privacy_budget(conn, grant, dataset, epoch)
    if budget is not None:
        view.privacy.CopyFrom(budget)
    return view

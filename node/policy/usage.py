"""What each partner has used of its grants: elements per quota window, DP budget per key epoch.

The same counts admission checks (node/policy/checks.py: settled queries plus those still
reserved), read for people and monitors: the admin console's grant pages, `/metrics`
(remaining allowances) and `/v1/admin/usage`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection

from node.core.config import DatasetGrant, NodeConfig
from node.policy.checks import answered_elements, dp_spent


@dataclass(frozen=True)
class Window:
    name: str            # "daily" (rolling 24 h), "monthly" (rolling 30 days) or "epoch"
    used: int            # elements charged in the window
    limit: int | None    # the grant's quota (None: no quota)


@dataclass(frozen=True)
class GrantUse:
    dataset: str
    partner: str
    epoch: int | None    # the partner's current key epoch (None: no key yet)
    windows: list[Window] = field(default_factory=list)
    dp_spent: float = 0.0            # epsilon spent or reserved in the current epoch
    dp_budget: float | None = None   # the grant's budget per epoch (None: no DP)
    dp_epsilon: float | None = None  # charged per query


def grant_use(conn: Connection, dataset: str, grant: DatasetGrant, now: datetime) -> GrantUse:
    from node.keys.workers import current_epoch
    partner = grant.partner
    epoch = current_epoch(conn, dataset, partner)
    windows = []
    for name, limit, since, ep in (("daily", grant.daily_elements, now - timedelta(days=1), None),
                                   ("monthly", grant.monthly_elements, now - timedelta(days=30), None),
                                   ("epoch", grant.epoch_elements, None, epoch)):
        used = 0 if name == "epoch" and epoch is None else \
            answered_elements(conn, partner, dataset, since=since, epoch=ep)
        windows.append(Window(name, used, limit))
    spent = dp_spent(conn, partner, dataset, epoch) if epoch is not None else 0.0
    return GrantUse(dataset, partner, epoch, windows, spent, grant.dp_budget, grant.dp_epsilon)


def all_use(conn: Connection, config: NodeConfig, now: datetime, partner: str | None = None) -> list[GrantUse]:
    """Every grant's use (or only `partner`'s), in the config's order."""
    return [grant_use(conn, d.name, g, now) for d in config.datasets for g in d.grants
            if partner in (None, g.partner)]

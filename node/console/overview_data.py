"""What the overview shows, gathered: this node's datasets and key epochs, its ledger head
and who cosigned it, its partners as probed, and the alerts an officer should act on.

Alerts name things (a dataset, a partner, a certificate, a job) and numbers, never a
person: the overview is shown to every role. Each alert is a word key of the overview's
words and the values its text is formatted with, and a level: "bad" (act now: expired,
used up, failed, a ledger conflict) or "warn" (act soon).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from sqlalchemy import func, select

from node.asker.probe import Probe
from node.datasets.versions import DatasetVersion, list_versions
from node.keys.workers import current_epoch, epoch_started
from node.ledger.anchor import current_certification
from node.ledger.signing import SignatureError, SignedTreeHead
from node.ledger.tables import witness_cosignatures
from node.ledger.witness import Witness
from node.policy.usage import all_use
from node.runtime.context import NodeContext

CERT_WARN_DAYS = 30
NEAR_LIMIT = 0.8  # a quota or budget this much used is near its limit


@dataclass
class Alert:
    level: str        # "bad" or "warn"
    key: str          # a word key of the overview
    values: dict = field(default_factory=dict)


@dataclass
class EpochRow:
    partner: str
    epoch: int | None
    started: datetime | None
    rotation_due: bool


@dataclass
class DatasetRow:
    name: str
    description: str
    current: DatasetVersion | None
    versions: int
    epochs: list[EpochRow]


@dataclass
class LedgerView:
    entries: int
    head: SignedTreeHead | None
    verified: bool
    cosigners: list[tuple[str, str]]   # (witness, time) of the latest head
    latest_cosigned: dict[str, int]    # witness -> the largest size it cosigned


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def datasets(ctx: NodeContext, now: datetime) -> list[DatasetRow]:
    out = []
    with ctx.engine.connect() as conn:
        versions = list_versions(conn)
        for d in ctx.config.datasets:
            mine = [v for v in versions if v.name == d.name]
            current = max((v for v in mine if v.status == "active"), key=lambda v: v.version, default=None)
            epochs = []
            for g in d.grants:
                epoch = current_epoch(conn, d.name, g.partner)
                started = epoch_started(conn, d.name, g.partner, epoch) if epoch else None
                due = bool(started and now - started >= timedelta(days=d.epoch_days))
                epochs.append(EpochRow(g.partner, epoch, started, due))
            out.append(DatasetRow(d.name, d.description, current, len(mine), epochs))
    return out


def ledger(ctx: NodeContext) -> LedgerView:
    led = ctx.ledger
    head = led.latest_head()
    verified = False
    if head is not None:
        try:  # signed by this node's key, over the root its own tree has at that size
            head.verify(led.signer.keyring)
            verified = led.root(head.size) == head.root
        except (SignatureError, ValueError):
            verified = False
    witness = Witness(led)
    cosigners = sorted((c.witness, c.time) for c in witness.cosignatures_of(head)) if head else []
    # Every cosignature kept was checked when it was stored (Witness.store_cosignature):
    # the largest size per witness is read in one grouped query, not parsed row by row.
    c = witness_cosignatures.c
    with led.engine.connect() as conn:
        latest = dict(conn.execute(select(c.witness, func.max(c.size)).where(
            c.log_node == led.node_id).group_by(c.witness)).all())
    return LedgerView(led.size(), head, verified, cosigners, latest)


def _cert_not_after(path: Path) -> datetime | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc
    except (OSError, ValueError):
        return None


def _expiry(alerts: list[Alert], what: str, name: str, not_after: datetime | None, now: datetime) -> None:
    if not_after is None:
        return
    days = (not_after - now).total_seconds() / 86400
    if days < 0:
        alerts.append(Alert("bad", "alert.cert_expired", {"what": what, "name": name,
                                                          "date": f"{not_after:%Y-%m-%d}"}))
    elif days < CERT_WARN_DAYS:
        alerts.append(Alert("warn", "alert.cert_expiring", {"what": what, "name": name, "days": int(days),
                                                            "date": f"{not_after:%Y-%m-%d}"}))


def certificates(ctx: NodeContext, probes: dict[str, Probe | None], now: datetime) -> tuple[list[dict], list[Alert]]:
    """Each certificate this node knows the end of, and an alert for each expiring one."""
    cfg = ctx.config
    known = [("cert.node_tls", cfg.node.id, _cert_not_after(cfg.path(cfg.tls.cert))),
             ("cert.ca", "CA", _cert_not_after(cfg.path(cfg.tls.ca)))]
    certification = current_certification(ctx.engine, ctx.ledger.public_key)
    if certification is not None:
        known.append(("cert.ledger_key", cfg.node.id,
                      datetime.fromisoformat(certification.statement.not_after.replace("Z", "+00:00"))))
    for partner, found in probes.items():
        if found is not None and found.cert_not_after is not None:
            known.append(("cert.partner_tls", partner, found.cert_not_after))
    alerts: list[Alert] = []
    rows = []
    for what, name, not_after in known:
        not_after = _utc(not_after)
        if not_after is None:
            continue
        _expiry(alerts, what, name, not_after, now)
        rows.append({"what": what, "name": name, "not_after": not_after,
                     "days": int((not_after - now).total_seconds() // 86400)})
    return rows, alerts


def _near(used: float, limit: float | None) -> str | None:
    if limit is None or limit <= 0:
        return None
    if used >= limit:
        return "bad"
    return "warn" if used >= NEAR_LIMIT * limit else None


def budgets(ctx: NodeContext, probes: dict[str, Probe | None], now: datetime) -> list[Alert]:
    """Quotas and DP budgets used up or nearly: partners' use of ours, and ours at partners."""
    alerts: list[Alert] = []
    with ctx.engine.connect() as conn:
        uses = all_use(conn, ctx.config, now)
    for use in uses:
        if use.epoch is None:
            continue  # no key yet: nothing can have been asked
        for w in use.windows:
            level = _near(w.used, w.limit)
            if level:
                alerts.append(Alert(level, "alert.quota_theirs", {
                    "partner": use.partner, "dataset": use.dataset, "window": w.name,
                    "used": w.used, "limit": w.limit}))
        level = _near(use.dp_spent, use.dp_budget) if use.dp_epsilon is not None else None
        if level:
            alerts.append(Alert(level, "alert.budget_theirs", {
                "partner": use.partner, "dataset": use.dataset, "spent": f"{use.dp_spent:g}",
                "budget": f"{use.dp_budget:g}"}))
    for partner, found in probes.items():
        for o in (found.offers if found else []):
            grant = o.get("grant") or {}
            for q in grant.get("quotas", []):
                level = _near(q["used"], q["limit"])
                if level:
                    alerts.append(Alert(level, "alert.quota_ours", {
                        "partner": partner, "dataset": o["dataset"], "window": q["window"],
                        "used": q["used"], "limit": q["limit"]}))
            privacy = grant.get("privacy")
            if privacy and privacy.get("budget") is not None:
                level = _near(privacy["spent"], privacy["budget"])
                if level:
                    alerts.append(Alert(level, "alert.budget_ours", {
                        "partner": partner, "dataset": o["dataset"], "spent": f"{privacy['spent']:g}",
                        "budget": f"{privacy['budget']:g}"}))
    return alerts


def ledger_alerts(ctx: NodeContext, view: LedgerView) -> list[Alert]:
    alerts = [Alert("bad", "alert.conflict", {"partner": c.partner, "kind": c.kind})
              for c in Witness(ctx.ledger).open_conflicts()]
    if view.head is not None and not view.verified:
        alerts.append(Alert("bad", "alert.head_unverified", {"size": view.head.size}))
    return alerts


def partner_alerts(probes: dict[str, Probe | None]) -> list[Alert]:
    return [Alert("bad", "alert.partner_down", {"partner": p}) for p, found in probes.items()
            if found is not None and not found.answers]


def failed_jobs(ctx: NodeContext, now: datetime, days: int = 7) -> tuple[int, list[Alert]]:
    """Batch jobs that failed in the last `days` (anyone's: job ids and owners, never a row)."""
    from node.jobs.queue import Status, list_jobs
    since = now - timedelta(days=days)
    failed = [j for j in list_jobs(ctx, status=Status.FAILED, limit=200)
              if (j.finished_at or j.created_at or now) >= since]
    return len(failed), [Alert("bad", "alert.job_failed", {"job": j.id[:8], "owner": j.owner,
                                                            "error": j.error or ""}) for j in failed[:10]]

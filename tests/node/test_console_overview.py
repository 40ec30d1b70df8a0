"""What the console's overview gathers, on a real node context: certificates and when they
warn, quotas and budgets near their limits, datasets and key epochs, the ledger head
verified, failed jobs, and partners probed once per ~30 s without a page waiting long."""
from __future__ import annotations

import random
import socket
import time
import uuid
from datetime import timedelta

import pytest
from cryptography import x509
from sqlalchemy import insert

from adapters import IdType, open_csv, synthetic_resident_id
from node.asker.probe import Probe, probe
from node.console import overview_data as data
from node.console.partner_status import partner_probes
from node.core.clock import FixedClock
from node.core.config import load_config
from node.datasets.registration import register
from node.devtools.localnet import Federation
from node.devtools.synthetic import write_csv
from node.policy.querylog import reserve
from node.runtime.context import NodeContext
from node.storage.schema import jobs


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("overview")
    fed = Federation(root / "fed")
    fed.add_node("fund", partners=[{"id": "hrss", "address": "127.0.0.1:9"}],  # nobody listens there
                 datasets=[{"name": "depositors", "epoch_days": 30,
                            "grants": [{"partner": "hrss", "purposes": ["flexible-worker-deposit"],
                                        "daily_elements": 100}]}])
    rng = random.Random(3)
    write_csv(root / "depositors.csv", ["sfzh"], [[synthetic_resident_id(rng)] for _ in range(20)])
    clock = FixedClock()
    ctx = NodeContext(load_config(fed.nodes["fund"].config_path), clock=clock)
    with open_csv(root / "depositors.csv") as src:
        register(ctx, "depositors", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="depositors")
    yield ctx
    ctx.close()


def _not_after(ctx):
    cfg = ctx.config
    return x509.load_pem_x509_certificate(cfg.path(cfg.tls.cert).read_bytes()).not_valid_after_utc


def _alerts(alerts, key):
    return [a for a in alerts if a.key == key and a.values.get("what") == "cert.node_tls"]


def test_certificates_warn_within_30_days_and_alarm_once_expired(node):
    end = _not_after(node)
    _, alerts = data.certificates(node, {}, end - timedelta(days=60))
    assert not _alerts(alerts, "alert.cert_expiring") and not _alerts(alerts, "alert.cert_expired")
    rows, alerts = data.certificates(node, {}, end - timedelta(days=10, hours=1))
    (warn,) = _alerts(alerts, "alert.cert_expiring")
    assert warn.level == "warn" and warn.values["days"] == 10
    assert {r["what"] for r in rows} >= {"cert.node_tls", "cert.ca"}
    _, alerts = data.certificates(node, {}, end + timedelta(days=1))
    (bad,) = _alerts(alerts, "alert.cert_expired")
    assert bad.level == "bad"
    partner = Probe("hrss", True, end, cert_not_after=end + timedelta(days=5))
    _, alerts = data.certificates(node, {"hrss": partner}, end)
    assert any(a.values.get("what") == "cert.partner_tls" and a.values["name"] == "hrss" for a in alerts)


def _offer(used: int, limit: int | None, spent: float = 0.0, budget: float | None = None) -> dict:
    return {"dataset": "flexible_workers", "version": 1, "grant": {
        "purposes": [], "quotas": [{"window": "day", "used": used, "limit": limit,
                                    "left": None if limit is None else limit - used}],
        "privacy": {"epsilon_per_query": 0.1, "spent": spent, "budget": budget, "left": None}}}


@pytest.mark.parametrize("offer, level", [
    (_offer(10, 100), None), (_offer(79, 100), None), (_offer(80, 100), "warn"), (_offer(100, 100), "bad"),
    (_offer(10**6, None), None), (_offer(0, None, spent=0.9, budget=1.0), "warn"),
    (_offer(0, None, spent=1.0, budget=1.0), "bad")])
def test_quotas_and_budgets_at_a_partner_near_their_limit(node, offer, level):
    probe = Probe("hrss", True, node.clock.now(), offers=[offer])
    alerts = [a for a in data.budgets(node, {"hrss": probe}, node.clock.now())
              if a.key in ("alert.quota_ours", "alert.budget_ours")]
    assert [a.level for a in alerts] == ([level] if level else [])


def test_datasets_show_the_version_the_epoch_and_when_rotation_is_due(node):
    (row,) = data.datasets(node, node.clock.now())
    assert row.current.version == 1 and row.current.row_count == 20 and row.versions == 1
    (epoch,) = row.epochs
    assert epoch.partner == "hrss" and epoch.epoch == 1 and not epoch.rotation_due
    (row,) = data.datasets(node, node.clock.now() + timedelta(days=31))
    assert row.epochs[0].rotation_due


def test_the_ledger_head_is_verified_against_the_nodes_own_tree(node):
    head = node.ledger.sign_head(force=True)
    view = data.ledger(node)
    assert view.head == head and view.verified and view.entries == node.ledger.size()
    assert view.cosigners == [] and not data.ledger_alerts(node, view)


def test_failed_jobs_of_the_last_week_are_alerts(node):
    now = node.clock.now()
    with node.engine.begin() as conn:
        for i, (status, age) in enumerate([("failed", 1), ("failed", 9), ("done", 1)]):
            conn.execute(insert(jobs).values(
                id=f"{i:032x}", owner="ops-desk", kind="rule", params={"target": {"rule": "r"}, "list": {}},
                status=status, stage=status, done=0, error="the list has no column 身份证号",
                cancel_requested=False, created_at=now - timedelta(days=age),
                finished_at=now - timedelta(days=age)))
    count, alerts = data.failed_jobs(node, now)
    assert count == 1 and alerts[0].values == {"job": "0" * 8, "owner": "ops-desk",
                                              "error": "the list has no column 身份证号"}


def test_a_partner_that_does_not_answer_is_probed_once_per_half_minute(node):
    started = time.monotonic()
    first = partner_probes(node)["hrss"]
    assert time.monotonic() - started < 3.5  # a page never waits on a partner for long
    assert first is not None and not first.answers and "hrss" in first.error
    assert partner_probes(node)["hrss"] is first  # cached
    assert [a.values for a in data.partner_alerts({"hrss": first})] == [{"partner": "hrss"}]
    assert partner_probes(node, fresh=0.0, wait=3.0)["hrss"] is not first  # probed again once stale


def test_a_partners_use_of_our_quota_near_its_limit(node):
    def theirs():
        return [(a.level, a.values["used"]) for a in data.budgets(node, {}, node.clock.now())
                if a.key == "alert.quota_theirs" and a.values["window"] == "daily"]
    grant = node.config.dataset("depositors").grants[0]

    def charge(elements: int) -> None:  # what admission reserves for a query of hrss
        reserve(node.engine, grant, query_id=str(uuid.uuid4()), dataset="depositors", epoch=1,
                elements=elements, now=node.clock.now())
    charge(79)
    assert theirs() == []
    charge(6)
    assert theirs() == [("warn", 85)]
    charge(15)
    assert theirs() == [("bad", 100)]


def test_a_partner_that_accepts_connections_but_never_answers_costs_one_deadline(node):
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody speaks TLS
    try:
        port = silent.getsockname()[1]
        partners = [p.model_copy(update={"address": f"127.0.0.1:{port}"}) for p in node.config.partners]
        other = NodeContext(node.config.model_copy(update={"partners": partners}), clock=node.clock)
        try:
            started = time.monotonic()
            found = probe(other, "hrss", deadline=1.0)
            assert time.monotonic() - started < 1.8
            assert not found.answers and "unreachable" in found.error and found.cert_not_after is None
        finally:
            other.close()
    finally:
        silent.close()

"""Observability of real nodes: /metrics over HTTPS against the query logs, JSON log lines,
and partner channels that stay idle without the server sending GOAWAY "too_many_pings".

Two `shuqiao serve` processes (fund asks, hrss answers) with JSON logs and a keepalive of
half a second; the fund centre's queries run as `shuqiao query` processes, so its
/metrics must count queries recorded by other processes.
"""
from __future__ import annotations

import json
import re
import ssl
import time
import tomllib
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.core.config import QueryKindName
from node.ledger.http import new_token
from node.policy.checks import CHARGED
from node.policy.querylog import OUTCOMES

from . import fixtures as fx

pytestmark = pytest.mark.e2e

GRANT = {"partner": "fund", "purposes": [fx.PURPOSE, "housing-loan"],
         "kinds": ["membership", "cardinality"], "daily_elements": 5000, "monthly_elements": 20000,
         "epoch_elements": 50000, "dp_epsilon": 0.5, "dp_budget": 4.0}
KEEPALIVE = 0.5


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("observability")
    s = fx.build(root, registry_size=300, applicants=40)
    s.tokens = {role: new_token() for role in ("auditor", "admin", "metrics")}
    http = {"listen": "127.0.0.1:0", **{f"{role}_tokens": [digest]
                                        for role, (_, digest) in s.tokens.items()}}
    grpc = {"keepalive_seconds": KEEPALIVE}
    s.fed.add_node("hrss", partners=[{"id": "fund"}], grpc=grpc,
                   datasets=[{"name": "flexible_workers", "grants": [GRANT]}, {"name": "ungranted"}],
                   extra={"http": http, "logging": {"format": "json"}})
    s.fed.add_node("fund", partners=[{"id": "hrss"}], grpc=grpc,
                   extra={"http": http, "maintenance": {"witness_seconds": 3600}})
    with s.fed:
        fx.start(s)
        fx.register(s)
        s.fed.start("fund", args=("--log-format", "json"))  # the option, where hrss has the config
        s.results = _ask(s, root)
        yield s


def _ask(s, root) -> list:
    def query(*extra, dataset="flexible_workers", purpose=fx.PURPOSE, kind="membership"):
        out = ["--out", str(root / f"r{len(runs)}.csv")] if kind == "membership" else []
        return s.fed.cli("query", kind, "--config", s.cfg("fund"), "--partner", "hrss",
                         "--dataset", dataset, "--purpose", purpose, "--input", str(s.applicants_csv),
                         "--id-column", "身份证号", *out, *extra, check=False)
    runs = []
    runs.append(query())                                     # answered
    runs.append(query(purpose="housing-loan"))               # answered, the second purpose
    runs.append(query(kind="cardinality"))                   # answered, noised
    runs.append(query(purpose="no-such-purpose"))            # refused: purpose not granted
    runs.append(query(dataset="ungranted"))                  # refused: not granted to fund
    runs.append(query(dataset="a110105194912310021"))        # refused: an identifier typed
    return runs


def https(s, node: str) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{s.fed.nodes[node].http_port}",
                        verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


def scrape(s, node: str, role: str = "metrics") -> dict[str, list]:
    with https(s, node) as client:
        r = client.get("/metrics", headers={"Authorization": f"Bearer {s.tokens[role][0]}"})
    assert r.status_code == 200, r.text
    families = {}
    for family in text_string_to_metric_families(r.text):
        families[family.name] = family.samples
    return families


def configured_names(s) -> set[str]:
    names = {"other", "asker", "answerer", "local", "daily", "monthly", "epoch", "ok", "failed",
             *OUTCOMES, *(k.value for k in QueryKindName)}
    for node in s.fed.nodes.values():
        cfg = tomllib.loads(node.config_path.read_text())
        names.add(cfg["node"]["id"])
        names.update(p["id"] for p in cfg.get("partners", []))
        for d in cfg.get("datasets", []):
            names.add(d["name"])
            for g in d.get("grants", []):
                names.update(p if isinstance(p, str) else p["code"] for p in g["purposes"])
    return names


def test_the_queries_ran_as_intended(fed):
    codes = [r.returncode for r in fed.results]
    assert codes[:3] == [0, 0, 0] and all(codes[3:]), [r.stderr for r in fed.results]


@pytest.mark.parametrize("node", ["hrss", "fund"])
def test_query_counters_match_the_query_log(fed, node):
    families = scrape(fed, node)
    rows = fx.query_log(fed, node)
    assert rows, "no query recorded"
    by = lambda r: (r["role"], r["kind"], r["outcome"])  # noqa: E731
    logged, logged_elements = Counter(), Counter()
    for r in rows:
        logged[by(r)] += 1
        logged_elements[by(r)] += r["elements"]
    counted, counted_elements = Counter(), Counter()
    for sample in families["shuqiao_queries"]:
        if sample.name == "shuqiao_queries_total":
            counted[by(sample.labels)] += sample.value
    for sample in families["shuqiao_query_elements"]:
        if sample.name == "shuqiao_query_elements_total":
            counted_elements[by(sample.labels)] += sample.value
    assert counted == logged and counted_elements == logged_elements
    durations = {(x.labels["role"], x.labels["kind"]): x.value
                 for x in families["shuqiao_query_duration_seconds"]
                 if x.name == "shuqiao_query_duration_seconds_count"}
    per_kind = Counter((r["role"], r["kind"]) for r in rows)
    assert durations == per_kind


def test_labels_hold_configured_names_only(fed):
    allowed = configured_names(fed)
    seen = set()
    for node in ("hrss", "fund"):
        for samples in scrape(fed, node).values():
            for sample in samples:
                seen.update(v for k, v in sample.labels.items() if k != "le")
    assert seen <= allowed, seen - allowed
    assert not any(re.search(r"\d{14,}", v) for v in seen)
    # what the answering side saw, named as its config names it
    hrss = scrape(fed, "hrss")["shuqiao_queries"]
    answered = {(x.labels["dataset"], x.labels["purpose"]) for x in hrss
                if x.labels["outcome"] == "answered" and x.name.endswith("_total")}
    assert answered == {("flexible_workers", fx.PURPOSE), ("flexible_workers", "housing-loan")}
    refused = {(x.labels["dataset"], x.labels["purpose"]) for x in hrss
               if x.labels["outcome"] == "refused" and x.name.endswith("_total")}
    assert refused == {("flexible_workers", "other")}  # the purpose hrss does not grant
    # the asking side names a partner's dataset and purpose only once an answer vouched for them
    fund = scrape(fed, "fund")["shuqiao_queries"]
    refused = {(x.labels["dataset"], x.labels["purpose"], x.value) for x in fund
               if x.labels["outcome"] == "refused" and x.name.endswith("_total")}
    assert refused == {("other", "other", 3.0)}


def test_quota_and_budget_left_are_read_from_the_database(fed):
    families = scrape(fed, "hrss")
    rows = fx.query_log(fed, "hrss")
    charged = sum(r["elements"] for r in rows if r["role"] == "answerer" and
                  r["dataset"] == "flexible_workers" and r["outcome"] in CHARGED)
    left = {x.labels["window"]: x.value for x in families["shuqiao_quota_remaining_elements"]}
    assert left == {"daily": 5000 - charged, "monthly": 20000 - charged, "epoch": 50000 - charged}
    (budget,) = families["shuqiao_dp_budget_remaining"]
    assert budget.labels == {"dataset": "flexible_workers", "partner": "fund"}
    assert budget.value == pytest.approx(4.0 - 0.5)
    (entries,) = families["shuqiao_ledger_entries"]
    assert entries.value > len(rows)  # admitted and completed entries, admin entries


def test_a_metrics_token_opens_metrics_and_nothing_else(fed):
    with https(fed, "hrss") as client:
        assert client.get("/metrics").status_code == 401
        for role, path, status in (("metrics", "/metrics", 200), ("auditor", "/metrics", 200),
                                   ("admin", "/metrics", 403), ("metrics", "/v1/ledger/head", 401),
                                   ("metrics", "/v1/admin/policy", 403)):
            r = client.get(path, headers={"Authorization": f"Bearer {fed.tokens[role][0]}"})
            assert r.status_code == status, (role, path)


def test_witnessing_is_counted_and_its_lag_shown(fed):
    deadline = time.monotonic() + 30
    while True:  # the fund centre's first round runs 5 s after it starts
        rounds = [x for x in scrape(fed, "fund").get("shuqiao_witness_rounds", [])
                  if x.name == "shuqiao_witness_rounds_total"]
        if rounds or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(x.labels, x.value) for x in rounds] == [({"partner": "hrss", "result": "ok"}, 1.0)]
    (lag,) = scrape(fed, "fund")["shuqiao_witness_lag_entries"]
    assert lag.labels == {"witness": "hrss"} and lag.value >= 0


def test_json_logs_parse_line_by_line_and_hold_no_identifier(fed):
    time.sleep(6 * KEEPALIVE)  # the fund centre's channel to hrss idles, pinging
    people = set(fed.registry) | set(fed.applicants)
    for node in ("hrss", "fund"):
        text = (fed.fed.nodes[node].directory / "serve.log").read_text(encoding="utf-8")
        # the server permits the channel's pings, so the client logs no GOAWAY (gRPC's own
        # stderr line, which would not parse either)
        assert "too_many_pings" not in text and "GOAWAY" not in text, node
        events = [json.loads(line) for line in text.splitlines()]  # every line is one event
        assert events and all({"time", "level", "logger", "message"} <= set(e) for e in events)
        queries = [e for e in events if e["logger"] == "shuqiao.queries"]
        if node == "hrss":
            assert len(queries) == len(fx.query_log(fed, "hrss"))
            assert all(e["query_id"] and e["partner"] == "fund" for e in queries)
        assert not any(p in text for p in people)
        assert not re.search(r"\d{17}[\dXx]", text)

"""`POST /v1/checks` between real `shuqiao serve` processes over HTTPS: decisions equal the
ground truth, provenance is in the ledger, roles and scopes are refused before any partner
hears of the check, retries replay, bad bodies get clear 4xx, and no identifier is logged."""
from __future__ import annotations

import csv
import json
import random
import socket
import ssl
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from node.ledger.http import new_token

from . import fixtures as fx

pytestmark = pytest.mark.e2e

RULES = """
[rules]
flexible_worker_subsidy = 'hrss.flexible_workers[缴费月数 >= 6] and not fund.depositors and age < 35'
housing = 'hrss.flexible_workers'

[purposes]
flexible_worker_subsidy = "flexible-worker-deposit"
housing = "housing-loan"
"""
ROLES = ("ops", "scoped", "admin", "auditor", "metrics")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    s = fx.build(root, registry_size=400, applicants=60, grant={
        "purposes": [fx.PURPOSE, "housing-loan"], "kinds": ["membership", "predicate"],
        "predicate_columns": ["缴费月数"]})
    s.tokens = {name: new_token() for name in ROLES}
    roles = {"ops": "operator", "scoped": "operator", "admin": "admin", "auditor": "auditor", "metrics": "metrics"}
    tokens = [{"name": n, "digest": d, "role": roles[n],
               **({"purposes": ["housing-loan"], "rules": ["housing"]} if n == "scoped" else {})}
              for n, (_, d) in s.tokens.items()]
    (root / "rules.toml").write_text(RULES, encoding="utf-8")
    rng = random.Random(3)
    s.depositors = set(rng.sample(s.registry, 40))
    fx.write_csv(root / "depositors.csv", ["sfzh"], [[p] for p in sorted(s.depositors)])
    s.fed.add_node("fund", partners=[{"id": "hrss"}, {"id": "edu", "address": f"127.0.0.1:{_closed_port()}"}],
                   datasets=[{"name": "depositors"}], grpc={"connect_seconds": 1},
                   extra={"http": {"listen": "127.0.0.1:0", "tokens": tokens},
                          "service": {"rules_file": str(root / "rules.toml")}})
    with open(s.registry_csv, newline="", encoding="gb18030") as f:
        s.months = {r["公民身份号码"]: int(r["缴费月数"]) for r in csv.DictReader(f)}
    with s.fed:
        fx.start(s)
        fx.register(s)
        s.fed.cli("dataset", "add", "--config", s.cfg("fund"), "--name", "depositors",
                  "--csv", str(root / "depositors.csv"), "--id-column", "sfzh")
        s.fed.start("fund")
        s.client = httpx.Client(base_url=f"https://127.0.0.1:{s.fed.nodes['fund'].http_port}",
                                verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")),
                                timeout=30)
        yield s
        s.client.close()


def post(s, body, *, token="ops", key: str | None = "fresh", **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {s.tokens[token][0]}"} if token else {}
    if key:
        headers["Idempotency-Key"] = str(uuid.uuid4()) if key == "fresh" else key
    if isinstance(body, (bytes, str)):
        return s.client.post("/v1/checks", content=body, headers={**headers, "Content-Type": "application/json"}, **kw)
    return s.client.post("/v1/checks", json=body, headers=headers, **kw)


def answered_by_hrss(s) -> int:
    return sum(1 for r in fx.query_log(s, "hrss") if r["role"] == "answerer")


def ledger_of(s, node: str) -> dict[str, list[int]]:
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes[node].directory / 'node.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT idx, query_id FROM ledger_entries WHERE query_id IS NOT NULL")).all()
    engine.dispose()
    found: dict[str, list[int]] = {}
    for idx, qid in rows:
        found.setdefault(qid, []).append(idx)
    return found


def person(s, *, months: str, depositor: bool) -> str:
    for p in s.registry if months != "none" else s.applicants:
        if months == "none" and p in s.months:
            continue
        if months != "none" and (s.months[p] >= 6) != (months == "enough"):
            continue
        if (p in s.depositors) == depositor:
            return p
    raise AssertionError("the scenario has nobody of that kind")


def test_decisions_equal_the_ground_truth_with_their_provenance(world):
    s = world
    cases = [  # (identifier, columns, expected eligible, partner asked)
        (person(s, months="enough", depositor=False), {"age": "30"}, True, True),
        (person(s, months="few", depositor=False), {"age": "30"}, False, True),
        (person(s, months="none", depositor=False), {"age": "30"}, False, True),
        (person(s, months="enough", depositor=True), {"age": "30"}, False, False),  # decided here
        (person(s, months="enough", depositor=False), {"age": "40"}, False, False),
        (person(s, months="enough", depositor=False), {}, None, True),  # age missing: undetermined
    ]
    before = answered_by_hrss(s)
    answers = []
    for identifier, columns, expected, asked in cases:
        n = answered_by_hrss(s)
        r = post(s, {"identifier": identifier, "columns": columns, "rule": "flexible_worker_subsidy"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["eligible"] is expected
        assert out["decision"] == {True: "符合", False: "不符合", None: "无法判定"}[expected]
        assert answered_by_hrss(s) == n + asked
        assert identifier not in r.text
        answers.append(out)
    assert answered_by_hrss(s) == before + 4
    ledger = ledger_of(s, "fund")
    for out in answers:
        cited = [q for q in out["queries"] if q["cited"]]
        assert sorted(q["query_id"] for q in cited) == sorted(out["query_ids"])
        for q in out["queries"]:
            assert q["ledger_index"] == ledger[q["query_id"]][-1] and q["ledger_node"] == "fund"
            if q["partner"] == "hrss":
                assert q["receipt"]["partner"] == "hrss" and q["receipt"]["ledger_index"] in \
                    ledger_of(s, "hrss")[q["query_id"]]
            else:
                assert q["receipt"] is None
    assert "符合条件" in answers[0]["explanation"] and "hrss.flexible_workers" in answers[0]["explanation"]
    assert len(answers[0]["query_ids"]) == 2  # the partner's answer and the local lookup
    assert "hrss" not in {q["partner"] for q in answers[3]["queries"]}
    assert "age" in answers[5]["explanation"] and answers[5]["query_ids"] == []
    en = post(s, {"identifier": cases[0][0], "columns": {"age": "30"}, "rule": "flexible_worker_subsidy",
                  "lang": "en"}).json()
    assert en["decision"] == "eligible" and en["explanation"].startswith("eligible: in hrss.flexible_workers")


def test_a_single_partner_query(world):
    s = world
    member, outsider = person(s, months="few", depositor=False), person(s, months="none", depositor=False)
    query = {"partner": "hrss", "dataset": "flexible_workers", "purpose": fx.PURPOSE}
    for identifier, kind, predicate, expected in ((member, "membership", None, True),
                                                  (member, "predicate", "缴费月数 >= 6", False),
                                                  (outsider, "membership", None, False)):
        q = {**query, "kind": kind, **({"predicate": predicate} if predicate else {})}
        r = post(s, {"identifier": identifier, "query": q, "lang": "en"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["eligible"] is expected and out["rule"] is None
        assert len(out["query_ids"]) == 1 and out["queries"][0]["receipt"]["partner"] == "hrss"
    logged = {r["query_id"]: r for r in fx.query_log(s, "hrss")}
    assert logged[out["query_ids"][0]]["kind"] == "membership"


def test_every_other_role_is_refused(world):
    s = world
    body = {"identifier": s.registry[0], "columns": {"age": "30"}, "rule": "flexible_worker_subsidy"}
    before = answered_by_hrss(s)
    assert post(s, body, token=None).status_code == 401
    for role in ("admin", "auditor", "metrics"):
        r = post(s, body, token=role)
        assert r.status_code == 403 and "operator" in r.json()["detail"]
    assert answered_by_hrss(s) == before


def test_scopes_are_refused_before_any_partner_hears_of_it(world):
    s = world
    before = answered_by_hrss(s)
    r = post(s, {"identifier": s.registry[0], "columns": {"age": "30"}, "rule": "flexible_worker_subsidy"},
             token="scoped")
    assert r.status_code == 403 and "flexible_worker_subsidy" in r.json()["detail"]
    r = post(s, {"identifier": s.registry[0], "query": {"partner": "hrss", "dataset": "flexible_workers",
                                                         "purpose": fx.PURPOSE}}, token="scoped")
    assert r.status_code == 403 and fx.PURPOSE in r.json()["detail"]
    assert answered_by_hrss(s) == before
    assert post(s, {"identifier": s.registry[0], "rule": "housing"}, token="scoped").json()["eligible"] is True
    assert answered_by_hrss(s) == before + 1


def test_a_retry_replays_the_first_answer(world):
    s = world
    body = {"identifier": s.registry[1], "rule": "housing"}
    key = str(uuid.uuid4())
    before = answered_by_hrss(s)
    first, again = post(s, body, key=key), post(s, body, key=key)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["query_ids"] == again.json()["query_ids"] and first.json()["query_ids"]
    assert answered_by_hrss(s) == before + 1
    assert post(s, {**body, "lang": "en"}, key=key).status_code == 422  # the key, reused for another request
    assert post(s, body, key=None).status_code == 428


def test_bad_requests_get_clear_answers_without_the_identifier(world):
    s = world
    bad_id = s.registry[2][:-1] + ("0" if s.registry[2][-1] != "0" else "1")  # a wrong check digit
    s.refused_ids = [bad_id]
    before = answered_by_hrss(s)
    cases = [
        (b'{"identifier": ', 422, None),
        (b"[]", 422, None),
        ({"identifier": s.registry[2]}, 422, "exactly one of"),
        ({"identifier": s.registry[2], "rule": "housing", "surprise": 1}, 422, None),
        ({"identifier": bad_id, "rule": "housing"}, 422, "check digit"),
        ({"identifier": s.registry[2], "rule": "no_such_rule"}, 404, "no_such_rule"),
        ({"identifier": s.registry[2], "query": {"partner": "tax", "dataset": "x_y", "purpose": fx.PURPOSE}},
         404, "tax"),
        ({"identifier": s.registry[2], "query": {"partner": "hrss", "dataset": "no_such", "purpose": fx.PURPOSE}},
         404, "no_such"),
        ({"identifier": s.registry[2], "query": {"partner": "hrss", "dataset": "flexible_workers",
                                                  "kind": "predicate", "predicate": "缴费月数 >=",
                                                  "purpose": fx.PURPOSE}}, 422, "predicate"),
        ({"identifier": s.registry[2], "query": {"partner": "hrss", "dataset": "flexible_workers",
                                                  "purpose": "not-granted"}}, 422, "purpose"),
    ]
    for body, status, says in cases:
        r = post(s, body)
        assert r.status_code == status, (status, r.text)
        assert s.registry[2] not in r.text and bad_id not in r.text
        assert says is None or says in json.dumps(r.json()["detail"], ensure_ascii=False), r.text
    huge = json.dumps({"identifier": s.registry[2], "rule": "housing", "columns": {"x": "y" * 200_000}})
    r = post(s, huge)
    assert r.status_code == 413 and "KiB" in r.json()["detail"]
    r = s.client.post("/v1/checks", content=(b"{" + b" " * 100_000 for _ in range(1)),
                      headers={"Authorization": f"Bearer {s.tokens['ops'][0]}", "Idempotency-Key": "chunked"})
    assert r.status_code == 413  # no Content-Length: read up to the limit, then refused
    # A listing is not a query: the one query hrss saw is the one it refused (the purpose).
    assert [r["outcome"] for r in fx.query_log(s, "hrss")[before:]] == ["refused"]


def test_an_unreachable_partner_is_a_503(world):
    r = post(world, {"identifier": world.registry[0],
                     "query": {"partner": "edu", "dataset": "graduates", "purpose": "graduate-housing-support"}})
    assert r.status_code == 503 and "edu" in r.json()["detail"] and "unreachable" in r.json()["detail"]


def test_a_remembered_listing_of_a_retired_version_is_asked_again(world):
    s = world
    body = {"identifier": s.registry[3], "rule": "housing"}
    assert post(s, body).json()["eligible"] is True  # the listing (version 1) is remembered
    fx.register(s)  # version 2 ...
    s.fed.cli("dataset", "retire", "--config", s.cfg("hrss"), "flexible_workers", "--version", "1")
    r = post(s, body)  # ... asked under the remembered version 1: refused, then asked again
    assert r.status_code == 200 and r.json()["eligible"] is True
    asked = [q for q in fx.query_log(s, "fund") if q["role"] == "asker"][-2:]
    assert [(q["outcome"], q["version"]) for q in asked] == [("refused", 1), ("answered", 2)]
    assert r.json()["query_ids"] == [asked[1]["query_id"]]


def test_no_identifier_reaches_the_logs(world):
    s = world
    logs = "".join(f.read_text(errors="replace") for n in ("fund", "hrss")
                   for f in s.fed.nodes[n].directory.rglob("*.log"))  # serve.log, incidents, ...
    assert logs  # the nodes did log
    for p in s.registry + s.applicants + getattr(s, "refused_ids", []):
        assert p not in logs


def test_the_docs_are_served_by_the_node_itself(world):
    from html.parser import HTMLParser
    s = world

    class Assets(HTMLParser):
        urls: list[str] = []
        inline: list[str] = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.urls += [a[k] for k in ("src", "href") if k in a]
            if tag == "script" and "src" not in a:
                self.inline.append(tag)

    bearer = {"Authorization": f"Bearer {s.tokens['auditor'][0]}"}
    assert s.client.get("/docs").status_code == 401
    assert s.client.get("/openapi.json").status_code == 401
    metrics = {"Authorization": f"Bearer {s.tokens['metrics'][0]}"}
    assert s.client.get("/docs", headers=metrics).status_code == 403
    page = s.client.get("/docs", headers=bearer)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    parser = Assets()
    parser.feed(page.text)
    assert parser.urls and not parser.inline
    base = httpx.URL(str(s.client.base_url))
    for url in parser.urls:
        absolute = base.join(url)
        assert (absolute.scheme, absolute.host, absolute.port) == (base.scheme, base.host, base.port), url
        asset = s.client.get(url)  # public: Swagger UI's own files
        assert asset.status_code == 200 and asset.content, url
    init = s.client.get("/docs/static/docs-init.js").text
    assert "SwaggerUIBundle" in init
    assert "://" not in init
    assert s.client.get("/docs/static/../app.py").status_code == 404
    for role in ("ops", "admin", "auditor"):
        doc = s.client.get("/openapi.json", headers={"Authorization": f"Bearer {s.tokens[role][0]}"})
        assert doc.status_code == 200
    paths = doc.json()["paths"]
    assert {"/v1/checks", "/v1/admin/policy", "/v1/ledger/head"} <= set(paths)
    check = paths["/v1/checks"]["post"]
    assert check["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CheckIn")
    assert any(p["name"] == "Idempotency-Key" for p in check["parameters"])
    assert doc.json()["components"]["schemas"]["CheckIn"]["examples"]
    assert not any(p.startswith(("/docs", "/console")) or p == "/openapi.json" for p in paths)


def test_swagger_ui_runs_in_a_browser_under_the_csp(world):
    """Debian's chromium loads /docs: the page renders the operations, and no request
    fails and nothing is refused by the Content-Security-Policy."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    s = world
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            context = browser.new_context(ignore_https_errors=True, extra_http_headers={
                "Authorization": f"Bearer {s.tokens['auditor'][0]}"})
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("requestfailed", lambda r: problems.append(r.url))
            page.goto(f"{s.client.base_url}/docs")
            page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
            assert page.inner_text(".swagger-ui .info .title").startswith("Shuqiao node API")
            assert page.locator(".opblock-summary-path", has_text="/v1/checks").count() == 1
            assert problems == []
        finally:
            browser.close()

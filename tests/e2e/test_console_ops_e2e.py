"""The operator's console pages and the overview, against real `shuqiao serve` processes over
TLS: the fund centre's node with the console and a rule file, the hrss agency as partner.

Attacks speak HTTP directly: every other role refused on every operator page and form,
forms without or with a forged CSRF token, rules and purposes outside the token's scope
posted by hand, another operator's job. One journey in a real browser: upload, progress,
pages of results, the .xlsx download checked against who is in the partner's registry.
"""
from __future__ import annotations

import re
import ssl
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openpyxl
import pytest
import sqlalchemy as sa

from node.ledger.http import new_token

from . import fixtures as fx
from .browser import browser, login, new_page, shot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.e2e

RULES = f"""
[rules]
flexible_check = 'hrss.flexible_workers'
long_contributors = 'hrss.flexible_workers[缴费月数 >= 6]'

[purposes]
flexible_check = "{fx.PURPOSE}"
long_contributors = "{fx.PURPOSE}"
"""
# name: (role, scope)
TOKENS = {"ops": ("operator", {"rules": ["flexible_check"], "purposes": [fx.PURPOSE]}),
          "ops-other": ("operator", {"purposes": ["graduate-housing-support"]}),
          "admin": ("admin", {}), "auditor": ("auditor", {}), "metrics": ("metrics", {})}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-ops")
    s = fx.build(root, registry_size=300, applicants=120,
                 grant={"kinds": ["membership", "predicate"], "predicate_columns": ["缴费月数"]})
    (root / "rules.toml").write_text(RULES, encoding="utf-8")
    db = root / "applications.db"  # the business system's pending applications
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pending (申请编号 TEXT PRIMARY KEY, 身份证号 TEXT)"))
        conn.execute(sa.text("INSERT INTO pending VALUES (:a, :b)"),
                     [{"a": f"S{i:04d}", "b": p} for i, p in enumerate(s.applicants)])
    engine.dispose()
    s.tokens, entries = {}, []
    for name, (role, scope) in TOKENS.items():
        token, digest = new_token()
        s.tokens[name] = token
        entries.append({"name": f"{name}-desk", "digest": digest, "role": role, **scope})
    # edu is configured but not running: the overview must say so without waiting long
    s.fed.add_node("fund", partners=[{"id": "hrss"}, {"id": "edu", "address": "127.0.0.1:9"}], extra={
        "http": {"listen": "127.0.0.1:0", "tokens": entries},
        "service": {"rules_file": str(root / "rules.toml"), "max_upload_mib": 1,
                    "applicant_sources": [{"name": "pending", "description": "待审核申请",
                                           "url": f"sqlite:///{db}", "table": "pending"}]}})
    fx.start(s)
    fx.register(s)
    s.fed.start("fund")
    s.base = f"https://127.0.0.1:{s.fed.nodes['fund'].http_port}"
    s.truth = set(s.applicants) & set(s.registry)
    yield s
    s.fed.close()


def client(s) -> httpx.Client:
    return httpx.Client(base_url=s.base, timeout=30,
                        verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


@contextmanager
def logged_in(s, name: str):
    """A client holding a console session for token `name`, and the session's CSRF token."""
    with client(s) as c:
        nonce = re.search(r'name="nonce" value="([^"]+)"', c.get("/console/login").text).group(1)
        r = c.post("/console/login", data={"token": s.tokens[name], "nonce": nonce})
        assert r.status_code == 303
        c.get("/console/")  # warms the partners' probe
        page = c.get("/console/ops/jobs") if TOKENS[name][0] == "operator" else c.get("/console/")
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
        yield c, found.group(1) if found else None


def submit(c, csrf: str | None, s, **fields):
    data = {"mode": "rule", "rule": "flexible_check", "id_column": "身份证号", "encoding": "auto", **fields}
    if csrf is not None:
        data["csrf"] = csrf
    return c.post("/console/ops/jobs", data=data,
                  files={"file": ("申请人名单.csv", s.applicants_csv.read_bytes(), "text/csv")})


def wait_done(c, job_path: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get(f"{job_path}/progress.json").json()
        if state["finished"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"{job_path} did not finish within {timeout} s")


@pytest.fixture(scope="module")
def done_job(node):
    """A job of the `ops` token, run to the end."""
    with logged_in(node, "ops") as (c, csrf):
        r = submit(c, csrf, node)
        assert r.status_code == 303, r.text
        path = r.headers["location"]
        wait_done(c, path)
        return path


PAGES = ("/console/ops/jobs", "/console/ops/check")


def test_operator_pages_need_a_session(node, done_job):
    with client(node) as c:
        for path in (*PAGES, done_job, f"{done_job}/progress.json", f"{done_job}/download?fmt=xlsx"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next="), path
        r = c.post("/console/ops/jobs", data={"mode": "rule"}, files={"file": ("a.csv", b"x", "text/csv")})
        assert r.status_code == 303 and "/console/login" in r.headers["location"]


@pytest.mark.parametrize("name", ["admin", "auditor", "metrics"])
def test_other_roles_are_refused_every_operator_page_and_form(node, done_job, name):
    with logged_in(node, name) as (c, csrf):
        for path in (*PAGES, done_job, f"{done_job}/progress.json", f"{done_job}/download?fmt=xlsx",
                     f"{done_job}/download?fmt=csv&table=rejects"):
            assert c.get(path).status_code == 403, path
        forms = [("/console/ops/jobs", {"files": {"file": ("a.csv", node.applicants_csv.read_bytes())},
                                         "data": {"mode": "rule", "rule": "flexible_check",
                                                  "id_column": "身份证号"}}),
                 ("/console/ops/check", {"data": {"mode": "rule", "rule": "flexible_check",
                                                  "identifier": node.applicants[0]}}),
                 (f"{done_job}/cancel", {"data": {}})]
        for path, kw in forms:
            kw["data"]["csrf"] = csrf or "0" * 64
            assert c.post(path, **kw).status_code == 403, path
        if csrf is not None:  # the menu shows no operator page either
            assert "/console/ops/" not in c.get("/console/").text
    with client(node) as c:  # a bearer token of the role opens no console page either
        r = c.get("/console/ops/jobs", headers={"Authorization": f"Bearer {node.tokens[name]}"})
        assert r.status_code == 403


def _jobs(c) -> list[str]:
    return re.findall(r'href="/console/ops/jobs/([0-9a-f]{32})"', c.get("/console/ops/jobs").text)


def test_forms_need_the_sessions_csrf_token(node):
    with logged_in(node, "ops") as (c, csrf):
        before = _jobs(c)
        assert submit(c, None, node).status_code == 403
        assert submit(c, "0" * 64, node).status_code == 403
        r = c.post("/console/ops/check", data={"mode": "rule", "rule": "flexible_check",
                                               "identifier": node.applicants[0]})
        assert r.status_code == 403
        assert _jobs(c) == before


def test_a_rule_or_purpose_outside_the_scope_is_refused_even_when_posted(node):
    with logged_in(node, "ops") as (c, csrf):
        page = c.get("/console/ops/jobs").text
        assert "flexible_check" in page and "long_contributors" not in page  # not offered
        before = _jobs(c)
        r = submit(c, csrf, node, rule="long_contributors")  # posted anyway
        assert r.status_code == 403 and "long_contributors" in r.text
        r = submit(c, csrf, node, mode="query", source="hrss/flexible_workers",
                   purpose="graduate-housing-support", kind="membership")
        assert r.status_code == 403 and "graduate-housing-support" in r.text
        assert _jobs(c) == before  # nothing was queued
        r = c.post("/console/ops/check", data={"csrf": csrf, "mode": "rule", "rule": "long_contributors",
                                               "identifier": node.applicants[0]})
        assert r.status_code == 403
        r = c.post("/console/ops/check", data={"csrf": csrf, "mode": "query", "source": "hrss/flexible_workers",
                                               "purpose": "graduate-housing-support", "kind": "membership",
                                               "identifier": node.applicants[0]})
        assert r.status_code == 403 and node.applicants[0] not in r.text
    with logged_in(node, "ops-other") as (c, csrf):
        # may state only a purpose hrss does not grant: no rule stating fx.PURPOSE, no source
        page = c.get("/console/ops/jobs").text
        assert "flexible_check" not in page and "hrss/flexible_workers" not in page
        assert submit(c, csrf, node).status_code == 403


def test_cancelling_a_finished_job_says_why_not(node, done_job):
    with logged_in(node, "ops") as (c, csrf):
        r = c.post(f"{done_job}/cancel", data={"csrf": csrf})
        assert r.status_code == 409 and "already ended" in r.text
        assert 'data-testid="job-status">已完成<' in c.get(done_job).text


def test_another_operators_job_is_not_found(node, done_job):
    with logged_in(node, "ops-other") as (c, csrf):
        for path in (done_job, f"{done_job}/progress.json", f"{done_job}/download?fmt=xlsx"):
            assert c.get(path).status_code == 404, path
        assert c.post(f"{done_job}/cancel", data={"csrf": csrf}).status_code == 404


def test_bad_uploads_are_refused_with_the_reason_and_nothing_is_queued(node):
    with logged_in(node, "ops") as (c, csrf):
        before = _jobs(c)
        data = {"csrf": csrf, "mode": "rule", "rule": "flexible_check", "id_column": "身份证号"}
        r = c.post("/console/ops/jobs", data=data, files={"file": ("list.xls", b"\xd0\xcf\x11\xe0", "x")})
        assert r.status_code == 400 and ".xlsx" in r.text
        r = c.post("/console/ops/jobs", data={**data, "id_column": "证件号码"},
                   files={"file": ("list.csv", node.applicants_csv.read_bytes(), "text/csv")})
        assert r.status_code == 400 and "证件号码" in r.text
        r = c.post("/console/ops/jobs", data=data,
                   files={"file": ("big.csv", b"a" * (1024 * 1024 + 100 * 1024), "text/csv")})
        assert r.status_code == 413 and "1 MiB" in r.text
        assert _jobs(c) == before


def test_a_job_over_a_configured_database_list(node):
    with logged_in(node, "ops") as (c, csrf):
        assert "待审核申请" in c.get("/console/ops/jobs").text
        data = {"csrf": csrf, "mode": "rule", "rule": "flexible_check", "id_column": "身份证号",
                "list_source": "pending"}
        r = c.post("/console/ops/jobs", data=data, files={"file": ("", b"", "application/octet-stream")})
        assert r.status_code == 303, r.text
        wait_done(c, r.headers["location"])
        assert f'data-count="eligible">{len(node.truth)}<' in c.get(r.headers["location"]).text
        before = _jobs(c)
        r = c.post("/console/ops/jobs", data=data,  # a file and a source: which one was meant?
                   files={"file": ("申请.csv", node.applicants_csv.read_bytes(), "text/csv")})
        assert r.status_code == 400 and "not both" in r.text
        r = c.post("/console/ops/jobs", data={**data, "list_source": "nope"},
                   files={"file": ("", b"", "application/octet-stream")})
        assert r.status_code == 400 and "no applicant source named &#39;nope&#39;" in r.text
        assert _jobs(c) == before


def test_an_applicant_lists_markup_is_shown_as_text(node):
    hostile = '<img src=x onerror="alert(1)">'
    body = f"申请编号,身份证号\n{hostile},{node.applicants[0]}\n".encode()
    with logged_in(node, "ops") as (c, csrf):
        r = c.post("/console/ops/jobs", data={"csrf": csrf, "mode": "rule", "rule": "flexible_check",
                                              "id_column": "身份证号"},
                   files={"file": (f"{hostile}.csv", body, "text/csv")})
        assert r.status_code == 303, r.text
        wait_done(c, r.headers["location"])
        for page in (c.get(r.headers["location"]).text, c.get("/console/ops/jobs").text):
            assert hostile not in page and "&lt;img src=x" in page


def test_a_partner_query_job_and_its_json_download(node):
    with logged_in(node, "ops") as (c, csrf):
        r = submit(c, csrf, node, mode="query", source="hrss/flexible_workers", purpose=fx.PURPOSE,
                   kind="membership")
        assert r.status_code == 303, r.text
        wait_done(c, r.headers["location"])
        page = c.get(r.headers["location"]).text
        assert "在 hrss 的数据集 flexible_workers 中" in page
        rows = c.get(f"{r.headers['location']}/download?fmt=json").json()
        listed = rows["rows"] if isinstance(rows, dict) else rows
        assert {row["身份证号"] for row in listed if row["结果"] == "是"} == node.truth
        # a job whose files are gone (a node restored from a backup) says so, it does not break
        job_id = r.headers["location"].rsplit("/", 1)[1]
        for f in (node.fed.nodes["fund"].directory / "jobs" / job_id).iterdir():
            f.unlink()
        page = c.get(r.headers["location"])
        assert page.status_code == 200 and "not on this node" in page.text
        assert c.get(f"{r.headers['location']}/download?fmt=xlsx").status_code == 409


def test_a_real_time_check_decides_one_applicant_and_never_shows_the_identifier(node):
    member = next(a for a in node.applicants if a in node.truth)
    stranger = next(a for a in node.applicants if a not in node.truth)
    with logged_in(node, "ops") as (c, csrf):
        for person, verdict in ((member, "符合"), (stranger, "不符合")):
            r = c.post("/console/ops/check", data={"csrf": csrf, "mode": "rule", "rule": "flexible_check",
                                                   "identifier": person})
            assert r.status_code == 200, r.text
            assert re.search(r'data-testid="verdict">([^<]+)<', r.text).group(1) == verdict
            assert person not in r.text and person[6:14] not in r.text
        r = c.post("/console/ops/check", data={"csrf": csrf, "mode": "query", "source": "hrss/flexible_workers",
                                               "purpose": fx.PURPOSE, "kind": "predicate",
                                               "predicate": "缴费月数 >= 1", "identifier": member})
        assert re.search(r'data-testid="verdict">([^<]+)<', r.text).group(1) == "符合", r.text
        r = c.post("/console/ops/check", data={"csrf": csrf, "mode": "rule", "rule": "flexible_check",
                                               "identifier": "110101199003071234"})  # bad check digit
        assert r.status_code == 400 and "110101199003071234" not in r.text


def test_the_operators_journey_in_a_browser(node, browser, tmp_path):  # noqa: F811
    page = new_page(browser)
    login(page, node.base, node.tokens["ops"])
    page.get_by_role("link", name="批量核验").click()
    page.get_by_label("申请人名单文件").set_input_files(str(node.applicants_csv))
    page.get_by_label("核验规则", exact=True).select_option("flexible_check")
    shot(page, "console_ops", "1-form")
    page.get_by_role("button", name="提交核验").click()
    page.wait_for_url(re.compile(r".*/console/ops/jobs/[0-9a-f]{32}$"))
    assert page.get_by_role("heading", name="进度").is_visible()
    shot(page, "console_ops", "2-progress")
    page.get_by_test_id("results").wait_for(timeout=30_000)  # console.js reloads when it ends
    assert page.get_by_test_id("job-status").inner_text() == "已完成"
    assert page.locator('[data-count="eligible"]').inner_text() == str(len(node.truth))
    assert "第 1 / 6 页" in page.get_by_test_id("page-of").inner_text()
    shot(page, "console_ops", "3-results")
    page.get_by_role("link", name="下一页").click()
    assert "第 2 / 6 页" in page.get_by_test_id("page-of").inner_text()
    assert page.locator("table.results tbody tr").first.locator("td").first.inner_text() == "22"
    page.locator('nav.tabs a[href="?decision=not_eligible"]').click()  # only those to follow up
    page.get_by_role("link", name="下一页").click()
    decisions = page.locator("table.results [data-decision]")
    assert decisions.count() == 20 and set(decisions.evaluate_all("els => els.map(e => e.dataset.decision)")) \
        == {"not_eligible"}
    pages = -(-(len(node.applicants) - len(node.truth)) // 20)
    assert f"第 2 / {pages} 页" in page.get_by_test_id("page-of").inner_text()
    shot(page, "console_ops", "3b-not-eligible")
    with page.expect_download() as caught:
        page.get_by_role("link", name="XLSX").click()
    path = tmp_path / "result.xlsx"
    caught.value.save_as(path)
    sheet = openpyxl.load_workbook(path, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    ids, decisions = header.index("身份证号"), header.index("判定")
    assert len(rows) - 1 == len(node.applicants)
    assert {r[ids] for r in rows[1:] if r[decisions] == "符合"} == node.truth
    assert {r[ids] for r in rows[1:] if r[decisions] == "不符合"} == set(node.applicants) - node.truth
    page.set_viewport_size({"width": 1920, "height": 1080})
    shot(page, "console_ops", "4-results-1920")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("link", name="实时核验").click()
    page.get_by_label("申请人身份证号").fill(next(iter(node.truth)))
    page.get_by_label("申请人身份证号").press("Enter")  # the keyboard submits the form
    assert page.get_by_test_id("verdict").inner_text() == "符合"
    shot(page, "console_ops", "5-check")
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", name="Real-time check").is_visible()
    page.get_by_role("link", name="Batch checks").click()
    page.get_by_role("link", name="Open").first.click()
    assert page.get_by_test_id("job-status").inner_text() == "done"
    shot(page, "console_ops", "6-results-en")
    page.context.close()


def test_the_overview_in_a_browser(node, browser):  # noqa: F811
    page = new_page(browser)
    login(page, node.base, node.tokens["auditor"])
    assert page.get_by_role("heading", name="概览").is_visible()
    assert page.get_by_test_id("partners-answering").inner_text() == "1 / 2"
    row = page.locator('tr[data-partner="hrss"]')
    assert "正常应答" in row.inner_text() and "flexible_workers" in row.inner_text()
    assert "无应答" in page.locator('tr[data-partner="edu"]').inner_text()
    assert "合作节点 edu 未在规定时间内应答" in page.get_by_test_id("alerts").inner_text()
    certs = page.locator("#certs-title + table").inner_text()
    assert "本节点 TLS 证书" in certs and "合作节点 TLS 证书" in certs
    assert page.get_by_test_id("head-verified").is_visible()
    shot(page, "console_ops", "overview-1280")
    page.set_viewport_size({"width": 1920, "height": 1080})
    shot(page, "console_ops", "overview-1920")
    for _ in range(3):  # keyboard: the skip link, then the menu
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON")
    page.context.close()

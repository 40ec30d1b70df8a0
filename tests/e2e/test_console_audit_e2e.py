"""The console's auditor pages against a real `shuqiao serve` over TLS, after real queries:
roles, bad and tampered proof requests, the remembered head, and one auditor's journey in a
real browser (ledger, filter, entry and its inclusion proof, charts whose totals equal the
node's query log)."""
from __future__ import annotations

import collections
import hashlib
import html
import re
import ssl
import time
from contextlib import contextmanager

import httpx
import pytest

from node.ledger.http import new_token
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from protocols import merkle

from . import fixtures as fx
from .browser import browser, login, new_page, shot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.e2e

ROLES = ("operator", "admin", "auditor", "metrics")
PAGES = ("/console/audit/ledger", "/console/audit/ledger/0", "/console/audit/consistency",
         "/console/audit/check", "/console/audit/witnessing", "/console/audit/charts")


def refused_query(s) -> None:
    """A query hrss refuses (a purpose fund was never granted): one more refused row and entry."""
    fx.refusal(s, [fx.header(s, purpose="not-granted-purpose"),
                   pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=fx.blinded(3)))])


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-audit")
    s = fx.build(root, registry_size=200, applicants=20)
    s.tokens, entries = {}, []
    for role in ROLES:
        token, digest = new_token()
        s.tokens[role] = token
        entries.append({"name": f"{role}-desk", "digest": digest, "role": role})
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}],
        extra={"http": {"listen": "127.0.0.1:0", "tokens": entries}})
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra={"maintenance": {"witness_seconds": 1.0}})
    fx.start(s)
    fx.register(s)
    for n in range(2):  # real queries by the fund centre's CLI, answered by hrss
        fx.query(s, root / f"out{n}.csv", check=True)
    refused_query(s)
    s.fed.start("fund")  # witnesses hrss's ledger every second, and hrss the fund centre's
    s.base = f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}"
    yield s
    s.fed.close()


def client(s) -> httpx.Client:
    return httpx.Client(base_url=s.base, verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


@contextmanager
def logged_in(s, role: str):
    with client(s) as c:
        nonce = re.search(r'name="nonce" value="([^"]+)"', c.get("/console/login").text).group(1)
        r = c.post("/console/login", data={"token": s.tokens[role], "nonce": nonce, "next": "/console/"})
        assert r.status_code == 303
        yield c


def verdict(page: str) -> str:
    found = re.search(r'data-testid="verdict"[^>]*>(.*?)</p>', page, re.S)
    assert found, page[:2000]
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_every_auditor_page_refuses_other_roles_and_redirects_without_a_session(node):
    with client(node) as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next="), path
    for role in ("operator", "admin", "metrics"):
        with logged_in(node, role) as c:
            for path in PAGES:
                r = c.get(path)
                assert r.status_code == 403 and "无权访问" in r.text, (role, path)
                assert 'href="/console/audit/ledger"' not in r.text  # no auditor menu for another role
    with logged_in(node, "auditor") as c:
        for path in PAGES:
            assert c.get(path).status_code == 200, path


def test_an_entry_page_shows_a_proof_that_verifies_independently(node):
    with logged_in(node, "auditor") as c:
        page = c.get("/console/audit/ledger/1").text
        assert "已核验" in verdict(page)
        raw = html.unescape(re.search(r'data-testid="raw">(.*?)</pre>', page, re.S).group(1))
        leaf = re.search(r'data-testid="leaf">([0-9a-f]{64})<', page).group(1)
        root = re.search(r'data-testid="expected-root">([0-9a-f]{64})<', page).group(1)
        size = int(re.search(r'data-testid="head-size">([\d,]+)<', page).group(1).replace(",", ""))
        path = re.findall(r'<code class="hash">([0-9a-f]{64})</code>', re.search(
            r'data-testid="proof-path">(.*?)</ol>', page, re.S).group(1))
        # The same check an external auditor runs, from what the page showed.
        assert hashlib.sha256(b"\0" + raw.encode()).hexdigest() == leaf
        merkle.verify_inclusion(bytes.fromhex(leaf), 1, size, [bytes.fromhex(p) for p in path], bytes.fromhex(root))
        # ... and the head's root is what the ledger API publishes at that size.
        head = c.get("/v1/ledger/head", headers={"Authorization": f"Bearer {node.tokens['auditor']}"})
        if head.status_code == 200 and head.json()["size"] == size:
            assert head.json()["root"] == root
        assert "签名有效" in page and "已由联盟 CA 认证" in page


def test_bad_and_tampered_proof_requests_say_what_is_wrong(node):
    with logged_in(node, "auditor") as c:
        cases = [("/console/audit/ledger/99999999", 404, "没有序号为 99,999,999 的条目"),
                 ("/console/audit/ledger/-1", 400, "条目序号须为非负整数"),
                 ("/console/audit/ledger?since=2026-02-31", 400, "is not a date"),
                 ("/console/audit/consistency?first=5&second=2", 200, "核验失败"),
                 ("/console/audit/consistency?first=1&second=99999999", 400, "beyond the ledger"),
                 ("/console/audit/consistency?first=x", 400, "whole number"),
                 ("/console/audit/check?index=0&size=2&leaf=zz&root=" + "0" * 64, 400, "not hexadecimal"),
                 ("/console/audit/charts?start=2026-01-01&end=2025-01-01", 400, "after the end date")]
        for path, status, words in cases:
            r = c.get(path)
            assert r.status_code == status and words in html.unescape(r.text), (path, r.status_code, r.text[-1500:])
            assert "Traceback" not in r.text
        # A proof copied from an entry page, one hash flipped: the verifier names the mismatch.
        page = c.get("/console/audit/ledger/2").text
        link = html.unescape(re.search(r'href="(/console/audit/check\?[^"]+)"', page).group(1))
        assert "证明有效" in verdict(c.get(link).text)
        flipped = re.sub(r"proof=([0-9a-f])", lambda m: "proof=" + ("1" if m.group(1) == "0" else "0"), link)
        assert flipped != link
        r = c.get(flipped)
        assert r.status_code == 200 and verdict(r.text) == "✗ 证明无效：由证明算出的根与应有的根不同"
        assert "the proof leads to a different root than expected" in r.text  # and the verifier's own words


def test_the_head_this_browser_saw_is_compared_with_the_current_one(node):
    with logged_in(node, "auditor") as c:
        c.get("/console/audit/ledger/0")  # the page remembers the head it showed
        seen = c.cookies.get("sq_audit_head")
        assert seen
        refused_query(node)  # the ledger grows
        page = c.get("/console/audit/consistency").text
        first = int(seen.split(".")[0])
        assert "已核验" in verdict(page) and f"规模 {first:,} 的树" in verdict(page)
        # A remembered root the node never had (history rewritten since): the proof fails.
        size, root, moment, sig = c.cookies.get("sq_audit_head").split(".")
        c.cookies.set("sq_audit_head", ".".join([size, "ab" * 32, moment, sig]), domain="127.0.0.1",
                      path="/console/audit")
        page = c.get(f"/console/audit/consistency?first={size}&second={int(size)}").text
        assert "核验失败" in verdict(page) or "签名无效" in page


def lag_on_metrics(s) -> int:
    text = client(s).get("/metrics", headers={"Authorization": f"Bearer {s.tokens['metrics']}"}).text
    return int(float(re.search(r'shuqiao_witness_lag_entries\{witness="fund"\} (\S+)', text).group(1)))


def test_cross_checks_show_the_partners_witnessing_and_the_lag_metrics_shows(node):
    deadline = time.monotonic() + 30
    with logged_in(node, "auditor") as c:
        while True:  # the fund centre's first witnessing round takes a moment
            before = lag_on_metrics(node)
            page = c.get("/console/audit/witnessing").text
            after = lag_on_metrics(node)
            row = re.search(r'<tr data-partner="fund">(.*?)</tr>', page, re.S).group(1)
            if "本节点从未核对" not in row or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert "本节点从未核对对方树头" not in row, row  # hrss checked and cosigned fund's head
    lag = int(re.search(r'data-testid="lag">([\d,]+)<', row).group(1).replace(",", ""))
    assert lag in (before, after)
    assert "存在未裁定的账本冲突" not in row and "无效" not in row


def test_the_auditor_journey_in_a_browser(node, browser):  # noqa: F811
    started = time.monotonic()
    refused_before = collections.Counter(r["outcome"] for r in fx.query_log(node, "hrss"))["refused"]
    page = new_page(browser)
    login(page, node.base, node.tokens["auditor"])
    page.get_by_role("link", name="账本查阅").click()
    assert page.get_by_role("heading", name="账本查阅").is_visible()
    page.get_by_label("结果").select_option("refused")
    page.get_by_label("条目类型").select_option("query")
    page.get_by_role("button", name="查询").click()
    page.wait_for_url("**outcome=refused**")
    rows = page.locator("table.entries tbody tr[data-index]")
    assert rows.count() == refused_before
    shot(page, "console_audit", "ledger-filtered-1280")
    rows.first.get_by_role("link").click()
    assert "已核验" in page.get_by_test_id("verdict").inner_text()
    assert page.get_by_test_id("proof-path").locator("li").count() >= 1
    shot(page, "console_audit", "entry-proof-1280")
    refused_query(node)  # the ledger grows while the auditor reads
    page.get_by_role("link", name="一致性证明").first.click()  # the head just seen vs now
    assert "已核验" in page.get_by_test_id("verdict").inner_text()
    assert page.get_by_test_id("proof-path").locator("li").count() >= 1
    shot(page, "console_audit", "consistency-1280")
    log = fx.query_log(node, "hrss")  # counted independently, from the node's database
    by_outcome = collections.Counter(r["outcome"] for r in log)
    by_partner = collections.Counter(r["asker"] for r in log if r["role"] == "answerer")
    assert by_outcome["refused"] >= 2 and by_outcome["answered"] == 2
    page.get_by_role("link", name="统计图表").click()
    page.keyboard.press("Tab")  # keyboard: the first stop is the skip link
    assert page.evaluate("document.activeElement.className") == "skip"
    page.locator("[data-chart=by-outcome] summary").focus()  # the numbers under the chart, by keyboard
    page.keyboard.press("Enter")
    totals = page.locator("[data-chart=by-outcome] tfoot td")
    shown = {td.get_attribute("data-series"): int(td.inner_text().replace(",", ""))
             for td in totals.all() if td.get_attribute("data-series")}
    assert shown == {"已答复": by_outcome["answered"], "已拒绝": by_outcome["refused"]} | \
        {k: v for k, v in {"失败": by_outcome["failed"], "中止": by_outcome["aborted"]}.items() if v}
    assert int(page.get_by_test_id("total-queries").inner_text().replace(",", "")) == len(log)
    titles = page.locator("[data-chart=by-partner] svg rect[data-value]")
    per_partner = collections.Counter()
    for rect in titles.all():
        per_partner[rect.get_attribute("data-series")] += int(float(rect.get_attribute("data-value")))
    assert per_partner == by_partner
    assert "查询次数" in page.locator("#by-outcome > title").text_content()
    from_titles = collections.Counter()  # each bar's <title>: "12-02 · 已拒绝: 1 次"
    for title in page.locator("#by-outcome rect > title").all():
        name, count = re.fullmatch(r".+ · (.+): ([\d,]+) 次", title.text_content()).groups()
        from_titles[name] += int(count.replace(",", ""))
    assert from_titles == collections.Counter(shown)
    shot(page, "console_audit", "charts-1280")
    page.get_by_role("link", name="在账本中查看这些拒绝记录").click()  # from the chart to the entries
    assert page.locator("table.entries tbody tr[data-index]").count() == by_outcome["refused"]
    page.context.close()
    wide = new_page(browser, width=1920, height=1080)
    login(wide, node.base, node.tokens["auditor"])
    for path, name in (("/console/audit/charts", "charts-1920"), ("/console/audit/witnessing", "witnessing-1920"),
                       ("/console/audit/consistency", "consistency-1920"), ("/console/audit/ledger", "ledger-1920"),
                       ("/console/audit/check?index=0&size=1&leaf=" + "0" * 64 + "&root=" + "1" * 64, "check-1920")):
        wide.goto(node.base + path)
        shot(wide, "console_audit", name)
    wide.goto(node.base + "/console/lang?to=en&next=/console/audit/ledger/1")
    assert "Verified" in wide.get_by_test_id("verdict").inner_text()
    shot(wide, "console_audit", "entry-en-1920")
    wide.context.close()
    assert time.monotonic() - started < 60


def test_an_entry_rewritten_in_the_database_fails_its_proof_on_the_page(node):
    """Last in this module: it damages the node's ledger on purpose."""
    import json
    import sqlite3
    with sqlite3.connect(node.fed.nodes["hrss"].directory / "node.db") as db:
        idx, entry = next((i, bytes(e)) for i, e in db.execute("SELECT idx, entry FROM ledger_entries ORDER BY idx")
                          if json.loads(bytes(e)).get("outcome") == "answered")
        forged = entry.replace(b'"elements":20', b'"elements":2')
        assert forged != entry
        db.execute("DROP TRIGGER ledger_entries_no_update")  # what anyone holding the file can do
        db.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (forged, idx))
    with logged_in(node, "auditor") as c:
        r = c.get(f"/console/audit/ledger/{idx}")
        assert r.status_code == 200 and "Traceback" not in r.text
        assert verdict(r.text) == "✗ 核验失败：由证明算出的根与应有的根不同"
        assert "different root" in r.text

"""The console's frame against a real `shuqiao serve` over TLS: login, sessions, CSRF,
security headers, roles, and one look at the overview in a real browser."""
from __future__ import annotations

import re
import ssl
from contextlib import contextmanager

import httpx
import pytest

from node.ledger.http import new_token

from . import fixtures as fx
from .browser import browser, login, new_page, shot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.e2e

ROLES = ("operator", "admin", "auditor", "metrics")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    s = fx.build(root, registry_size=200, applicants=20)
    s.tokens = {}
    entries = []
    for role in ROLES:
        token, digest = new_token()
        s.tokens[role] = token
        entries.append({"name": f"{role}-desk", "digest": digest, "role": role})
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}],
        extra={"http": {"listen": "127.0.0.1:0", "tokens": entries}})
    fx.start(s)
    fx.register(s)
    s.base = f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}"
    yield s
    s.fed.close()


def client(s) -> httpx.Client:
    return httpx.Client(base_url=s.base, verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


@contextmanager
def logged_in(s, role: str):
    """A client holding a console session for `role`, and the session's CSRF token (None: no page)."""
    with client(s) as c:
        page = c.get("/console/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
        r = c.post("/console/login", data={"token": s.tokens[role], "nonce": nonce, "next": "/console/"})
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "secure" in cookie and "samesite=strict" in cookie
        found = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/console/").text)
        yield c, found.group(1) if found else None


def test_pages_need_a_session_and_say_so_by_redirect(node):
    with client(node) as c:
        r = c.get("/console/")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
        assert c.get("/console/login").status_code == 200


def test_login_refuses_a_wrong_token_a_missing_nonce_and_the_metrics_role(node):
    with client(node) as c:
        page = c.get("/console/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
        r = c.post("/console/login", data={"token": "nope", "nonce": nonce})
        assert r.status_code == 401 and "令牌无效" in r.text and "nope" not in r.text
        r = c.post("/console/login", data={"token": node.tokens["admin"], "nonce": "forged"})
        assert r.status_code == 400 and "sq_session" not in r.headers.get("set-cookie", "")
    with logged_in(node, "metrics") as (c, _):
        assert c.get("/console/").status_code == 403  # a scraper's token opens no page


def test_open_redirect_after_login_is_refused(node):
    with client(node) as c:
        nonce = re.search(r'name="nonce" value="([^"]+)"', c.get("/console/login").text).group(1)
        r = c.post("/console/login", data={"token": node.tokens["auditor"], "nonce": nonce,
                                           "next": "//evil.example/"})
        assert r.headers["location"] == "/console/"


def test_logout_needs_csrf_and_ends_the_session(node):
    with logged_in(node, "admin") as (c, csrf):
        assert c.post("/console/logout", data={"csrf": "0" * 64}).status_code == 403
        assert c.get("/console/").status_code == 200
        assert c.post("/console/logout", data={"csrf": csrf}).status_code == 303
        c.cookies.clear()
        assert c.get("/console/").status_code == 303


def test_security_headers_on_pages_and_api(node):
    with logged_in(node, "auditor") as (c, _):
        for path in ("/console/", "/console/login", "/healthz"):
            h = c.get(path).headers
            assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in \
                h["content-security-policy"].split("script-src")[1].split(";")[0]
            assert h["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff"
        page = c.get("/console/").text
        assert "<script>" not in page and not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline script
        assert not re.search(r'(src|href)="(https?:)?//', page)  # every asset from the node itself
        assert c.get("/console/static/console.css").status_code == 200


def test_overview_in_a_browser_in_both_languages(node, browser):  # noqa: F811
    page = new_page(browser)
    login(page, node.base, node.tokens["auditor"])
    assert page.get_by_role("heading", name="概览").is_visible()
    assert page.get_by_text("flexible_workers").first.is_visible()
    shot(page, "console_frame", "overview-zh")
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", name="Overview").is_visible()
    shot(page, "console_frame", "overview-en")
    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.className") == "skip"
    page.context.close()

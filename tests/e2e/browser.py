"""A real browser for console journeys: Playwright driving Debian's Chromium, headless.

Playwright downloads no browser here: it is pointed at the system's `chromium` (installed
by .ci/run with fonts-noto-cjk, so Chinese renders as text, not boxes). The node's
certificate is from the test federation's CA, which the browser does not know: TLS
errors are ignored for 127.0.0.1 only. Screenshots land in test-artifacts/<test>/.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("SHUQIAO_REQUIRE_SERVICES"):
            pytest.fail("Debian's chromium is required for the console's browser tests "
                        "(apt-get install chromium fonts-noto-cjk)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


def new_page(browser, *, width: int = 1280, height: int = 800, lang: str = "zh-CN"):
    context = browser.new_context(viewport={"width": width, "height": height}, ignore_https_errors=True,
                                  locale=lang, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def shot(page, test: str, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/<test>/<name>.png."""
    folder = ARTIFACTS / test
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, base: str, token: str) -> None:
    page.goto(f"{base}/console/login")
    page.get_by_label("访问令牌").fill(token)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(f"{base}/console/**")

"""One real browser over every page: `streamlit run app.py`, then Chromium visits each sidebar link.

Every page must finish its script without an exception box and draw its main Plotly chart.
Pages are discovered from the sidebar navigation, so pages added later are covered too.
Needs Debian's Chromium (/usr/bin/chromium): skipped without it, except in CI (env CI set) where
its absence is a failure.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.browser.streamlit_server import CHROMIUM, CHROMIUM_ARGS, free_port, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
PAGE_TIMEOUT_MS = 60_000
CHART_TIMEOUT_MS = 10_000
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: install Debian's chromium (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    port = free_port()
    log = (tmp_path_factory.mktemp("streamlit") / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server)
        yield url
    finally:
        stop(server)
        log.close()


def _settle(page) -> None:
    """Wait until the script has run to the end (fresh load: initial → running → notRunning)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function("!document.querySelector(\"[data-testid='stStatusWidget']\")", timeout=PAGE_TIMEOUT_MS)


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to its height."""
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\")?.scrollHeight || 1000")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 8000)})
    page.wait_for_timeout(500)  # let Plotly re-lay out its charts to the new size
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)


# A Plotly chart, or the landing page's size chart (plain HTML: ui.model_view.size_bars).
CHART = ".js-plotly-plot, .lab-size-bars"
# Pages whose chart needs something done first in the session; on a fresh visit they say what instead.
EMPTY_ON_A_FRESH_VISIT = {"History": "No config evaluated yet"}


def test_every_page_runs_without_an_exception_and_draws_its_main_chart(app_url, tmp_path_factory):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("screenshots")
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(app_url, timeout=PAGE_TIMEOUT_MS)
            _settle(page)
            links = page.locator("[data-testid='stSidebarNav'] a")
            urls = list(dict.fromkeys(links.nth(i).get_attribute("href") for i in range(links.count())))
            assert len(urls) >= 3, f"expected the Model, Weights and Activations pages in the sidebar, got {urls}"
            for index, url in enumerate(urls):
                name = urllib.parse.urlparse(url).path.strip("/").replace("/", "_") or "Model"
                started = time.monotonic()
                page.goto(url if url.startswith("http") else app_url + url, timeout=PAGE_TIMEOUT_MS)
                try:
                    _settle(page)
                except PlaywrightTimeout:
                    problems.append(f"{name}: the script did not finish within {PAGE_TIMEOUT_MS / 1000:.0f} s")
                    _screenshot(page, shots / f"{index:02d}_{name}_unfinished.png")
                    continue
                try:
                    page.wait_for_selector(CHART, timeout=CHART_TIMEOUT_MS)
                except PlaywrightTimeout:
                    pass  # reported below, with the page's name
                print(f"{name}: finished in {time.monotonic() - started:.1f} s")
                _screenshot(page, shots / f"{index:02d}_{name}.png")
                exceptions = page.locator("[data-testid='stException']")
                if exceptions.count():
                    problems.append(f"{name}: exception shown: {exceptions.first.inner_text()[:300]}")
                empty = EMPTY_ON_A_FRESH_VISIT.get(name)
                if empty is not None and empty in page.inner_text("[data-testid='stMain']"):
                    continue
                if page.locator(CHART).count() < 1:
                    problems.append(f"{name}: no chart rendered")
        finally:
            browser.close()
    print(f"screenshots in {shots}")
    assert not problems, "\n".join(problems)

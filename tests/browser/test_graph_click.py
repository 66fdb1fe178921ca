"""The Graph page in a real browser: clicking a node selects that layer, and the side panel follows.

Streamlit's AppTest cannot click a Plotly chart, so this is the test of the click itself: Chromium opens
the page's address directly on a fresh server (so the sidebar must still list the app's own pages, the landing
page as "Model"), on the demo CNN (its first layer selected), the test finds the /conv2/Conv marker's pixel
position from Plotly's own axes and clicks it, and the panel's heading and layer picker must then name
/conv2/Conv. Marked `browser`, run like tests/browser/test_browser.py (needs /usr/bin/chromium).
"""
from __future__ import annotations

import os

import pytest

from tests.browser.streamlit_server import CHROMIUM, CHROMIUM_ARGS
from tests.browser.test_browser import PAGE_TIMEOUT_MS, VIEWPORT, _settle, app_url  # noqa: F401 - fixture

pytestmark = pytest.mark.browser

TARGET = "/conv2/Conv"

# The pixel centre of the marker whose customdata is the layer, from the chart's Plotly axes.
_MARKER_POSITION = """(name) => {
    for (const chart of document.querySelectorAll('.js-plotly-plot')) {
        const layout = chart._fullLayout;
        if (!layout || !chart.data) continue;
        for (const trace of chart.data) {
            const index = (trace.customdata || []).indexOf(name);
            if (index < 0) continue;
            const box = chart.getBoundingClientRect();
            return {x: box.left + layout.margin.l + layout.xaxis.l2p(trace.x[index]),
                    y: box.top + layout.margin.t + layout.yaxis.l2p(trace.y[index])};
        }
    }
    return null;
}"""


def _panel_heading(page) -> str:
    return page.locator("[data-testid='stHeading'] h3").first.inner_text()


def test_clicking_a_node_selects_its_layer_in_the_side_panel(app_url):  # noqa: F811 - the fixture
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{app_url}/Graph", timeout=PAGE_TIMEOUT_MS)
            _settle(page)
            page.wait_for_selector(".js-plotly-plot", timeout=PAGE_TIMEOUT_MS)
            assert _panel_heading(page) == "/conv1/Conv", "the page opens on the first layer"
            # The server's first request was this page's address: the navigation is still the app's own.
            labels = page.locator("[data-testid='stSidebarNav'] a").all_inner_texts()
            assert [label.split("\n")[-1] for label in labels][:2] == ["Model", "Weights"], labels
            position = page.evaluate(_MARKER_POSITION, TARGET)
            assert position is not None, f"no marker for {TARGET} in the graph"
            page.mouse.click(position["x"], position["y"])
            page.wait_for_function(
                "(name) => [...document.querySelectorAll(\"[data-testid='stHeading'] h3\")]"
                ".some(h => h.innerText.trim() === name)", arg=TARGET, timeout=PAGE_TIMEOUT_MS)
            _settle(page)
            assert _panel_heading(page) == TARGET
            assert not page.locator("[data-testid='stException']").count()
            if os.environ.get("GRAPH_SCREENSHOT"):
                page.screenshot(path=os.environ["GRAPH_SCREENSHOT"], full_page=True)
        finally:
            browser.close()

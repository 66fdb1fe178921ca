"""Issue 5: "the first page is usable in a browser within 5 s of `streamlit run app.py`", measured.

Each round starts `streamlit run app.py` (headless, 127.0.0.1, a free port) and, with Playwright
driving Debian's Chromium (launched before the clock starts), measures the time from the process
start to the landing page having finished its script (`data-test-script-state='notRunning'`, no
`stStatusWidget`) with its size chart drawn (`.lab-size-bars`, plain HTML since 2026-11-22; a Plotly
chart `.js-plotly-plot` before, which is still accepted) and no element left as a loading skeleton
(`stSkeleton`, checked since 2026-11-22). Every round uses a fresh browser
context (no cache) and a fresh server (cold imports, cold caches: the first user after a deploy).

Baseline, measured in the same run and alternated with it: the same for a trivial one-line Streamlit
app written to a temp dir, so the ratio is our own cost over Streamlit's start-up on this machine.

    /work/venv/bin/python bench/bench_first_page.py [--rounds 5] [--app app.py]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser.streamlit_server import CHROMIUM, CHROMIUM_ARGS, free_port, stop, wait_healthy  # noqa: E402

TARGET_S = 5.0
TIMEOUT_S = 120.0
TRIVIAL_APP = 'import streamlit as st; st.title("hello")\n'
SETTLED = "[data-testid='stApp'][data-test-script-state='notRunning']"
EXCEPTION = "[data-testid='stException']"
NO_STATUS = "!document.querySelector(\"[data-testid='stStatusWidget']\")"
CHART = ".lab-size-bars, .js-plotly-plot"  # the landing page's size chart (HTML), or a Plotly chart
NO_SKELETON = "!document.querySelector(\"[data-testid='stSkeleton']\")"


def measure(browser, script: Path, cwd: Path, want_chart: bool) -> dict[str, float]:
    """Seconds from `streamlit run` to: server healthy, script finished, chart drawn (if `want_chart`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    start = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, server, timeout_s=TIMEOUT_S, poll_s=0.02)
        healthy = time.perf_counter() - start
        page = context.new_page()
        page.goto(url, timeout=TIMEOUT_S * 1000)
        page.wait_for_selector(SETTLED, timeout=TIMEOUT_S * 1000)
        page.wait_for_function(NO_STATUS, timeout=TIMEOUT_S * 1000)
        finished = time.perf_counter() - start
        errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
        if want_chart and not errors.count():
            page.wait_for_selector(f"{CHART}, {EXCEPTION}", timeout=TIMEOUT_S * 1000)
        # Elements whose frontend code is still loading show as grey skeletons: not usable yet.
        page.wait_for_function(NO_SKELETON, timeout=TIMEOUT_S * 1000)
        usable = time.perf_counter() - start
        if errors.count():
            raise RuntimeError(f"{script.name} shows an error: {errors.first.inner_text()[:300]}")
        return {"healthy": healthy, "finished": finished, "usable": usable}
    finally:
        context.close()
        stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", default="app.py", help="the landing page script, relative to the repo")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[str, list[dict[str, float]]] = {"baseline": [], "app": []}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        trivial = Path(tmp) / "hello.py"
        trivial.write_text(TRIVIAL_APP)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for round_ in range(args.rounds):
                for name, script, cwd, chart in (("baseline", trivial, Path(tmp), False),
                                                 ("app", ROOT / args.app, ROOT, True)):
                    times = measure(browser, script, cwd, chart)
                    results[name].append(times)
                    print(f"round {round_ + 1} {name:8s} healthy {times['healthy']:.2f} s  "
                          f"finished {times['finished']:.2f} s  usable {times['usable']:.2f} s", flush=True)
        finally:
            browser.close()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"\nmedians over {args.rounds} rounds (seconds from `streamlit run` start):")
    print(f"{'':28s}{'healthy':>9s}{'finished':>10s}{'usable':>9s}")
    for name, label in (("baseline", "baseline (one-line app)"), ("app", f"{args.app} (landing page)")):
        print(f"{label:28s}{median(name, 'healthy'):9.2f}{median(name, 'finished'):10.2f}{median(name, 'usable'):9.2f}")
    app, base = median("app", "usable"), median("baseline", "usable")
    print(f"ratio app / baseline: {app / base:.2f}x; our own cost over Streamlit's start-up: {app - base:.2f} s")
    print(f"target {TARGET_S:.0f} s: {'met' if app <= TARGET_S else 'NOT met'} "
          f"(max {max(r['usable'] for r in results['app']):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

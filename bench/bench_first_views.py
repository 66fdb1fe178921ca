"""Issue 12: "any page's first view after an upload: <= 10 s, with everything else streaming in behind a
progress bar", measured in a browser, page by page.

For each model, `streamlit run app.py` is started (headless, 127.0.0.1, a free port), Playwright drives
Debian's Chromium: the model and its .npz are uploaded in the sidebar as a user would (a demo is picked
as it opens: no upload), then every page of the sidebar is clicked in its order. While a page runs, the
browser is polled every POLL_S seconds; per page the bench prints

- content: seconds from the click until the page shows its first content that is not a progress bar
  (a chart, table, data editor, metric, image or HTML block, not left over from the page before);
- done:    seconds until the page's script finished (`stApp[data-test-script-state=notRunning]`);
- blind:   the longest stretch while the script ran with no progress bar on the page and nothing new
  drawn (a spinner alone counts as blind): what "blocks without progress" means;
- progress: whether a progress bar showed at some point.

A page meets the target when `content` <= 10 s and `blind` <= BLIND_TARGET_S. With --cold each page is
instead the first page after the upload, on a fresh server (no cache warmed by the pages before it).

Baseline, measured in the same run: one plain FP32 onnxruntime forward (one intra-op thread, batches of
FORWARD_BATCH, fed as bench_real_models.PlainForward feeds it) over the model's evaluation split, as the app
splits it; the table gives `done` as a multiple of it.

    .venv/bin/python bench/bench_first_views.py [--models ocr_rec,yolo_det,cnn] [--cold] [--pages Trade-offs,Graph]
        [--out /tmp/first-views] [--max-page-s 300]

Real models come from the conformance cache (tests/real_models/fetch.py); demos: cnn, transformer, ...
Screenshots of every page land in --out (NAME.png finished; NAME.progress.png when its first progress bar showed). Print the load average with the figures (shared machine).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser.streamlit_server import CHROMIUM, CHROMIUM_ARGS, free_port, stop, wait_healthy  # noqa: E402

REAL_MODELS = ("ocr_det", "ocr_rec", "ocr_cls", "minilm", "yolo_det", "silero_vad")
TARGET_S = 10.0
BLIND_TARGET_S = 5.0  # "never blocks a page for more than a few seconds" without a progress bar
POLL_S = 0.25
FORWARD_BATCH = 16  # samples per run of the baseline's plain forward

# One browser-side probe of the page's state (the main block only; the sidebar is the same on every page).
PROBE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const side = document.querySelector('[data-testid="stSidebar"]');
  const sidebar = side ? side.innerText : '';
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return {state: app ? app.getAttribute('data-test-script-state') : null, title: '', fresh: 0, sidebar,
                     content: 0, progress: 0, spinner: 0};
  const fresh = [...main.querySelectorAll('[data-testid="stElementContainer"]')]
      .filter(e => e.getAttribute('data-stale') !== 'true');
  const h1 = fresh.map(e => e.querySelector('h1')).find(h => h);
  const kinds = ['stPlotlyChart', 'stDataFrame', 'stTable', 'stMetric', 'stImage', 'stHtml', 'stVegaLiteChart',
                 'stJson', 'stGraphVizChart', 'stCustomComponentV1', 'stIFrame'];
  const has = (e, k) => e.querySelector(`[data-testid="${k}"]`) || e.getAttribute('data-testid') === k;
  return {
    state: app ? app.getAttribute('data-test-script-state') : null,
    sidebar,
    title: h1 ? h1.innerText.trim() : '',
    fresh: fresh.length,
    content: fresh.filter(e => kinds.some(k => has(e, k))).length,
    progress: fresh.filter(e => has(e, 'stProgress')).length,
    spinner: main.querySelectorAll('[data-testid="stSpinner"]').length,
    errors: main.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]').length,
  };
}"""


def model_files(name: str, directory: Path) -> tuple[Path | None, Path | None]:
    """(model, data) files of a real model; (None, None) for a demo (picked in the sidebar, no upload)."""
    if name not in REAL_MODELS:
        return None, None
    from tests.real_models import fetch
    model, data = fetch.model_path(name), fetch.data_path(name)
    if not (model.exists() and data.exists()):
        raise SystemExit(f"real model {name!r} is not cached: run .venv/bin/python tests/real_models/fetch.py")
    return model, data


def plain_forward_s(name: str) -> float:
    """Seconds of one plain FP32 onnxruntime forward (1 thread) over the evaluation split the app uses."""
    from quant_core.model.data import load_npz, record_state, split_dataset
    from quant_core.model.demo import load_demo
    from quant_core.model.model_io import load_model, prepare_model
    from ui.cache import CALIBRATION_SAMPLES

    if name in REAL_MODELS:
        model_path, data_path = model_files(name, Path("."))
        prepared = prepare_model(load_model(model_path))
        data = record_state(prepared, load_npz(data_path, prepared.info))
    else:
        model_bytes, data = load_demo(name)
        prepared = prepare_model(load_model(model_bytes))
        data = record_state(prepared, data)
    _, evaluation = split_dataset(data, calibration_samples=CALIBRATION_SAMPLES, seed=0)
    from bench.bench_real_models import PlainForward  # fed like the engine (a stream's state laid out per batch)

    forward = PlainForward(prepared, threads=1)
    batches = forward.batches(evaluation, FORWARD_BATCH)
    forward(batches[:1])  # warm-up
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        forward(batches)
        best = min(best, time.perf_counter() - start)
    return best


class App:
    """One Streamlit server and one browser page on it."""

    def __init__(self, playwright, out: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(out / "streamlit.log", "a")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(self.port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        wait_healthy(self.url, self.server, timeout_s=120)
        self.browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.goto(self.url)
        self.wait_idle(120)

    def close(self) -> None:
        self.browser.close()
        stop(self.server)
        self.log.close()

    def probe(self) -> dict:
        return self.page.evaluate(PROBE)

    def wait_idle(self, timeout_s: float) -> float:
        """Wait until the script is not running (twice in a row); return the seconds waited."""
        start = time.perf_counter()
        calm = 0
        while time.perf_counter() - start < timeout_s:
            calm = calm + 1 if self.probe()["state"] == "notRunning" else 0
            if calm >= 2:
                break
            time.sleep(POLL_S)
        return time.perf_counter() - start

    def upload(self, model: Path, data: Path) -> tuple[float, dict]:
        """Upload the model (seconds until its page finished), then its data, followed like a page visit:
        the Model page's first view with the data (it runs the FP32 model on the evaluation split)."""
        start = time.perf_counter()
        self.page.locator("[data-testid='stSidebar'] input[type=file]").nth(0).set_input_files(str(model))
        # a large file takes a while to send: the model selectbox names the upload once the server opened it
        self.page.wait_for_function("""() => { const box = document.querySelector(
            '[data-testid="stSidebar"] [data-testid="stSelectbox"] input');
            return box && box.value.startsWith('Uploaded: '); }""", timeout=600_000)
        model_s = time.perf_counter() - start + self.wait_idle(600)
        data_input = self.page.locator("[data-testid='stSidebar'] input[type=file]").nth(1)
        return model_s, self.follow(lambda: data_input.set_input_files(str(data)), 600, marker=f"{data.name}: ")

    def pick_demo(self, name: str) -> None:
        from quant_core.model.demo import SHIPPED_MODELS
        label = SHIPPED_MODELS[name].title
        box = self.page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first
        box.click()
        self.page.get_by_role("option").filter(has_text=re.compile(re.escape(label), re.I)).first.click()
        self.page.wait_for_timeout(1000)
        self.wait_idle(300)

    def labels(self) -> list[str]:
        links = self.page.locator("[data-testid='stSidebarNavLink']")
        return [links.nth(i).inner_text().strip().split("\n")[-1] for i in range(links.count())]

    def visit(self, index: int, max_s: float, progress_shot: Path | None = None) -> dict:
        """Click the sidebar's page `index` and follow it until its script finished (or `max_s`)."""
        link = self.page.locator("[data-testid='stSidebarNavLink']").nth(index)
        return self.follow(link.click, max_s, progress_shot=progress_shot)

    def follow(self, action, max_s: float, *, marker: str | None = None, progress_shot: Path | None = None) -> dict:
        """Do `action` (a click, an upload) and poll the page until its script finished (or `max_s`).

        A page visit has arrived when the main block shows a title other than the page before's; with
        `marker` (an upload re-running the page shown), once the sidebar shows that text (the file's name)."""
        before = self.probe()["title"]
        start = time.perf_counter()
        action()
        content = done = None
        started = False
        blind = longest_blind = 0.0
        saw_progress = False
        last_fresh, last_t = -1, start
        while True:
            now = time.perf_counter()
            t = now - start
            state = self.probe()
            if marker is not None:
                arrived = bool(state["title"]) and marker in state["sidebar"]
            else:
                arrived = bool(state["title"]) and state["title"] != before
            started = started or state["state"] == "running" or arrived
            if started:
                if state["progress"]:
                    if not saw_progress and progress_shot is not None:  # what the user sees while it streams in
                        self.page.screenshot(path=str(progress_shot))
                    saw_progress = True
                if content is None and arrived and (state["content"] or state["errors"]):
                    content = t
                if state["state"] == "notRunning" and arrived:
                    done = t
                    if content is None:  # a page of text and controls: its first view is the finished page
                        content = t
                    break
                # blind: running, no progress bar, nothing new drawn since the last poll
                if state["state"] == "running" and not state["progress"] and state["fresh"] == last_fresh:
                    blind += now - last_t
                    longest_blind = max(longest_blind, blind)
                else:
                    blind = 0.0
                last_fresh = state["fresh"]
            last_t = now
            if t > max_s:
                break
            time.sleep(POLL_S)
        self.page.wait_for_timeout(500)
        final = self.probe()
        return {"content": content, "done": done, "blind": longest_blind, "progress": saw_progress,
                "errors": final["errors"]}

    def shoot(self, path: Path) -> None:
        height = self.page.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]');
            return m ? m.scrollHeight : document.body.scrollHeight; }""")
        self.page.set_viewport_size({"width": 1400, "height": max(1000, min(int(height or 1000) + 80, 8000))})
        self.page.wait_for_timeout(600)
        self.page.screenshot(path=str(path), full_page=True)
        self.page.set_viewport_size({"width": 1400, "height": 1000})


def open_model(playwright, name: str, out: Path) -> tuple[App, str, dict | None]:
    """A fresh server and page on `name`: (app, what the upload took, the Model page's first view with the
    data as a row, or None for a demo)."""
    app = App(playwright, out)
    model, data = model_files(name, out)
    if model is None:
        from ui.state import DEFAULT_MODEL
        if name != DEFAULT_MODEL:  # the sidebar opens on the default demo
            app.pick_demo(name)
        return app, f"{name}: demo, no upload", None
    model_s, found = app.upload(model, data)
    return app, f"{name}: model upload {model_s:.1f} s, then the data", found


def fmt(value: float | None) -> str:
    return "   —  " if value is None else f"{value:6.1f}"


def report(found: dict, name: str, label: str, forward: float) -> None:
    """Complete a page's row (model, page, verdict, load average) and print it."""
    found.update(model=name, page=label, forward=forward, load=os.getloadavg()[0])
    found["met"] = (found["content"] is not None and found["content"] <= TARGET_S
                    and found["blind"] <= BLIND_TARGET_S)
    ratio = "" if found["done"] is None else f"{found['done'] / forward:7.1f}x"
    print(f"{label:16s} content {fmt(found['content'])} s  done {fmt(found['done'])} s {ratio:>8s}  "
          f"blind {found['blind']:5.1f} s  progress {'yes' if found['progress'] else 'no ':3s}  "
          f"{'met' if found['met'] else 'NOT met'}{'  ERROR shown' if found['errors'] else ''}  "
          f"(load {found['load']:.1f})", flush=True)


def bench_model(playwright, name: str, args, out: Path) -> list[dict]:
    forward = plain_forward_s(name)
    load = os.getloadavg()[0]
    print(f"\n## {name}  (plain FP32 forward of the evaluation split: {forward:.2f} s; load average {load:.2f})",
          flush=True)
    rows = []
    app, note, upload = open_model(playwright, name, out)
    print(note, flush=True)
    try:
        labels = app.labels()
        if upload is not None:
            report(upload, name, f"{labels[0]} (upload)", forward)
            app.shoot(out / f"{name}_upload.png")
            rows.append(upload)
        # The upload lands on the first page (Model): it is visited last, when another page is current
        # (clicking the page that is shown does not run it again); with --cold it is not visited.
        wanted = [i for i, label in enumerate(labels) if (not args.pages or label in args.pages)]
        wanted = [i for i in wanted if i] + ([0] if 0 in wanted and not args.cold else [])
        for n, index in enumerate(wanted):
            if args.cold and n:
                app.close()
                app, _, _ = open_model(playwright, name, out)
            label = labels[index]
            shot = out / f"{name}_{index:02d}_{re.sub(r'[^A-Za-z0-9]+', '_', label)}.png"
            found = app.visit(index, args.max_page_s, progress_shot=shot.with_suffix(".progress.png"))
            app.shoot(shot)
            report(found, name, label, forward)
            rows.append(found)
    finally:
        app.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_rec,yolo_det,minilm,ocr_det,ocr_cls,silero_vad,cnn")
    parser.add_argument("--pages", default="", help="comma-separated page labels (default: every page)")
    parser.add_argument("--cold", action="store_true", help="each page the first after the upload (fresh server)")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "first-views"))
    parser.add_argument("--max-page-s", type=float, default=300.0)
    args = parser.parse_args(argv)
    args.pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as playwright:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows += bench_model(playwright, name, args, out)
    missed = [r for r in rows if not r["met"]]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} page views met content <= {TARGET_S:g} s and blind <= "
          f"{BLIND_TARGET_S:g} s; screenshots in {out}")
    for r in missed:
        print(f"  NOT met: {r['model']} / {r['page']}: content {fmt(r['content']).strip()} s, blind {r['blind']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

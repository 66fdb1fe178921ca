"""Server-side time of a rerun caused by one widget change on the Model, Weights and Activations pages.

Drives each page with Streamlit's AppTest (the script runs in this process, as on the server) on each
demo model: after the first run, change one widget at a time (a seeded random walk over the page's
widgets) and time `AppTest.run()`. Budget: median <= 150 ms and p95 <= 500 ms per page. The baseline,
measured in the same run, is a rerun with no widget change (the fixed cost of the sidebar and page).

    /work/venv/bin/python bench/bench_reruns_explore.py [--changes 40] [--models mlp,cnn,transformer]
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

MEDIAN_BUDGET_MS, P95_BUDGET_MS = 150.0, 500.0


def _options(at, kind: str, key: str) -> list:
    widget = getattr(at, kind)(key=key)
    return list(widget.options)


def weights_moves(at, rng: random.Random):
    """One random widget change on the Weights page."""
    move = rng.choice(["layer", "bits", "scheme", "granularity", "clip", "log"])
    if move == "layer":
        at.selectbox(key="weights_layer").set_value(rng.choice(_options(at, "selectbox", "weights_layer")))
    elif move == "bits":
        at.slider(key="weights_bits").set_value(rng.randint(2, 8))
    elif move == "scheme":
        at.radio(key="weights_scheme").set_value(rng.choice(["symmetric", "asymmetric"]))
    elif move == "granularity":
        at.radio(key="weights_granularity").set_value(rng.choice(["per-tensor", "per-channel"]))
    elif move == "clip":
        at.slider(key="weights_clip").set_value(rng.randint(1, 100))
    else:
        at.toggle(key="weights_log").set_value(not at.toggle(key="weights_log").value)
    return move


def activations_moves(at, rng: random.Random):
    """One random widget change on the Activations page."""
    move = rng.choice(["tensor", "method", "bits", "log"])
    if move == "tensor":
        at.selectbox(key="activations_tensor").set_value(rng.choice(_options(at, "selectbox", "activations_tensor")))
    elif move == "method":
        at.radio(key="activations_method").set_value(rng.choice(["minmax", "percentile", "mse", "entropy"]))
    elif move == "bits":
        at.slider(key="activations_bits").set_value(rng.randint(2, 8))
    else:
        at.toggle(key="activations_log").set_value(not at.toggle(key="activations_log").value)
    return move


def model_moves(at, rng: random.Random):
    """One random widget change on the Model page (the sidebar's preset)."""
    at.selectbox(key="config_preset").set_value(rng.choice(_options(at, "selectbox", "config_preset")[:-1]))
    return "preset"


PAGES = {"Model": ("app.py", model_moves), "Weights": ("pages/1_Weights.py", weights_moves),
         "Activations": ("pages/2_Activations.py", activations_moves)}


CPU_MS: list[float] = []  # CPU time of this process per timed run (not inflated by other processes' load)


def _timed_run(at) -> float:
    start, cpu_start = time.perf_counter(), time.process_time()
    at.run()
    elapsed = (time.perf_counter() - start) * 1000
    CPU_MS.append((time.process_time() - cpu_start) * 1000)
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].message}")
    return elapsed


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def measure(page: str, model: str, changes: int, seed: int) -> dict:
    path, move = PAGES[page]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    first_ms = _timed_run(at)
    at.selectbox(key="model_choice").set_value(model)
    switch_ms = _timed_run(at)
    if path != "app.py":
        at.switch_page(path)
        first_ms = _timed_run(at)
    baseline = [_timed_run(at) for _ in range(5)]
    rng = random.Random(seed)
    reruns, moves = [], []
    cpu_before = len(CPU_MS)
    for _ in range(changes):
        moves.append(move(at, rng))
        reruns.append(_timed_run(at))
    return {"page": page, "model": model, "first_ms": first_ms, "switch_ms": switch_ms,
            "baseline_ms": statistics.median(baseline), "reruns": reruns, "cpu": CPU_MS[cpu_before:],
            "moves": moves}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40, help="widget changes per page and model")
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print("first run = the page's first run after choosing the model; no-change = median of 5 reruns with no "
          "widget change (baseline); cpu = median CPU time of this process per rerun")
    print(f"{'page':<12} {'model':<12} {'first run':>10} {'no-change':>10} {'median':>8} {'p95':>8} {'max':>8} "
          f"{'median/no-change':>17} {'cpu':>6}")
    per_page: dict[str, list[float]] = {}
    per_page_cpu: dict[str, list[float]] = {}
    for page in PAGES:
        for model in args.models.split(","):
            result = measure(page, model, args.changes, args.seed)
            reruns = result["reruns"]
            per_page.setdefault(page, []).extend(reruns)
            per_page_cpu.setdefault(page, []).extend(result["cpu"])
            median = statistics.median(reruns)
            print(f"{page:<12} {model:<12} {result['first_ms']:>8.0f}ms {result['baseline_ms']:>8.0f}ms "
                  f"{median:>6.0f}ms {_p95(reruns):>6.0f}ms {max(reruns):>6.0f}ms "
                  f"{median / result['baseline_ms']:>16.2f}x {statistics.median(result['cpu']):>4.0f}ms")
    print()
    print(f"{'page':<12} {'reruns':>6} {'median':>8} {'p95':>8} {'cpu median':>11} {'cpu p95':>8}   "
          f"budget (wall): median <= {MEDIAN_BUDGET_MS:.0f} ms, p95 <= {P95_BUDGET_MS:.0f} ms")
    ok = True
    for page, reruns in per_page.items():
        median, p95 = statistics.median(reruns), _p95(reruns)
        verdict = "OK" if median <= MEDIAN_BUDGET_MS and p95 <= P95_BUDGET_MS else "OVER BUDGET"
        ok &= verdict == "OK"
        cpu = per_page_cpu[page]
        print(f"{page:<12} {len(reruns):>6} {median:>6.0f}ms {p95:>6.0f}ms {statistics.median(cpu):>9.0f}ms "
              f"{_p95(cpu):>6.0f}ms   {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

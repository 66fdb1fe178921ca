"""Server-side time of a rerun caused by one widget change on the Mixed precision, Sensitivity and
Trade-offs pages.

Drives each page with Streamlit's AppTest (the script runs in this process, as on the server) on each
demo model. The first run on a model is timed too ("first": on Sensitivity it includes the default
sweep, on Trade-offs the default measurement, both done by the page itself on a first visit). After
it (and, on Sensitivity, one suggestion; on Trade-offs, one Measure click with 10 repeats), change
one widget at a time (a seeded random walk) and time `AppTest.run()`.
On Mixed precision a change is one cell of the per-layer table; the edit state accumulates as in the
browser (the frontend sends every edit made since the table was drawn), and almost every change is a
config never evaluated before (a cache miss: evaluation + per-layer errors are really computed).
Budget: median <= 150 ms and p95 <= 500 ms per page. The baseline, measured in the same run, is a
rerun with no widget change (the fixed cost of the sidebar and the page).

    /work/venv/bin/python bench/bench_reruns_engine.py [--changes 40] [--models mlp,cnn,transformer]
"""
from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

MEDIAN_BUDGET_MS, P95_BUDGET_MS = 150.0, 500.0
TABLE_CHOICES = {
    "weight format": ["int8", "int6", "int5", "int4", "int3", "int2", "uint8", "fp16", "bf16", "fp8_e4m3fn",
                      "fp8_e5m2", "ternary", "binary", "kmeans2", "kmeans3", "kmeans4"],
    "granularity": ["per_tensor", "per_channel"],
    "weight range": ["minmax", "percentile", "mse"],
    "activation format": ["none", "uint8", "int8", "fp16", "fp8_e4m3fn"],
    "activation range": ["minmax", "percentile", "mse", "entropy"],
    "FP32 fallback": [True, False],
}


def mixed_moves(at, rng: random.Random, edits: dict):
    """One cell of the per-layer table; `edits` is the accumulated edit state of the editor."""
    rows = len(at.data_editor(key="mixed_table").value)
    row = rng.randrange(rows)
    column = rng.choice(list(TABLE_CHOICES))
    edits.setdefault(row, {})[column] = rng.choice(TABLE_CHOICES[column])
    at.session_state["mixed_table"] = {"edited_rows": {r: dict(c) for r, c in edits.items()},
                                       "added_rows": [], "deleted_rows": []}
    return f"cell:{column}"


def sensitivity_moves(at, rng: random.Random, _edits: dict):
    move = rng.choice(["budget", "metric", "layer", "format", "constraint"])
    if move == "budget":
        at.slider(key="sens_size_budget").set_value(rng.randint(5, 60))
    elif move == "metric":
        at.radio(key="sens_metric").set_value(rng.choice(["accuracy drop (pp)", "SQNR (dB)"]))
    elif move == "layer":
        at.selectbox(key="sens_pick_layer").set_value(rng.choice(list(at.selectbox(key="sens_pick_layer").options)))
    elif move == "format":
        at.selectbox(key="sens_pick_format").set_value(rng.choice(list(at.selectbox(key="sens_pick_format").options)))
    else:
        at.radio(key="sens_budget_kind").set_value("size budget")  # keeps the budget slider on the page
    return move


def tradeoffs_moves(at, rng: random.Random, _edits: dict):
    move = rng.choice(["batch", "threads", "repeats"])
    if move == "batch":
        at.select_slider(key="tradeoff_batch").set_value(rng.choice([1, 2, 4, 8, 16, 32]))
    elif move == "threads":
        slider = at.slider(key="tradeoff_threads")
        at.slider(key="tradeoff_threads").set_value(rng.randint(slider.min, slider.max))
    else:
        at.number_input(key="tradeoff_repeats").set_value(rng.choice([10, 20, 30, 50]))
    return move


def _prepare_sensitivity(at) -> dict:
    at.button(key="sens_suggest").click()  # the default sweep ran on the first visit
    return {"suggestion": _timed_run(at)}


def _prepare_tradeoffs(at) -> dict:
    at.number_input(key="tradeoff_repeats").set_value(10)
    at.button(key="tradeoff_measure").click()
    return {"measure (7 variants, 10 repeats)": _timed_run(at)}


PAGES = {
    "Mixed precision": ("pages/3_Mixed_precision.py", mixed_moves, None),
    "Sensitivity": ("pages/5_Sensitivity.py", sensitivity_moves, _prepare_sensitivity),
    "Trade-offs": ("pages/6_Trade-offs.py", tradeoffs_moves, _prepare_tradeoffs),
}


def _timed_run(at) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = (time.perf_counter() - start) * 1000
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].message}")
    return elapsed


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_page(name: str, model: str, changes: int, seed: int, layer_chart: bool = True) -> dict:
    path, move, prepare = PAGES[name]
    at = AppTest.from_file(str(ROOT / path), default_timeout=600)
    first = _timed_run(at)
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model)
        first = _timed_run(at)  # the first run on this model
    if name == "Mixed precision" and not layer_chart:
        at.toggle(key="mixed_layer_chart").set_value(False)
        _timed_run(at)
    heavy = prepare(at) if prepare else {}
    baseline = [_timed_run(at) for _ in range(5)]
    rng = random.Random(seed)
    edits: dict = {}
    times, errors = [], 0
    for _ in range(changes):
        move(at, rng, edits)
        times.append(_timed_run(at))
        errors += len(at.error)
    if name == "Mixed precision" and not layer_chart:
        name += " (no layer chart)"
    return {"page": name, "model": model, "first": first, "heavy": heavy,
            "baseline": statistics.median(baseline), "median": statistics.median(times), "p95": _p95(times),
            "max": max(times), "changes": changes, "errors_shown": errors}


def _report(r: dict) -> None:
    ok = r["median"] <= MEDIAN_BUDGET_MS and r["p95"] <= P95_BUDGET_MS
    heavy = ", ".join(f"{k} {v / 1000:.1f} s" for k, v in r["heavy"].items())
    print(f"{r['page']:32} {r['model']:12} {r['first']:7.0f}ms {r['baseline']:8.1f}ms {r['median']:6.1f}ms "
          f"{r['p95']:6.1f}ms {r['max']:6.0f}ms {r['median'] / r['baseline']:16.2f}x {'OK' if ok else 'OVER':>7}  "
          + heavy + (f"  ({r['errors_shown']} reruns showed an error message: invalid cell combinations)"
                     if r["errors_shown"] else ""), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--pages", default=",".join(PAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-layer-chart", action="store_true",
                        help="also time Mixed precision with its per-layer error chart turned off")
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    results = []
    print(f"{'page':32} {'model':12} {'first':>8} {'no-change':>10} {'median':>8} {'p95':>8} {'max':>8} "
          f"{'median/no-change':>17} {'budget':>7}  heavy actions")
    for page in args.pages.split(","):
        for model in args.models.split(","):
            runs = [bench_page(page, model, args.changes, args.seed)]
            if page == "Mixed precision" and args.no_layer_chart:
                runs.append(bench_page(page, model, args.changes, args.seed + 1000, layer_chart=False))  # fresh configs
            for r in runs:
                results.append(r)
                _report(r)
    over = [r for r in results if r["median"] > MEDIAN_BUDGET_MS or r["p95"] > P95_BUDGET_MS]
    print(f"\n{len(results) - len(over)}/{len(results)} page x model within median <= {MEDIAN_BUDGET_MS:.0f} ms "
          f"and p95 <= {P95_BUDGET_MS:.0f} ms ({args.changes} widget changes each, seed {args.seed})")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())

"""Server-side time of a rerun caused by one widget change in each lesson of the Learn page.

Drives pages/12_Learn.py with Streamlit's AppTest (the script runs in this process, as on the server):
open a lesson (its first run is not counted), then change one widget at a time — a seeded random walk
over that lesson's widgets, values included, so cache misses count too — and time `AppTest.run()`.
Then the same changes are replayed ("warm": every result is in the caches), which separates the cost of
computing something new from the cost of a rerun.
Budget: median <= 150 ms and p95 <= 500 ms per lesson. The baseline, measured in the same run, is a
rerun with no widget change (the fixed cost of the sidebar, the page and the open lesson).
Not timed: lesson 6's "Fine-tune (QAT)" button, a deliberate training run behind a progress bar.

    /work/venv/bin/python bench/bench_learn_reruns.py [--changes 30] [--seed 0]
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

from ui.lessons import lesson_titles  # noqa: E402

MEDIAN_BUDGET_MS, P95_BUDGET_MS = 150.0, 500.0
DEMOS = ["mlp", "cnn", "transformer"]


def _find(at, key: str):
    for kind in ("slider", "select_slider", "radio", "selectbox", "multiselect"):
        for element in at.get(kind):
            if element.key == key:
                return element
    raise KeyError(key)


def _set(at, key: str, value) -> tuple[str, object]:
    _find(at, key).set_value(value)
    return key, value


def lesson1(at, rng):
    move = rng.choice(["l1_bits", "l1_scheme", "l1_range", "l1_element"])
    values = {"l1_bits": lambda: rng.randint(2, 8),
              "l1_scheme": lambda: rng.choice(["asymmetric (uint)", "symmetric (int)"]),
              "l1_range": lambda: (round(rng.uniform(-1, 0), 2), round(rng.uniform(0.5, 2), 2)),
              "l1_element": lambda: rng.randint(0, 9)}
    return _set(at, move, values[move]())


def lesson2(at, rng):
    move = rng.choice(["l2_distribution", "l2_bits", "l2_threshold", "l2_threshold"])
    if move == "l2_distribution":
        return _set(at, move, rng.choice(list(_find(at, move).options)))
    if move == "l2_bits":
        return _set(at, move, rng.randint(2, 8))
    slider = _find(at, move)
    return _set(at, move, round(rng.uniform(slider.min, slider.max), 1))


def lesson3(at, rng):
    move = rng.choice(["l3_view", "l3_bits"])
    value = (rng.choice(list(_find(at, move).options)) if move == "l3_view" else rng.randint(2, 8))
    return _set(at, move, value)


def lesson4(at, rng):
    move = rng.choice(["l4_model", "l4_layer", "l4_formats"])
    options = list(_find(at, move).options)
    if move == "l4_formats":
        names = ["int8", "int4", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "binary", "ternary"]
        return _set(at, move, rng.sample(names, rng.randint(1, len(names))))
    return _set(at, move, rng.choice(DEMOS if move == "l4_model" else options))


def lesson5(at, rng):
    move = rng.choice(["l5_model", "l5_bits", "l5_scenario", "l5_detail"])
    if move == "l5_model":
        return _set(at, move, rng.choice(DEMOS))
    if move == "l5_bits":
        return _set(at, move, rng.randint(4, 8))
    if move == "l5_scenario":
        return _set(at, move, rng.choice(list(_find(at, move).options)))
    try:
        return _set(at, "l5_brightness", round(rng.uniform(0.2, 1.0), 1))
    except KeyError:
        return _set(at, "l5_classes", sorted(rng.sample(range(10), rng.randint(1, 4))))


def lesson6(at, rng):
    move = rng.choice(["l6_bits", "l6_epochs"])
    if move == "l6_bits":
        return _set(at, move, sorted(rng.sample([4, 3, 2], rng.randint(1, 3)), reverse=True))
    return _set(at, move, rng.choice(range(5, 61, 5)))


def lesson7(at, rng):
    move = rng.choice(["l7_model", "l7_bits", "l7_keep", "l7_keep"])
    if move == "l7_model":
        return _set(at, move, rng.choice(DEMOS))
    if move == "l7_bits":
        return _set(at, move, rng.randint(2, 6))
    return _set(at, move, rng.randint(0, _find(at, move).max))


MOVES = [lesson1, lesson2, lesson3, lesson4, lesson5, lesson6, lesson7]


def _timed_run(at) -> tuple[float, float]:
    """(wall ms, CPU ms of this process) of one rerun. On a shared, loaded machine the wall time includes
    waiting for a core; the CPU time is the work itself (the script thread plus onnxruntime's)."""
    start, cpu = time.perf_counter(), time.process_time()
    at.run()
    elapsed, cpu_ms = (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].message}")
    return elapsed, cpu_ms


def _snapshot(at, prefix: str) -> dict[str, object]:
    """The current value of every widget whose key starts with `prefix`."""
    found = {}
    for kind in ("slider", "select_slider", "radio", "selectbox", "multiselect"):
        for element in at.get(kind):
            if element.key and element.key.startswith(prefix):
                found[element.key] = element.value
    return found


def _restore(at, values: dict[str, object]) -> None:
    """Put the widgets back to `values` (twice: a widget may only appear once another one is set)."""
    for _ in range(2):
        for key, value in values.items():
            try:
                _find(at, key).set_value(value)
            except KeyError:
                continue
        at.run()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30, help="widget changes per lesson")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    rng = random.Random(args.seed)

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/12_Learn.py").run()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'lesson':56s} {'baseline':>9s} {'median':>8s} {'p95':>8s} {'max':>8s} {'cpu med':>8s} {'cpu p95':>8s}"
          f" {'warm med':>8s} {'warm p95':>8s}  slowest move")
    failed = False
    for index, (title, move) in enumerate(zip(lesson_titles(), MOVES)):
        at.radio(key="lesson").set_value(title)
        _timed_run(at)  # the lesson's first run: not counted
        baseline = statistics.median(_timed_run(at)[0] for _ in range(5))
        start = _snapshot(at, prefix=f"l{index + 1}_")
        walk, times, cpu = [], [], []
        for _ in range(args.changes):
            walk.append(move(at, rng))
            wall, cpu_ms = _timed_run(at)
            times.append(wall)
            cpu.append(cpu_ms)
        _restore(at, start)
        warm = []
        for key, value in walk:
            _find(at, key).set_value(value)
            warm.append(_timed_run(at)[0])
        median, p95 = statistics.median(times), _p95(times)
        slowest = walk[times.index(max(times))][0]
        ok = median <= MEDIAN_BUDGET_MS and p95 <= P95_BUDGET_MS
        failed |= not ok
        print(f"{title:56s} {baseline:7.1f}ms {median:6.1f}ms {p95:6.1f}ms {max(times):6.1f}ms "
              f"{statistics.median(cpu):6.1f}ms {_p95(cpu):6.1f}ms {statistics.median(warm):6.1f}ms "
              f"{_p95(warm):6.1f}ms  {slowest}{'' if ok else '  OVER BUDGET'}")
    print(f"budget: median <= {MEDIAN_BUDGET_MS:.0f} ms, p95 <= {P95_BUDGET_MS:.0f} ms per lesson (wall time); "
          f"load average after: {os.getloadavg()[0]:.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

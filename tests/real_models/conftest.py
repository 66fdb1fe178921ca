"""Shared set-up of the real-model conformance tests (`python -m pytest -m real_models`).

The models and data come from the cache that `python tests/real_models/fetch.py` fills; a missing
cache is a failure (run fetch.py first), not a skip, so CI cannot pass without running them. The
default `python -m pytest -q` deselects this folder's tests (pytest.ini `-m "not real_models"`).
Each model's seconds per stage are printed at the end of the run.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.real_models import fetch

_TIMINGS: dict[str, dict[str, float]] = defaultdict(dict)


def cached(name: str) -> tuple[Path, Path]:
    """The cached model and data files of `name`; fails with the command to run when they are missing."""
    model, data = fetch.model_path(name), fetch.data_path(name)
    missing = [str(path) for path in (model, data) if not path.exists()]
    if missing:
        pytest.fail(f"real model {name!r} is not cached ({', '.join(missing)}); run: python tests/real_models/fetch.py",
                    pytrace=False)
    return model, data


@contextmanager
def timed(model: str, stage: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        _TIMINGS[model][stage] = _TIMINGS[model].get(stage, 0.0) + time.perf_counter() - started


def pytest_terminal_summary(terminalreporter):
    if not _TIMINGS:
        return
    terminalreporter.section("real-model timings (s)")
    stages = sorted({stage for per_model in _TIMINGS.values() for stage in per_model})
    terminalreporter.write_line("model       " + " ".join(f"{stage:>12s}" for stage in stages) + "        total")
    for model, per_model in _TIMINGS.items():
        cells = " ".join(f"{per_model[s]:12.1f}" if s in per_model else f"{'-':>12s}" for s in stages)
        terminalreporter.write_line(f"{model:11s} {cells} {sum(per_model.values()):12.1f}")


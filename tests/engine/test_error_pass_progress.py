"""The per-layer error pass reports its progress batch by batch, and can be stopped between batches.

A page's progress bar moves while the errors of a large model are measured (seconds), and its Stop
ends the pass at the next batch: the exception raised by the progress callback leaves the Evaluator
as it was, so the next request measures again and gets the same numbers.
"""
import numpy as np
import pytest

import quant_core.engine.evaluate as evaluate
from quant_core.config import PRESETS
from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator


class Stopped(Exception):
    pass


@pytest.fixture
def small_batches(demo_cnn, monkeypatch):
    """An Evaluator of the demo CNN whose error pass runs in batches of 2 samples (a tiny budget), 40 samples."""
    monkeypatch.setattr(evaluate, "LAYER_ERRORS_BATCH_BYTES", 1)
    prepared, calibration_data, evaluation_data = demo_cnn
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data.subset(np.arange(40)))


def test_progress_rises_once_per_batch_to_one(small_batches):
    fractions = []
    small_batches.layer_errors(PRESETS["W8A8"], progress=fractions.append)
    assert len(fractions) == 20
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_evaluate_with_errors_reports_the_same_pass(small_batches):
    fractions = []
    result, errors = small_batches.evaluate_with_errors(PRESETS["W4A8"], progress=fractions.append)
    assert len(fractions) == 20 and fractions[-1] == 1.0
    assert result == small_batches.evaluate(PRESETS["W4A8"]) and errors == small_batches.layer_errors(PRESETS["W4A8"])


def test_a_progress_callback_that_raises_stops_the_pass_and_caches_nothing(small_batches):
    calls = []

    def stop_at_third_batch(fraction):
        calls.append(fraction)
        if len(calls) == 3:
            raise Stopped

    with pytest.raises(Stopped):
        small_batches.layer_errors(PRESETS["W8A8"], progress=stop_at_third_batch)
    assert len(calls) == 3
    assert small_batches.cache_entries()["layer_sqnr"] == 0
    again = []
    errors = small_batches.layer_errors(PRESETS["W8A8"], progress=again.append)
    assert len(again) == 20
    fresh = Evaluator(small_batches.prepared, small_batches.calibration, small_batches._data)
    assert errors == fresh.layer_errors(PRESETS["W8A8"])

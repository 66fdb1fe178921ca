"""Resource limits: calibration memory does not grow with the data, long jobs stop when asked and keep their work."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from quant_core.engine.calibrate import Cancelled, calibrate
from quant_core.model.data import Dataset
from quant_core.model.demo import load_demo
from quant_core.errors import QuantLabError
from quant_core.engine.evaluate import Evaluator
from quant_core.model.model_io import load_model, prepare_model
from quant_core.search.sensitivity import run_sweep

FORMATS = ["int8", "int4", "int2"]


@pytest.fixture(scope="module")
def cnn():
    model_bytes, data = load_demo("cnn")
    return prepare_model(load_model(model_bytes)), data


def _calibration_peak_bytes(prepared, images: np.ndarray) -> int:
    """Peak numpy/Python memory allocated while calibrating on `images` (the data itself excluded)."""
    data = Dataset(inputs={"image": images})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        calibrate(prepared, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def test_calibration_memory_does_not_grow_with_the_number_of_samples(cnn):
    prepared, data = cnn
    small = data.inputs["image"][:256]
    large = np.concatenate([data.inputs["image"]] * 6)  # 4,782 samples: 18x more data
    small_peak, large_peak = _calibration_peak_bytes(prepared, small), _calibration_peak_bytes(prepared, large)
    assert large.nbytes > 18 * small.nbytes
    # Fixed-size histograms plus one batch of activations, whatever the number of samples.
    assert large_peak < 1.25 * small_peak + 2**19, (small_peak, large_peak)


def test_calibration_stops_when_cancelled_with_a_one_line_user_error(cnn):
    prepared, data = cnn
    batches = []

    def cancel():
        return len(batches) >= 2

    with pytest.raises(Cancelled) as caught:
        calibrate(prepared, data, batch_size=64, progress=batches.append, cancel=cancel)
    assert isinstance(caught.value, QuantLabError) and "\n" not in str(caught.value)
    assert len(batches) == 2


def test_a_sweep_stopped_part_way_returns_exactly_the_rows_finished_before(cnn):
    """A sweep's timeout or Stop button is its cancel callable, polled before each config: finished rows are kept."""
    prepared, data = cnn
    calibration = calibrate(prepared, data.subset(np.arange(128)))
    full = run_sweep(Evaluator(prepared, calibration, data.subset(np.arange(128, 400))), FORMATS)
    polls = []

    def out_of_budget() -> bool:  # e.g. `lambda: time.monotonic() > deadline`; here after three configs
        polls.append(None)
        return len(polls) > 3

    partial = run_sweep(Evaluator(prepared, calibration, data.subset(np.arange(128, 400))), FORMATS,
                        cancel=out_of_budget)
    assert len(partial) == 3 < len(full)
    assert [row.to_dict() for row in partial] == [row.to_dict() for row in full[:3]]

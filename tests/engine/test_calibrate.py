"""calibrate: one streaming pass, one fixed-size histogram per activation tensor."""
import threading

import numpy as np
import pytest

from quant_core.engine.calibrate import Cancelled, calibrate
from quant_core.model.data import Dataset
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.engine.simulate import SimulationSession


def _activations(prepared, x):
    """Every layer's activation input and output, computed in one batch by the simulation session."""
    session = SimulationSession(prepared)
    run = session.run({"x": x}, with_layer_outputs=True)
    return {"r0": np.maximum(run.layer_outputs["dense0"], 0), "h0": run.layer_outputs["dense0"],
            "y": run.layer_outputs["dense2"]}


def test_calibrated_tensors_are_layer_inputs_and_outputs(chain):
    prepared, data = chain
    calibration = calibrate(prepared, data, bins=64)
    assert calibration.tensors == ("x", "h0", "r0", "h1", "r1", "y")
    assert calibration.sample_count == 300


def test_one_batch_histogram_equals_the_histogram_of_all_activations(chain):
    prepared, data = chain
    calibration = calibrate(prepared, data, bins=128, batch_size=1000)
    expected = StreamingHistogram.from_array(data.inputs["x"], 128)
    assert np.array_equal(calibration.histogram("x").counts, expected.counts)
    assert np.array_equal(calibration.histogram("x").edges, expected.edges)


def test_streamed_histograms_have_the_exact_count_min_and_max_of_the_concatenated_activations(chain):
    prepared, data = chain
    streamed = calibrate(prepared, data, bins=128, batch_size=7)
    activations = _activations(prepared, data.inputs["x"])
    for name, values in activations.items():
        histogram = streamed.histogram(name)
        assert histogram.count == values.size
        assert histogram.counts.sum() == values.size
        assert histogram.min == values.min() and histogram.max == values.max()


def test_streamed_histogram_equals_the_same_batches_fed_by_hand(chain):
    prepared, data = chain
    streamed = calibrate(prepared, data, bins=128, batch_size=50)
    by_hand = StreamingHistogram(128)
    for start in range(0, 300, 50):
        by_hand.update(data.inputs["x"][start:start + 50])
    assert np.array_equal(streamed.histogram("x").counts, by_hand.counts)


def test_memory_is_fixed_by_bins_not_by_samples(chain):
    prepared, data = chain
    x = data.inputs["x"]
    small = calibrate(prepared, Dataset({"x": x[:40]}), bins=256, batch_size=10)
    large = calibrate(prepared, Dataset({"x": np.concatenate([x] * 8)}), bins=256, batch_size=10)
    assert large.sample_count == 60 * small.sample_count
    # Two histograms per tensor, each at most max_bins int64 counts and max_bins + 1 float32 edges.
    bound = len(large.tensors) * 2 * (2 * 256 * 8 + (2 * 256 + 1) * 4)
    assert small.nbytes <= bound and large.nbytes <= bound
    assert all(h.counts.size <= h.max_bins for h in large.histograms.values())


def test_progress_reaches_one_and_cancel_stops(chain):
    prepared, data = chain
    seen = []
    calibrate(prepared, data, bins=64, batch_size=100, progress=seen.append)
    assert seen == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        calibrate(prepared, data, bins=64, cancel=stop.is_set)


def test_range_for_uses_the_histogram_and_is_cached(chain):
    from quant_core.config import TensorQuant
    prepared, data = chain
    calibration = calibrate(prepared, data, bins=64)
    tq = TensorQuant("uint8", symmetric=False)
    first = calibration.range_for("r0", tq)
    assert first is calibration.range_for("r0", tq)
    assert (first.lo, first.hi) == (calibration.histogram("r0").min, calibration.histogram("r0").max)


def test_data_the_model_cannot_run_gives_a_one_line_data_error(chain):
    from quant_core.errors import DataError
    prepared, _ = chain
    with pytest.raises(DataError, match="cannot run the model on this data") as error:
        calibrate(prepared, Dataset({"x": np.zeros((10, 9), np.float32)}))
    assert "\n" not in str(error.value)


def test_large_activations_are_calibrated_in_smaller_batches_with_the_same_min_max(demo_cnn, monkeypatch):
    """A batch holds about CALIBRATION_BATCH_BYTES of activations: memory stays flat on big models."""
    import quant_core.engine.calibrate as module
    prepared, calibration_data, _ = demo_cnn
    data = calibration_data.subset(np.arange(40))
    whole = calibrate(prepared, data)
    runs = []
    real_run = module.ort.InferenceSession.run
    monkeypatch.setattr(module.ort.InferenceSession, "run",
                        lambda self, *args, **kw: runs.append(1) or real_run(self, *args, **kw))
    per_sample = sum(whole.histogram(name).count for name in whole.tensors) * 4 // data.num_samples
    monkeypatch.setattr(module, "CALIBRATION_BATCH_BYTES", 8 * per_sample)  # 8 samples a batch
    batched = calibrate(prepared, data)
    assert len(runs) == 1 + 5  # one sample to weigh a sample, then 40 samples in batches of 8
    for name in whole.tensors:
        a, b = whole.histogram(name), batched.histogram(name)
        assert (a.count, float(a.min), float(a.max)) == (b.count, float(b.min), float(b.max))

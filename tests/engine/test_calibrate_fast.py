"""calibrate's fast path (compiled counting, overlapped with onnxruntime) gives the reference's histograms.

The reference: numpy counting, each batch counted before the next runs. The shipped path counts with
`histogram_kernel` in a second thread while onnxruntime runs the next batch; both must give the same
histograms, bit for bit, on the demos and (pytest -m real_models) on the real-model conformance set.
"""
import numpy as np
import pytest

from quant_core.engine import calibrate as calibrate_module
from quant_core.engine.calibrate import calibrate
from quant_core.errors import QuantLabError
from quant_core.model.data import Dataset
from quant_core.numerics import histogram


def _calibrated(monkeypatch, prepared, data, *, fast: bool, **options):
    monkeypatch.setattr(histogram, "USE_KERNEL", fast)
    monkeypatch.setattr(calibrate_module, "OVERLAP", fast)
    return calibrate(prepared, data, **options)


def _assert_same(fast, reference) -> None:
    assert fast.tensors == reference.tensors and fast.sample_count == reference.sample_count
    assert fast.sample_bytes == reference.sample_bytes
    for name in reference.tensors:
        mine, theirs = fast.histogram(name), reference.histogram(name)
        for field in ("counts", "edges", "abs_counts", "abs_edges"):
            assert np.array_equal(getattr(mine, field), getattr(theirs, field)), (name, field)
        assert (mine.count, mine.min, mine.max, mine.threshold) == (theirs.count, theirs.min, theirs.max,
                                                                    theirs.threshold), name


@pytest.mark.parametrize("batch_size", [16, 64, 1000])
def test_the_demo_cnn_calibrates_to_the_same_histograms_fast_or_not(demo_cnn, monkeypatch, batch_size):
    prepared, calibration_data, _ = demo_cnn
    fast = _calibrated(monkeypatch, prepared, calibration_data, fast=True, batch_size=batch_size)
    reference = _calibrated(monkeypatch, prepared, calibration_data, fast=False, batch_size=batch_size)
    _assert_same(fast, reference)


def test_progress_counts_a_batch_once_it_is_counted(chain, monkeypatch):
    prepared, data = chain
    seen = []
    _calibrated(monkeypatch, prepared, data, fast=True, bins=64, batch_size=100, progress=seen.append)
    assert seen == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]


def test_a_nan_found_in_the_counting_thread_is_raised_to_the_caller(chain, monkeypatch):
    prepared, data = chain
    x = data.inputs["x"].copy()
    x[250, 0] = np.nan  # in the third batch of 100: found while counting, after two batches overlapped
    with pytest.raises(QuantLabError, match="tensor 'x' contains 1 NaN or Inf"):
        _calibrated(monkeypatch, prepared, Dataset({"x": x}), fast=True, bins=64, batch_size=100)


@pytest.mark.real_models
@pytest.mark.parametrize("name", ["ocr_det", "ocr_rec", "ocr_cls", "silero_vad", "minilm", "yolo_det"])
def test_every_real_model_calibrates_to_the_same_histograms_fast_or_not(name, monkeypatch):
    from quant_core.model.data import load_npz, record_state, split_dataset
    from quant_core.model.model_io import load_model, prepare_model
    from tests.real_models.conftest import cached
    model, data = cached(name)
    prepared = prepare_model(load_model(model))
    calibration_data, _ = split_dataset(record_state(prepared, load_npz(data, prepared.info)))
    _assert_same(_calibrated(monkeypatch, prepared, calibration_data, fast=True),
                 _calibrated(monkeypatch, prepared, calibration_data, fast=False))

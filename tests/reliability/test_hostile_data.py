"""Hostile and broken .npz data for the demo CNN (input 'image' (batch, 1, 8, 8) float32, 10 classes).

Each file is refused with one line on the command line (`evaluate --data`) and with one error in the
sidebar that names the file; the app keeps using the previous data. Pickled objects are never unpickled.
"""
from __future__ import annotations

import numpy as np
import pytest

from quant_core.model.data import load_npz
from quant_core.model.demo import DEMO_MODELS
from quant_core.model.model_io import load_model, prepare_model
from tests.reliability import hostile
from tests.reliability.conftest import (
    assert_no_traceback, assert_one_line_error, error_texts, new_session, page_text, run_cli, upload, write)

CNN = DEMO_MODELS["cnn"].path
DEMO_SPLIT = "256 calibration / 541 evaluation samples"

# (case id, bytes builder, fragments the message must hold)
REFUSED = [
    ("wrong-names", lambda: hostile.npz(pixels=np.zeros((20, 1, 8, 8), np.float32)),
     ["one array per model input ('image')", "it holds 'pixels'"]),
    ("extra-array", lambda: hostile.npz(image=np.zeros((20, 1, 8, 8), np.float32), extra=np.zeros(3)),
     ["'extra'"]),
    ("wrong-shape", lambda: hostile.digits_like(shape=(64,)),
     ["input 'image' expects shape (batch, 1, 8, 8) float32, got (40, 64) float32"]),
    ("wrong-dims", lambda: hostile.digits_like(shape=(1, 4, 4)), ["expects shape (batch, 1, 8, 8)", "(40, 1, 4, 4)"]),
    ("wrong-dtype", lambda: hostile.digits_like(dtype=np.float64), ["float64", "astype(np.float32)"]),
    ("zero-samples", lambda: hostile.digits_like(samples=0), ["zero samples"]),
    ("nan-inputs", lambda: hostile.digits_like(nan=True), ["input 'image' holds 1 NaN or infinite value(s)"]),
    ("labels-out-of-range", lambda: hostile.digits_like(labels=np.full(40, 10, np.int64)),
     ["holds class 10", "has 10 classes"]),
    ("negative-labels", lambda: hostile.digits_like(labels=np.full(40, -1, np.int64)), ["negative class indices"]),
    ("labels-wrong-length", lambda: hostile.digits_like(labels=np.zeros(39, np.int64)),
     ["'labels' has 39 entries for 40 samples"]),
    ("float-labels", lambda: hostile.digits_like(labels=np.zeros(40, np.float32)), ["1-D integer array"]),
    ("npy-not-npz", lambda: _npy(np.zeros((20, 1, 8, 8), np.float32)), ["single .npy array"]),
    ("not-a-zip", lambda: b"image,label\n0.1,3\n", ["not a readable .npz file", "np.savez"]),
    ("one-sample", lambda: hostile.digits_like(samples=1), ["2 samples"]),
]
IDS = [case[0] for case in REFUSED]


def _npy(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize(("case", "build", "fragments"), REFUSED, ids=IDS)
def test_evaluate_refuses_the_data_with_one_line(tmp_path, case, build, fragments):
    data = write(tmp_path / f"{case}.npz", build())
    assert_one_line_error(run_cli("evaluate", CNN, "--data", data), *fragments)


@pytest.fixture(scope="module")
def lab():
    """One session on the demo CNN with its demo data and a custom config, kept across the cases."""
    at = new_session()
    at.selectbox(key="config_preset").set_value("W4 weight-only per-group").run()
    assert DEMO_SPLIT in page_text(at)
    return at


@pytest.mark.parametrize(("case", "build", "fragments"), REFUSED, ids=IDS)
def test_the_app_refuses_the_data_and_keeps_the_previous_data(lab, case, build, fragments):
    upload(lab, "data_upload", f"{case}.npz", build())
    assert_no_traceback(lab)
    (message,) = error_texts(lab)
    assert f"{case}.npz" in message and "previous data is still used" in message
    for fragment in fragments:
        assert fragment in message
    assert DEMO_SPLIT in page_text(lab)
    assert lab.selectbox(key="config_preset").value == "W4 weight-only per-group"


def test_pickled_objects_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    data = write(tmp_path / "pickled.npz", hostile.pickled_data(marker))
    info = prepare_model(load_model(hostile.good_model())).info
    with pytest.raises(ValueError, match="holds Python objects"):
        load_npz(data, info)
    model = write(tmp_path / "m.onnx", hostile.good_model())
    assert_one_line_error(run_cli("evaluate", model, "--data", data), "array 'x' holds Python objects (pickled)",
                          "never loaded")
    at = new_session()
    upload(at, "model_upload", "m.onnx", hostile.good_model())
    upload(at, "data_upload", "pickled.npz", data.read_bytes())
    assert_no_traceback(at)
    (message,) = error_texts(at)
    assert "pickled.npz" in message and "Python objects (pickled)" in message
    assert not marker.exists()  # loading it with pickle would have created this file


def test_the_pickle_marker_works_when_unpickled(tmp_path):
    """The guard above is meaningful: np.load with allow_pickle=True does run the payload."""
    marker = tmp_path / "unpickled"
    data = write(tmp_path / "pickled.npz", hostile.pickled_data(marker))
    with np.load(data, allow_pickle=True) as loaded:
        loaded["x"]
    assert marker.exists()


def test_good_data_after_bad_data_is_used():
    at = new_session()
    upload(at, "model_upload", "m.onnx", hostile.good_model())
    upload(at, "data_upload", "bad.npz", hostile.npz(x=np.zeros((10, 5), np.float32)))
    assert len(error_texts(at)) == 1
    upload(at, "data_upload", "good.npz", hostile.good_data(100))
    assert_no_traceback(at)
    assert not error_texts(at)
    assert "good.npz: 50 calibration / 50 evaluation samples" in page_text(at)


def test_an_archive_that_unpacks_over_the_limit_is_refused_before_reading_an_array(tmp_path, monkeypatch):
    """A small compressed .npz (a "zip bomb" in miniature) is judged by its unpacked size, not read."""
    import io

    from quant_core.model import data as data_module

    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=np.zeros((8192, 1, 8, 8), np.float32))  # 2 MiB unpacked
    bomb = write(tmp_path / "bomb.npz", buffer.getvalue())
    assert bomb.stat().st_size < 2**16
    monkeypatch.setattr(data_module, "MAX_DATA_BYTES", 2**20)
    reads = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: reads.append(key) or original(self, key))
    message = assert_one_line_error(run_cli("evaluate", CNN, "--data", bomb), "unpacks to 2", "over the 1")
    assert "MiB limit" in message
    assert reads == []


@pytest.mark.parametrize("value", [1e-42, 3e38], ids=["subnormal", "near-float32-max"])
def test_finite_but_extreme_inputs_calibrate_or_name_the_tensor(tmp_path, value):
    model = write(tmp_path / "m.onnx", hostile.good_model())
    data = tmp_path / "d.npz"
    np.savez(data, x=np.full((64, 4), value, np.float32))
    result = run_cli("evaluate", model, "--data", data)
    if result.status != 0:
        assert_one_line_error(result, "'y'")  # names the tensor that could not be histogrammed


def test_subnormal_inputs_calibrate_and_evaluate(tmp_path):
    """Values about 1e-42 are histogrammed (the grid widened just enough) instead of numpy's 'Too many bins'."""
    model = write(tmp_path / "m.onnx", hostile.good_model())
    data = tmp_path / "d.npz"
    np.savez(data, x=np.full((64, 4), 1e-42, np.float32))
    result = run_cli("evaluate", model, "--data", data)
    assert result.status == 0 and result.err == "", result.err
    assert "Too many bins" not in result.out


def test_the_app_holds_uploads_to_a_smaller_unpacked_size_than_the_command_line(monkeypatch):
    """A shared server keeps every user's data in memory: uploads get ui.cache.UPLOAD_DATA_BYTES."""
    import io

    from ui import cache

    assert cache.UPLOAD_DATA_BYTES < 2**30
    monkeypatch.setattr(cache, "UPLOAD_DATA_BYTES", 2**20)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((2**18 // hostile.IN_FEATURES, hostile.IN_FEATURES), np.float32))  # 1 MiB + header
    at = new_session()
    upload(at, "model_upload", "m.onnx", hostile.good_model())
    upload(at, "data_upload", "good.npz", hostile.good_data(100))
    upload(at, "data_upload", "large.npz", buffer.getvalue())
    assert_no_traceback(at)
    (message,) = error_texts(at)
    assert "large.npz" in message and "over the 1.0 MiB limit" in message and "previous data is still used" in message
    at.run()
    assert "good.npz: 50 calibration / 50 evaluation samples" in page_text(at)

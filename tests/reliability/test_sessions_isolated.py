"""Several users at once: per-user state stays in each session; shared cached resources are never changed.

Two AppTest sessions in one process share Streamlit's caches exactly as two browser tabs on one
server do. Each works on its own model and config; every page must show that session's layers,
config and numbers, equal to what a session alone with the same choices shows.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from quant_core.model.demo import load_demo
from quant_core.model.model_io import load_model, prepare_model
from tests.reliability import hostile
from tests.reliability.conftest import assert_no_traceback, current_model, layer_names, new_session, page_text, upload

MIXED = "pages/3_Mixed_precision.py"
MLP_LAYERS = ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]


def _metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def _table_layers(at) -> list[str]:
    return list(at.data_editor(key="mixed_table").value["layer"])


def _mlp_w4a8(at=None):
    at = at or new_session()
    at.selectbox(key="model_choice").set_value("mlp").run()
    at.selectbox(key="config_preset").set_value("W4A8").run()
    return at


def _tiny_fp16(at=None):
    at = at or new_session()
    upload(at, "model_upload", "tiny.onnx", hostile.good_model())
    upload(at, "data_upload", "tiny.npz", hostile.good_data(200))
    at.selectbox(key="config_preset").set_value("FP16").run()
    return at


@pytest.fixture(scope="module")
def pair():
    """Session A: demo MLP with W4A8. Session B: an uploaded one-layer model with its data and FP16. Interleaved."""
    a = new_session()
    b = new_session()
    a.selectbox(key="model_choice").set_value("mlp").run()
    upload(b, "model_upload", "tiny.onnx", hostile.good_model())
    a.selectbox(key="config_preset").set_value("W4A8").run()
    upload(b, "data_upload", "tiny.npz", hostile.good_data(200))
    b.selectbox(key="config_preset").set_value("FP16").run()
    a.run()
    return a, b


def test_each_session_keeps_its_own_model_and_config(pair):
    a, b = pair
    for at in (a, b):
        at.run()
        assert_no_traceback(at)
    assert layer_names(a) == MLP_LAYERS and current_model(a) == "mlp"
    assert layer_names(b) == ["fc"] and current_model(b) == "Uploaded: tiny.onnx"
    assert a.selectbox(key="config_preset").value == "W4A8"
    assert b.selectbox(key="config_preset").value == "FP16"
    assert "tiny.npz" not in page_text(a) and "digits" not in page_text(b)


def test_each_session_sees_its_own_results_equal_to_a_session_alone(pair):
    a, b = pair
    a.switch_page(MIXED).run()
    b.switch_page(MIXED).run()
    a.run()  # A reruns after B computed its own results
    for at in (a, b):
        assert_no_traceback(at)
    assert _table_layers(a) == MLP_LAYERS and _table_layers(b) == ["fc"]
    alone_a = _mlp_w4a8().switch_page(MIXED).run()
    alone_b = _tiny_fp16().switch_page(MIXED).run()
    assert _metrics(a) == _metrics(alone_a)
    assert _metrics(b) == _metrics(alone_b)
    assert _metrics(a) != _metrics(b)


def test_a_change_in_one_session_does_not_reach_the_other(pair):
    a, b = pair
    a.switch_page("pages/0_Model.py").run()
    b.switch_page("pages/0_Model.py").run()
    before = _metrics(b)
    a.selectbox(key="config_preset").set_value("FP32").run()
    a.selectbox(key="model_choice").set_value("transformer").run()
    b.run()
    assert b.selectbox(key="config_preset").value == "FP16" and layer_names(b) == ["fc"]
    assert _metrics(b) == before
    assert a.selectbox(key="config_preset").value == "FP32"


def _digest(*arrays: np.ndarray) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def test_shared_cached_models_and_data_are_never_mutated(pair):
    """After sessions ran every page on the demo models, the cached objects equal freshly loaded ones."""
    from ui import cache

    a, _ = pair
    a.selectbox(key="model_choice").set_value("cnn").run()
    a.selectbox(key="config_preset").set_value("W4 weight-only per-group").run()
    for page in ("pages/1_Weights.py", "pages/2_Activations.py", MIXED, "app.py"):
        a.switch_page(page).run()
        assert_no_traceback(a)
    for name in ("cnn", "mlp"):
        model_bytes, key, data = cache.demo_source(name)
        fresh_bytes, fresh_data = load_demo(name)
        assert model_bytes == fresh_bytes
        assert _digest(data.inputs["image"], data.labels) == _digest(fresh_data.inputs["image"], fresh_data.labels)
        cached = cache.load_prepared(model_bytes, key)
        fresh = prepare_model(load_model(fresh_bytes))
        assert cached.model.SerializeToString() == fresh.model.SerializeToString()
        assert cached.info == fresh.info


def test_a_shared_evaluator_used_by_several_threads_gives_each_the_numbers_it_gives_alone():
    """Sessions share one cached Evaluator per model; concurrent sweeps and evaluations must not mix."""
    import threading

    from quant_core.engine.calibrate import calibrate
    from quant_core.config import PRESETS
    from quant_core.model.data import split_dataset
    from quant_core.engine.evaluate import Evaluator
    from quant_core.search.sensitivity import run_sweep

    def fresh() -> Evaluator:
        model_bytes, data = load_demo("mlp")
        prepared = prepare_model(load_model(model_bytes))
        calibration_data, evaluation_data = split_dataset(data)
        return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data)

    jobs = {f"sweep {formats}": (lambda ev, f=formats: [r.to_dict() for r in run_sweep(ev, f.split(","))])
            for formats in ("int8,int4", "int2,fp8_e4m3fn", "kmeans3,ternary")}
    jobs |= {f"evaluate {name}": (lambda ev, n=name: ev.evaluate(PRESETS[n]).to_dict())
             for name in ("W8A8", "W4A8", "FP16")}
    alone = {label: job(fresh()) for label, job in jobs.items()}
    shared = fresh()
    results: dict[str, object] = {}
    start = threading.Barrier(len(jobs))

    def run(label, job):
        start.wait()
        results[label] = job(shared)

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == alone

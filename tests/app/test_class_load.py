"""Served to a class: heavy jobs take turns through ui.jobs, have time limits, and a user's model is never recomputed.

Each test plays one user in an AppTest session; "another user's job" is a thread holding the
server's heavy-job slot (ui.jobs.HEAVY_JOBS) the way another session's sweep or measurement would.
"""
import threading
from contextlib import contextmanager

import streamlit as st
from streamlit.testing.v1 import AppTest

from quant_core.model.data import load_npz, split_dataset
from quant_core.model.model_io import load_model, prepare_model
from tests.app.conftest import ROOT, tiny_data_bytes, tiny_model_bytes
from ui import cache, jobs
from ui.setup import LabContext

SENSITIVITY = str(ROOT / "pages" / "5_Sensitivity.py")
TRADEOFFS = str(ROOT / "pages" / "6_Trade-offs.py")
ACTIVATIONS = str(ROOT / "pages" / "2_Activations.py")
WAITING = "Waiting for another user's job to finish before "


@contextmanager
def another_users_job(release_after_s: float = 0.3):
    """Hold the server's heavy-job slot from another thread for `release_after_s` seconds."""
    holding, release = threading.Event(), threading.Event()

    def other_user():
        with jobs.heavy_job("another user's job"):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=other_user)
    thread.start()
    holding.wait(5)
    timer = threading.Timer(release_after_s, release.set)
    timer.start()
    try:
        yield
    finally:
        release.set()
        timer.cancel()
        thread.join(10)


def _demo_page(page: str, model: str = "mlp") -> AppTest:
    at = AppTest.from_file(page, default_timeout=180)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _tiny_context() -> LabContext:
    prepared = prepare_model(load_model(tiny_model_bytes()))
    calibration_data, evaluation_data = split_dataset(load_npz(tiny_data_bytes(), prepared.info),
                                                      calibration_samples=cache.CALIBRATION_SAMPLES, seed=0)
    return LabContext(model_key=cache.content_key(tiny_model_bytes()), model_name="tiny.onnx", prepared=prepared,
                      info=prepared.info, data=None, calibration_data=calibration_data,
                      evaluation_data=evaluation_data, config=None, data_key="tiny-data")


# --- shared caches sized for a class ---------------------------------------------------------------

def test_the_model_caches_hold_a_class_and_forget_unused_models_after_the_ttl():
    assert cache.MODEL_ENTRIES >= 16 and cache.MODEL_TTL_S > 0


def test_an_evicted_model_is_neither_reopened_nor_recalibrated_for_the_user_working_on_it(monkeypatch):
    counts = {"prepare_model": 0, "calibrate": 0}
    for name in counts:
        original = getattr(cache, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(cache, name, counted)
    st.cache_resource.clear()
    at = AppTest.from_file(ACTIVATIONS, default_timeout=120).run()
    at.file_uploader(key="model_upload").set_value(("mine.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.file_uploader(key="data_upload").set_value(("mine.npz", tiny_data_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert counts == {"prepare_model": 2, "calibrate": 2}, "the demo opened first, then the upload"
    st.cache_resource.clear()  # what a full cache does to the oldest models, or the ttl
    at.run()
    at.switch_page("3_Mixed_precision.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert counts == {"prepare_model": 2, "calibrate": 2}, "the session kept its own model and calibration"


# --- heavy jobs take turns -------------------------------------------------------------------------

def test_a_calibration_waits_for_another_users_job_and_tells_its_user():
    ctx = _tiny_context()
    messages = []
    with another_users_job(release_after_s=0.2):
        calibration = cache.get_calibration(ctx, notify=messages.append)
    assert calibration.tensors
    assert messages[0].startswith(f"{WAITING}the calibration of tiny.onnx") and messages[1:] == [None]


def test_a_finished_calibration_is_returned_at_once_while_another_users_job_runs():
    ctx = _tiny_context()
    first = cache.get_calibration(ctx)
    messages = []
    with another_users_job(release_after_s=5):
        assert cache.get_calibration(ctx, notify=messages.append) is first
    assert messages == []


def test_a_sweep_waits_for_another_users_job_then_runs(monkeypatch):
    at = _demo_page(SENSITIVITY)  # calibrated; the default sweep ran
    messages = []
    monkeypatch.setattr("ui.sensitivity_view.waiting_notice", lambda: messages.append)
    at.multiselect(key="sens_formats").set_value(["int6", "int3"])
    with another_users_job():
        at.button(key="sens_run").click().run()
    assert not at.exception and not at.error
    assert messages[0].startswith(f"{WAITING}the sensitivity sweep")
    assert any("Sweep finished: 3 of 3 layers × 2 formats" in c.value for c in at.caption)


def test_a_sweep_stops_at_its_time_limit_keeps_the_finished_layers_and_says_so(monkeypatch):
    monkeypatch.setattr("ui.sensitivity_view.SWEEP_TIME_BUDGET_S", 1e-9)  # over after the first layer
    at = _demo_page(SENSITIVITY)
    assert not at.exception and not at.error
    caption = next(c.value for c in at.caption if c.value.startswith("Sweep stopped"))
    assert caption.startswith("Sweep stopped after 0 s (the time limit of a sweep on this shared server is 0 s")
    assert ": 1 of 3 layers × 5 formats" in caption
    assert len(at.session_state["_sens_job"].rows) == 5, "the finished layer's 5 formats are kept"
    assert len(at.dataframe[0].value) == 1, "the ranking holds the swept layer"


def test_the_suggestion_is_a_heavy_job(monkeypatch):
    at = _demo_page(SENSITIVITY)
    messages = []
    monkeypatch.setattr("ui.sensitivity_view.waiting_notice", lambda: messages.append)
    with another_users_job():
        at.button(key="sens_suggest").click().run()
    assert not at.exception and not at.error
    assert messages[0].startswith(f"{WAITING}the mixed-precision search")
    assert at.session_state["_sens_suggestion"]["suggestion"] is not None


# --- latency measurement -------------------------------------------------------------------------

def _timings(monkeypatch) -> list[dict]:
    import quant_core.export.latency

    calls, original = [], quant_core.export.latency.measure_latency

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(quant_core.export.latency, "measure_latency", counted)
    return calls


def test_a_measurement_waits_for_another_users_job(monkeypatch):
    at = _demo_page(TRADEOFFS)
    messages = []
    monkeypatch.setattr("ui.tradeoffs_view.waiting_notice", lambda: messages.append)
    with another_users_job():
        at.button(key="tradeoff_measure").click().run()
    assert not at.exception and not at.error
    assert messages[0].startswith(f"{WAITING}the latency measurement")


def test_large_batches_get_fewer_timed_runs_and_every_timing_has_a_time_limit(monkeypatch):
    from ui import tradeoffs_view

    at = _demo_page(TRADEOFFS)
    calls = _timings(monkeypatch)
    at.select_slider(key="tradeoff_batch").set_value(256)
    at.number_input(key="tradeoff_repeats").set_value(1000)
    at.run()
    assert any("At batch size 256, at most 64 timed runs per variant" in c.value for c in at.caption)
    at.button(key="tradeoff_measure").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert calls and all(call["repeats"] == 64 and call["batch_size"] == 256 for call in calls)
    assert all(call["time_budget_s"] == tradeoffs_view.LATENCY_BUDGET_S for call in calls)
    assert tradeoffs_view.max_repeats(1) == 1000 and tradeoffs_view.max_repeats(16) == 1000
    assert tradeoffs_view.max_repeats(128) == 128 and tradeoffs_view.max_repeats(256) == 64


def test_the_page_says_when_the_time_limit_cut_the_timed_runs(monkeypatch):
    monkeypatch.setattr("ui.tradeoffs_view.LATENCY_BUDGET_S", 1e-6)  # every variant stops after 3 runs
    at = _demo_page(TRADEOFFS)
    at.number_input(key="tradeoff_repeats").set_value(50)
    at.button(key="tradeoff_measure").click().run()
    assert not at.exception and not at.error
    cut = [c.value for c in at.caption if "timed 3 of 50 runs (the 1e-06 s time limit per variant" in c.value]
    assert any(note.startswith("FP32: ") for note in cut) and len(cut) >= 6

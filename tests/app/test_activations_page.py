"""The Activations page: calibrate once, then every method's range, its search curve and outliers."""
import json
import threading

import streamlit as st

from ui import cache as ui_cache
from tests.app.conftest import run_page, tiny_model_bytes

PAGE = "pages/2_Activations.py"


def _charts(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _outliers(at):
    return next(frame.value for frame in at.dataframe if "ratio" in frame.value.columns)


def _ranges(at):
    return next(frame.value for frame in at.dataframe if "clipped (%)" in frame.value.columns)


def test_the_page_shows_every_method_range_over_the_calibrated_histogram():
    at = run_page(PAGE)
    assert at.selectbox(key="activations_tensor").value != "image"  # opens on an inner tensor, not the raw input
    names = [trace.get("name", "") for trace in _charts(at)[0]["data"]]
    for method in ("minmax", "percentile", "mse", "entropy"):
        assert any(name.startswith(f"{method} [") for name in names), names
    assert list(_ranges(at)["method"]) == ["minmax", "percentile", "mse", "entropy"]


def test_the_entropy_search_curve_is_drawn_and_minmax_explains_it_has_none():
    at = run_page(PAGE)
    assert at.radio(key="activations_method").value == "entropy"
    curve = _charts(at)[1]
    assert "KL" in curve["layout"]["yaxis"]["title"]["text"]
    at.radio(key="activations_method").set_value("minmax").run()
    assert not at.exception
    assert len(_charts(at)) == 1
    assert any("no curve" in m.value for m in at.markdown)
    at.radio(key="activations_method").set_value("mse").run()
    assert len(_charts(at)) == 2


def test_choosing_another_tensor_shows_its_histogram():
    at = run_page(PAGE)
    at.selectbox(key="activations_tensor").set_value("/flatten/Flatten_output_0").run()
    assert not at.exception
    assert any(h.value == "/flatten/Flatten_output_0: input of /fc/Gemm" for h in at.subheader)


def test_the_outlier_table_has_every_calibrated_tensor_ranked_by_ratio():
    at = run_page(PAGE)
    table = _outliers(at)
    assert "image" in set(table["tensor"]) and "logits" not in set(table["tensor"])  # layer inputs first
    assert list(table["ratio"]) == sorted(table["ratio"], reverse=True)
    assert all(table["ratio"] >= 1.0)
    assert list(table["outlier"]) == [ratio >= 4.0 for ratio in table["ratio"]]


def test_calibration_runs_once_per_model_and_data(monkeypatch):
    calls = []
    real = ui_cache.calibrate
    monkeypatch.setattr(ui_cache, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    st.cache_resource.clear()
    at = run_page("app.py")
    at.switch_page(PAGE).run()
    at.radio(key="activations_method").set_value("percentile").run()
    at.switch_page("pages/0_Model.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert len(calls) == 1


def test_the_transformer_demo_calibrates_and_shows_its_tensors():
    at = run_page(PAGE)
    at.selectbox(key="model_choice").set_value("transformer").run()
    assert not at.exception and not at.error
    assert len(_outliers(at)) == 10  # its 10 distinct layer inputs (the outputs come when one is picked)


def test_a_model_without_data_asks_for_data_instead_of_calibrating():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception and not at.error
    assert any("upload a .npz" in warning.value for warning in at.warning)
    assert not at.get("plotly_chart")


def test_a_calibration_waiting_for_another_users_job_says_so_on_its_progress_bar(monkeypatch):
    from tests.app.test_class_load import WAITING
    from ui import activations_view, jobs

    texts, holding, release = [], threading.Event(), threading.Event()

    def recording(bar):
        notify = original(bar)

        def record(text):
            texts.append(text)
            notify(text)
            release.set()  # the other user's job ends once this user is seen waiting

        return record

    def other_user():
        with jobs.heavy_job("another user's job"):
            holding.set()
            release.wait(30)

    original = activations_view.bar_notice
    monkeypatch.setattr(activations_view, "bar_notice", recording)
    st.cache_resource.clear()  # the page must calibrate, so it asks for the job slot
    other = threading.Thread(target=other_user)
    other.start()
    holding.wait(10)
    try:
        at = run_page(PAGE)
    finally:
        release.set()
        other.join(10)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert texts[0].startswith(f"{WAITING}the calibration of ") and texts[1:] == [None]
    assert not at.info, "the notice is on the bar, not in a separate box"
    assert len(_outliers(at)) == 3, "then it calibrated (the CNN demo's three layer inputs)"


def test_a_layer_output_is_calibrated_when_picked_with_one_more_pass(monkeypatch):
    passes = []
    real = ui_cache.extend_calibration
    monkeypatch.setattr(ui_cache, "extend_calibration", lambda *a, **k: passes.append(1) or real(*a, **k))
    st.cache_resource.clear()
    at = run_page(PAGE)
    assert any("layer outputs are not calibrated yet" in caption.value for caption in at.caption)
    assert not passes, "the first view calibrates the layer inputs only"
    at.selectbox(key="activations_tensor").set_value("logits").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(h.value == "logits: output of /fc/Gemm" for h in at.subheader)
    assert "logits" in set(_outliers(at)["tensor"])
    assert not any("not calibrated yet" in caption.value for caption in at.caption)
    at.selectbox(key="activations_tensor").set_value("/flatten/Flatten_output_0").run()
    at.selectbox(key="activations_tensor").set_value("logits").run()
    assert len(passes) == 1, "then cached"
    assert not any("not calibrated yet" in caption.value for caption in at.caption)


def test_a_stopped_layer_output_pass_offers_to_start_again(monkeypatch):
    from ui import jobs

    st.cache_resource.clear()
    at = run_page(PAGE)
    monkeypatch.setattr(jobs, "job_stopped", lambda job: True)
    monkeypatch.setattr("ui.activations_view.job_stopped", lambda job: True)
    at.selectbox(key="activations_tensor").set_value("logits").run()
    assert not at.exception and not at.error
    assert any("not calibrated" in info.value for info in at.info)
    assert at.button(key="activations_outputs_resume")
    assert len(_outliers(at)) == 3, "the layer inputs' outliers still show"

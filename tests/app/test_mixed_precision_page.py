"""The Mixed precision page: a per-layer table whose edits become the current config and re-evaluate it."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from quant_core.config import PRESETS

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "3_Mixed_precision.py")
CONFIG_KEY = "_lab_config"  # ui.state's private key of the current config


def _page(model: str = "mlp") -> AppTest:
    """The page, run once on the demo `model` (chosen in the sidebar like a user does)."""
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    return at


def _metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def _edit(at: AppTest, row: int, column: str, value) -> None:
    at.session_state["mixed_table"] = {"edited_rows": {row: {column: value}}, "added_rows": [], "deleted_rows": []}


@pytest.fixture(scope="module")
def first_run() -> AppTest:
    at = _page()
    at.run()
    return at


def test_the_page_shows_one_table_row_per_layer_and_the_metrics_without_errors(first_run):
    at = first_run
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.data_editor(key="mixed_table").value
    assert len(table) >= 2
    assert {"layer", "weight format", "activation format", "FP32 fallback"} <= set(table.columns)
    assert {m.label for m in at.metric} >= {"Accuracy", "Top-1 agreement", "Cosine similarity", "Output SQNR", "Size"}


def test_the_table_starts_from_the_current_config_w8a8(first_run):
    table = first_run.data_editor(key="mixed_table").value
    assert set(table["weight format"]) == {"int8"}
    assert set(table["activation format"]) == {"uint8"}
    assert not table["FP32 fallback"].any()


def test_lowering_one_layer_to_2_bits_changes_the_accuracy_and_the_config(first_run):
    at = first_run
    accuracy_before, size_before = _metric(at, "Accuracy").value, _metric(at, "Size").value
    first_layer = at.data_editor(key="mixed_table").value["layer"].iloc[0]
    _edit(at, 0, "weight format", "int2")
    at.run()
    assert not at.exception
    config = at.session_state[CONFIG_KEY]
    assert config.for_layer(first_layer).weights.format.name == "int2"
    assert config.name == "custom"
    assert _metric(at, "Accuracy").value != accuracy_before
    assert _metric(at, "Size").value != size_before
    assert any("(simulated)" in w.value for w in at.warning), "int2 has no onnxruntime kernel: labelled simulated"


def test_the_fp32_fallback_checkbox_keeps_a_layer_in_float():
    at = _page()
    at.run()
    first_layer = at.data_editor(key="mixed_table").value["layer"].iloc[0]
    _edit(at, 0, "FP32 fallback", True)
    at.run()
    assert at.session_state[CONFIG_KEY].for_layer(first_layer).is_fp32


def test_apply_preset_to_all_replaces_the_edits():
    at = _page()
    at.run()
    _edit(at, 0, "weight format", "int2")
    at.run()
    at.selectbox(key="mixed_preset").set_value("FP16")
    at.button(key="mixed_apply_preset").click()
    at.run()
    assert at.session_state[CONFIG_KEY] == PRESETS["FP16"]
    assert set(at.data_editor(key="mixed_table").value["weight format"]) == {"fp16"}


def test_the_downloads_offer_the_config_and_the_overrides_json(first_run):
    labels = {button.proto.label for button in first_run.get("download_button")}
    assert any("config" in label.lower() for label in labels), labels
    assert any("overrides" in label.lower() for label in labels), labels


def test_export_builds_a_real_onnx_model_on_click_and_offers_it_for_download():
    at = _page()
    at.run()
    assert not any(b.label.endswith(".onnx") or ".onnx (" in b.label for b in at.get("download_button"))
    at.button(key="mixed_export").click()
    at.run()
    assert not at.exception
    onnx_buttons = [b for b in at.get("download_button") if ".onnx (" in b.label]
    assert len(onnx_buttons) == 1
    assert "KB)" in onnx_buttons[0].label


def test_the_per_layer_chart_labels_simulated_layers_and_can_be_turned_off():
    at = _page()
    at.run()
    _edit(at, 0, "weight format", "int3")
    at.run()
    charts = at.get("plotly_chart")
    assert len(charts) == 2, "per-layer error and per-class change"
    assert "(simulated)" in charts[0].proto.spec, "the int3 layer is labelled simulated on the chart"
    at.toggle(key="mixed_layer_chart").set_value(False)
    at.run()
    assert len(at.get("plotly_chart")) == 1, "only the per-class chart is left"


@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_the_page_opens_on_the_other_demo_models_with_one_row_per_layer(model):
    at = _page(model)
    at.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.data_editor(key="mixed_table").value
    assert len(table) == len(set(table["layer"])) >= 3
    assert {m.label for m in at.metric} >= {"Accuracy", "Size"}



def test_the_downloads_say_which_layers_the_onnx_export_keeps_in_fp32():
    at = _page()
    _edit(at, 1, "weight format", "int4")
    at.run()
    layer = at.data_editor(key="mixed_table").value["layer"].iloc[1]
    notes = [c.value for c in at.caption if c.value.startswith("In the exported model these layers stay FP32")]
    assert len(notes) == 1 and notes[0].endswith(layer)
    assert "int4" in notes[0]


def test_the_onnx_export_is_a_heavy_job_that_waits_for_another_users_job_and_says_so(monkeypatch):
    from tests.app.test_class_load import WAITING, another_users_job

    at = _page()
    messages = []
    monkeypatch.setattr("ui.mixed_view.waiting_notice", lambda: messages.append)
    with another_users_job():
        at.button(key="mixed_export").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert messages[0].startswith(f"{WAITING}the ONNX export") and messages[1:] == [None]
    assert len([b for b in at.get("download_button") if ".onnx (" in b.label]) == 1


def test_the_export_target_is_part_of_the_config_and_keeps_the_preset():
    from quant_core.numerics.cpu_target import CpuTarget
    at = _page()
    assert at.selectbox(key="export_target").value == "auto"
    assert any("target auto" in caption.value for caption in at.caption)
    at.selectbox(key="export_target").set_value("saturating-x86").run()
    assert not at.exception
    config = at.session_state[CONFIG_KEY]
    assert config.target == CpuTarget.SATURATING_X86 and config.name == "W8A8"
    assert at.selectbox(key="config_preset").value == "W8A8"  # the same preset, exported for another CPU
    assert any("target saturating-x86: int8 weights of integer-kernel layers stored as uint8" in caption.value
               for caption in at.caption)

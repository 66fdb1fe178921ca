"""The Recovery page: methods chosen there become the current config's, and each one's before / after is shown."""
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.formats import parse_format

from .conftest import app_test

PAGE = "pages/7_Recovery.py"
CONFIG_KEY = "_lab_config"  # ui.state's private key of the current config
PER_TENSOR = QuantConfig(LayerQuant(TensorQuant(parse_format("int8")),
                                    TensorQuant(parse_format("uint8"), symmetric=False)), name="per-tensor")


def test_the_page_runs_and_asks_for_methods():
    at = app_test(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Choose methods above" in info.value for info in at.info)


def test_choosing_cle_puts_it_in_the_config_and_recovers_the_per_tensor_cnn():
    at = app_test(PAGE)
    at.session_state[CONFIG_KEY] = PER_TENSOR
    at.run()
    at.multiselect(key="methods_choice").set_value(["cle"]).run()
    at.button(key="methods_apply").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [spec.name for spec in at.session_state[CONFIG_KEY].methods] == ["cle"]
    table = at.dataframe[0].value
    accuracy = table[table["metric"] == "accuracy"].iloc[0]
    assert accuracy["before"] < 0.5 and accuracy["after"] > 0.98
    assert any("equalized" in markdown.value for markdown in at.markdown)


def test_smoothquant_alpha_reaches_the_config():
    at = app_test(PAGE)
    at.run()
    at.selectbox(key="model_choice").set_value("transformer").run()
    at.multiselect(key="methods_choice").set_value(["smoothquant"]).run()
    at.slider(key="methods_alpha").set_value(0.8).run()
    at.button(key="methods_apply").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state[CONFIG_KEY].methods[0].option("alpha") == 0.8
    assert "Methods applied to the model first: smoothquant" in " ".join(c.value for c in at.sidebar.caption)


def test_range_search_shows_its_table_and_applies_the_chosen_ranges():
    at = app_test(PAGE).run()
    at.button(key="methods_range_search").click().run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[-1].value
    assert list(table["layer"]) == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"] and "chosen" in table
    at.button(key="methods_range_use").click().run()
    config = at.session_state[CONFIG_KEY]
    assert config.name == "custom" and config.overrides


def test_the_mixed_precision_table_keeps_the_configs_methods():
    at = app_test("pages/3_Mixed_precision.py")
    at.session_state[CONFIG_KEY] = PER_TENSOR.with_methods(["cle"])
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    accuracy = next(m for m in at.metric if m.label == "Accuracy")
    assert float(accuracy.value.rstrip("%")) > 98  # evaluated on the equalized model
    at.session_state["mixed_table"] = {"edited_rows": {0: {"weight format": "int6"}}, "added_rows": [],
                                       "deleted_rows": []}
    at.run()
    assert [spec.name for spec in at.session_state[CONFIG_KEY].methods] == ["cle"]


def _stop_script():
    from quant_core.config import PRESETS
    from ui import state
    from ui.setup import _stop_methods
    state.set_config(PRESETS["W8A8"].with_methods(["cle"]))
    _stop_methods()  # what the "Stop the methods" button runs (it is drawn only while the methods run)


def test_stopping_the_methods_removes_them_from_the_config_and_says_so():
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_function(_stop_script).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state[CONFIG_KEY].methods == () and at.session_state[CONFIG_KEY].name == "W8A8"
    page = app_test(PAGE)
    page.session_state["_lab_methods_stopped"] = at.session_state["_lab_methods_stopped"]
    page.run()
    assert any("stopped and removed" in w.value for w in page.sidebar.warning)


def test_gptq_on_a_per_group_int4_config_reports_its_integers_on_the_transformer():
    from quant_core.config import PRESETS
    at = app_test(PAGE)
    at.session_state[CONFIG_KEY] = PRESETS["W4 weight-only per-group"]
    at.run()
    at.selectbox(key="model_choice").set_value("transformer").run()
    at.multiselect(key="methods_choice").set_value(["gptq"]).run()
    at.button(key="methods_apply").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [spec.name for spec in at.session_state[CONFIG_KEY].methods] == ["gptq"]
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "take GPTQ's integers on the config's grid" in text, text[:2000]

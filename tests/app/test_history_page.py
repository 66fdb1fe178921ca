"""The Run history page: every config evaluated in the session, kept across pages; compare two; restore one."""
from quant_core.config import PRESETS, QuantConfig
from tests.app.conftest import app_test, texts

HISTORY = "pages/9_History.py"
MIXED = "pages/3_Mixed_precision.py"
CONFIG_KEY = "_lab_config"


def _mlp_session():
    at = app_test("app.py").run()
    at.selectbox(key="model_choice").set_value("mlp").run()
    return at


def test_without_an_evaluation_the_page_says_where_runs_come_from():
    at = _mlp_session()
    at.switch_page(HISTORY).run()
    assert not at.exception
    assert "No config evaluated yet" in texts(at)


def test_configs_evaluated_on_mixed_precision_are_listed_after_a_page_switch_and_compared_per_layer():
    at = _mlp_session()
    at.switch_page(MIXED).run()
    at.selectbox(key="config_preset").set_value("W4A8").run()
    at.switch_page(HISTORY).run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["config"]) == ["FP32", "W8A8", "W4A8"], "FP32 baseline, the start config, then the edit"
    assert {"when", "size (KiB)", "latency (ms)", "methods"} <= set(table.columns)
    assert at.multiselect(key="history_pinned").value == ["#2 W8A8", "#3 W4A8"], "the last two pinned by default"
    compared = at.dataframe[1].value
    assert len(compared) == 3, "one row per layer of the MLP"
    assert compared["differs"].all(), "W8A8 and W4A8 differ on every layer"
    assert (compared["#3 W4A8 SQNR (dB)"] < compared["#2 W8A8 SQNR (dB)"]).all(), "4-bit weights err more"
    assert len(at.get("plotly_chart")) == 1


def test_restoring_a_run_makes_it_the_current_config():
    at = _mlp_session()
    at.switch_page(MIXED).run()
    at.selectbox(key="config_preset").set_value("W4A8").run()
    at.switch_page(HISTORY).run()
    at.selectbox(key="history_restore").set_value("#2 W8A8").run()
    at.button(key="history_restore_button").click().run()
    assert not at.exception
    assert at.session_state[CONFIG_KEY] == PRESETS["W8A8"]
    assert at.selectbox(key="config_preset").value == "W8A8", "the sidebar shows the restored preset at once"


def test_the_history_downloads_as_csv_with_each_config(downloads):
    at = _mlp_session()
    at.switch_page(MIXED).run()
    at.switch_page(HISTORY).run()
    csv_text = downloads["run_history.csv"].decode("utf-8")
    assert csv_text.splitlines()[0].startswith("run,when,config")
    assert QuantConfig.from_json(PRESETS["W8A8"].to_json()) == PRESETS["W8A8"]
    assert "W8A8" in csv_text and "config JSON" in csv_text

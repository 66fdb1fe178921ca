"""The Sensitivity page: a per-layer sweep shown as a heatmap, cells applied to the config, a suggestion."""
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "5_Sensitivity.py")
CONFIG_KEY = "_lab_config"  # ui.state's private key of the current config
MLP_LAYERS = ("/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm")


def _page(model: str = "mlp") -> AppTest:
    """The page, run once on the demo `model` (chosen in the sidebar like a user does)."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    return at


@pytest.fixture(scope="module")
def swept() -> AppTest:
    at = _page()
    at.run()
    at.multiselect(key="sens_formats").set_value(["int8", "int2"])
    at.button(key="sens_run").click()
    at.run()
    return at


def test_the_first_visit_runs_the_default_weights_only_sweep_and_shows_its_heatmap():
    at = _page()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Sweep finished: 3 of 3 layers × 5 formats (weights only)" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1, "the heatmap"
    assert len(at.dataframe[0].value) == 3, "every layer ranked"
    assert at.button(key="sens_stop").disabled, "nothing left to stop"


def test_the_default_sweep_runs_once_a_stopped_sweep_is_not_restarted_by_itself():
    at = _page()
    job = at.session_state["_sens_job"]
    job.stopped, job.done_layers, job.rows = True, 0, []  # as if Stop landed before the first layer finished
    at.run()
    assert not at.exception
    assert at.session_state["_sens_job"].rows == [], "no sweep started again"
    assert any("stopped before any layer finished" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1, "the empty heatmap of what a sweep will show"


def test_another_session_gets_the_cached_sweep_without_measuring_again(monkeypatch):
    _page()  # the default sweep of the demo MLP, now cached per layer

    def fail(*args, **kwargs):
        raise AssertionError("the sweep was measured again")

    monkeypatch.setattr("quant_core.search.sensitivity.run_sweep", fail)
    at = _page()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Sweep finished: 3 of 3 layers" in c.value for c in at.caption)


def test_a_big_model_waits_for_run_sweep_and_shows_an_empty_heatmap_of_its_layers(monkeypatch):
    monkeypatch.setattr("ui.sensitivity_view.AUTO_SWEEP_MAX_CONFIGS", 10)  # the MLP's 3 layers x 5 formats = 15
    at = _page()
    assert not at.exception
    assert "_sens_job" not in at.session_state, "nothing swept without a click"
    assert any("3 layers × 5 formats = 15 evaluations: press Run sweep" in i.value for i in at.info)
    placeholder = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert placeholder["layout"]["title"]["text"].startswith("Not swept yet")
    assert tuple(placeholder["data"][0]["y"]) == MLP_LAYERS, "the model's layers on the axis"
    assert tuple(placeholder["data"][0]["x"]) == ("int8", "int6", "int4", "int3", "int2")
    assert len(at.dataframe) == 0
    at.button(key="sens_run").click()
    at.run()
    assert any("Sweep finished: 3 of 3 layers × 5 formats" in c.value for c in at.caption)


def test_a_sweep_shows_a_heatmap_and_ranks_every_layer(swept):
    at = swept
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Sweep finished: 3 of 3 layers × 2 formats" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 1
    ranked = at.dataframe[0].value
    assert len(ranked) == 3
    drops = ranked["accuracy drop (pp)"].tolist()
    assert drops == sorted(drops, reverse=True), "most sensitive first"
    assert set(ranked["worst format"]) == {"int2"}, "2 bits hurts more than 8 on every layer"


def test_the_heatmap_toggle_switches_to_sqnr(swept):
    at = swept
    at.radio(key="sens_metric").set_value("SQNR (dB)")
    at.run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1


def test_applying_a_cell_changes_that_layer_in_the_current_config(swept):
    at = swept
    layer = at.selectbox(key="sens_pick_layer").options[-1]
    at.selectbox(key="sens_pick_layer").set_value(layer)
    at.run()
    assert any(f"{layer} currently uses int8 weights" in c.value for c in at.caption)
    at.selectbox(key="sens_pick_format").set_value("int2")
    at.button(key="sens_apply_cell").click()
    at.run()
    config = at.session_state[CONFIG_KEY]
    assert config.for_layer(layer).weights.format.name == "int2"
    assert config.for_layer(layer).activations is not None, "a weights-only sweep keeps the layer's activations"
    assert config.name == "custom"
    assert any(f"Applied int2 to {layer}" in s.value for s in at.success)


def test_a_suggestion_under_a_size_budget_shows_its_trace_and_pareto_chart_and_can_be_applied():
    at = _page()
    at.run()
    at.slider(key="sens_size_budget").set_value(12)
    at.button(key="sens_suggest").click()
    at.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    trace = at.dataframe[-1].value
    assert len(trace) >= 1
    assert set(trace["action"]) <= {"lower", "raise"}
    assert [chart.key for chart in at.get("plotly_chart")] == ["sens_heatmap", "sens_pareto"], "the Pareto chart"
    outcome = (at.success or at.warning)[0].value
    assert outcome.startswith("Suggestion")
    at.button(key="sens_apply_suggestion").click()
    at.run()
    config = at.session_state[CONFIG_KEY]
    size_percent = float(outcome.split("(")[1].split("%")[0])
    assert config.name != "W8A8"
    assert any("now the current config" in s.value for s in at.success)
    if "meets the constraint" in outcome:
        assert size_percent <= 12.0


def _interrupted_sweep(swept: AppTest):
    """The swept job as it was after its first layer: what a Stop click or another rerun interrupts."""
    from dataclasses import replace

    job = swept.session_state["_sens_job"]
    first_layer_rows = [row for row in job.rows if row.layer == job.layers[0]]
    return replace(job, rows=list(first_layer_rows), done_layers=1, stopped=False)


def test_stop_keeps_the_layers_already_measured_and_sweeps_no_further(swept, monkeypatch):
    at = _page()
    at.session_state["_sens_job"] = _interrupted_sweep(swept)
    # The browser shows Stop enabled while a sweep runs; AppTest sees only the end of a run, where the
    # page draws itself again once the sweep is done: keep that redraw out to see the page mid-sweep.
    monkeypatch.setattr("streamlit.rerun", lambda: None)
    at.run()
    assert not at.button(key="sens_stop").disabled
    at.session_state["_sens_job"] = _interrupted_sweep(swept)  # the click lands after the first layer
    at.button(key="sens_stop").click()
    at.run()
    assert not at.exception
    assert any("Sweep stopped: 1 of 3 layers" in c.value for c in at.caption)
    assert len(at.dataframe[0].value) == 1, "only the measured layer is ranked"


def test_an_interrupted_sweep_resumes_where_it_stopped(swept):
    at = _page()
    at.run()
    at.session_state["_sens_job"] = _interrupted_sweep(swept)
    at.run()
    assert any("Sweep finished: 3 of 3 layers" in c.value for c in at.caption)
    assert len(at.session_state["_sens_job"].rows) == len(swept.session_state["_sens_job"].rows)


def test_a_suggestion_stops_at_its_time_limit_with_what_it_found_and_says_so(monkeypatch):
    from quant_core.search import suggest

    budgets = []
    real = suggest.suggest_config
    monkeypatch.setattr(suggest, "suggest_config", lambda *a, **k: budgets.append(k["time_budget_s"]) or real(*a, **k))
    monkeypatch.setattr("ui.sensitivity_view.SUGGESTION_TIME_BUDGET_S", 1e-9)  # over after the first measurement
    at = _page()
    at.slider(key="sens_size_budget").set_value(12)
    at.button(key="sens_suggest").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert budgets == [1e-9]
    caption = next(c.value for c in at.caption if c.value.startswith("Search stopped after 0 s"))
    assert "0 steps taken" in caption and "the time limit of a search on this shared server is 1e-09 s" in caption
    assert at.warning[0].value.startswith("Suggestion does NOT meet the constraint (the closest measured)")
    assert at.session_state["_sens_suggestion"]["suggestion"].steps == ()


def test_the_page_gives_a_suggestion_two_minutes_of_searching(monkeypatch):
    from quant_core.search import suggest

    budgets = []
    real = suggest.suggest_config
    monkeypatch.setattr(suggest, "suggest_config", lambda *a, **k: budgets.append(k["time_budget_s"]) or real(*a, **k))
    at = _page()
    at.button(key="sens_suggest").click().run()
    assert not at.exception and not at.error
    assert budgets == [120.0]
    assert not any(c.value.startswith("Search stopped") for c in at.caption), "the demo's search ends well within it"


@pytest.mark.slow
def test_on_the_language_model_the_heatmap_and_the_budget_are_in_perplexity():
    at = _page("shakespeare_lm")
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.radio(key="sens_budget_kind").set_value("minimum accuracy").run()
    assert at.number_input(key="sens_max_perplexity_increase").value == 0.5
    assert any("perplexity at most" in c.value and "FP32 perplexity / perplexity ≥" in c.value for c in at.caption)
    at.multiselect(key="sens_formats").set_value(["int2"])
    at.button(key="sens_run").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Each cell: perplexity with that one layer quantized, minus FP32's" in c.value for c in at.caption)
    assert "perplexity increase" in at.dataframe[0].value.columns

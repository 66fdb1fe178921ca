"""The Trade-offs page: every standard variant exported, run and timed by onnxruntime (by itself on a first visit)."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "6_Trade-offs.py")
MLP_VARIANTS = {"FP32", "FP16", "Dynamic INT8", "Static INT8 per-tensor", "Static INT8 per-channel",
                "4-bit weight-only (MatMulNBits)", "Current config (W8A8)"}


def _page(model: str = "mlp") -> AppTest:
    """The page, run once on the demo `model` (chosen in the sidebar like a user does)."""
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    return at


@pytest.fixture(scope="module")
def measured() -> AppTest:
    at = _page()
    at.run()
    at.number_input(key="tradeoff_repeats").set_value(3)
    at.button(key="tradeoff_measure").click()
    at.run()
    return at


def _count_timings(monkeypatch) -> list:
    """Record each call of quant_core.export.latency.measure_latency (one per variant timed)."""
    import quant_core.export.latency

    calls, original = [], quant_core.export.latency.measure_latency

    def counted(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(quant_core.export.latency, "measure_latency", counted)
    return calls


def test_the_first_visit_measures_the_default_settings_and_says_how():
    at = _page()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.select_slider(key="tradeoff_batch").value == 1
    assert at.slider(key="tradeoff_threads").value == 1
    assert at.number_input(key="tradeoff_repeats").value == 20
    assert set(at.dataframe[0].value["variant"]) == MLP_VARIANTS
    assert [chart.key for chart in at.get("plotly_chart")] == ["tradeoff_latency", "tradeoff_size"]
    how = " ".join(i.value for i in at.info)
    assert "5 warm-up run(s) then 20 timed run(s) per variant on a machine with" in how and "CPU core(s)" in how


def test_reruns_and_other_sessions_reuse_the_default_measurement_and_measure_times_again(monkeypatch):
    _page()  # measured (and cached) once
    calls = _count_timings(monkeypatch)
    at = _page()  # another session
    at.run()
    assert calls == [], "nothing timed again without a click"
    assert len(at.dataframe) == 1
    at.button(key="tradeoff_measure").click()
    at.run()
    assert len(calls) == len(MLP_VARIANTS), "a click times every exported variant again"
    assert {call["repeats"] for call in calls} == {20}


def test_a_big_model_waits_for_measure(monkeypatch):
    monkeypatch.setattr("ui.tradeoffs_view.AUTO_MEASURE_MAX_PARAMS", 1000)  # the MLP has more parameters
    at = _page()
    assert not at.exception
    assert "_tradeoff_results" not in at.session_state, "nothing measured without a click"
    assert len(at.dataframe) == 0 and len(at.get("plotly_chart")) == 0
    assert any("press Measure to export, run and time every variant" in c.value for c in at.caption)


def test_measure_gives_one_row_per_variant_with_a_measured_latency_and_spread(measured):
    at = measured
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert set(table["variant"]) == MLP_VARIANTS
    assert (table["latency median (ms)"] > 0).all()
    assert (table["latency p10 (ms)"] <= table["latency median (ms)"]).all()
    assert (table["latency median (ms)"] <= table["latency p90 (ms)"]).all()
    fp32 = table.set_index("variant").loc["FP32"]
    assert fp32["speed-up vs FP32"] == 1.0 and fp32["size vs FP32"] == 1.0
    assert (table.set_index("variant").loc["4-bit weight-only (MatMulNBits)", "size vs FP32"]) < 0.3
    assert "QGemm" in table.set_index("variant").loc["Static INT8 per-channel", "kernels"]


def test_the_page_says_how_latency_was_measured_and_draws_both_charts(measured):
    at = measured
    how = " ".join(i.value for i in at.info)
    assert "batch size 1" in how and "1 intra-op thread" in how and "5 warm-up" in how and "3 timed run" in how
    assert len(at.get("plotly_chart")) == 2
    labels = [b.label for b in at.get("download_button")]
    assert "Table (CSV)" in labels and any(label.startswith("Report (Markdown") for label in labels)


def test_other_settings_need_their_own_measurement_and_show_sizes_meanwhile(measured):
    at = measured
    at.select_slider(key="tradeoff_batch").set_value(8)
    at.run()
    assert len(at.dataframe) == 0, "a batch of 8 was not measured yet"
    assert [chart.key for chart in at.get("plotly_chart")] == ["tradeoff_size"], "sizes need no timing"
    assert any("Not timed yet with these settings" in c.value and "batch size 8" in c.value for c in at.caption)
    at.select_slider(key="tradeoff_batch").set_value(1)
    at.run()
    assert len(at.dataframe) == 1, "the batch-1 measurement is kept"


def test_a_config_with_simulated_only_formats_is_plotted_apart_without_latency(measured):
    from quant_core.config import LayerQuant, QuantConfig, TensorQuant

    at = measured
    int3 = LayerQuant(TensorQuant("int3", granularity="per_channel"))
    config = QuantConfig(int3, name="all int3")  # 3-bit weights: no onnxruntime kernel
    at.session_state["_lab_config"] = config
    at.button(key="tradeoff_measure").click()
    at.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value.set_index("variant")
    simulated = table[table["kind"] == "simulated"]
    assert list(simulated.index) == ["Current config (all int3)"]
    assert simulated["latency median (ms)"].isna().all()
    assert simulated["size vs FP32"].iloc[0] < 0.15, "3 of 32 bits plus scales"
    exported = table.loc["Current config (all int3) — exported, simulated-only layers kept FP32"]
    assert exported["kind"] == "onnxruntime" and exported["latency median (ms)"] > 0
    assert any("Simulated (no onnxruntime kernel" in c.value for c in at.caption)


def test_the_markdown_report_holds_how_it_was_measured_every_variant_and_the_config_json(measured):
    import json

    from quant_core.config import QuantConfig
    from ui.report import MeasurementSettings, tradeoffs_csv, tradeoffs_markdown

    key, (frame, notes) = next(iter(measured.session_state["_tradeoff_results"].items()))  # the first measurement
    config = QuantConfig.from_json(key[2])
    report = tradeoffs_markdown(frame, model_name="mlp", config=config,
                                settings=MeasurementSettings(batch_size=1, threads=1, warmup=5, repeats=3), notes=notes)
    assert "batch size 1, 1 intra-op thread(s), 5 warm-up run(s) then 3 timed run(s)" in report
    table_rows = [line for line in report.splitlines() if line.startswith("| ") and "variant" not in line]
    assert len(table_rows) == len(frame)
    config_json = report.split("```json\n")[1].split("\n```")[0]
    assert QuantConfig.from_dict(json.loads(config_json)) == config
    assert tradeoffs_csv(frame).decode().count("\n") == len(frame) + 1


def test_the_pareto_front_keeps_the_points_nothing_beats_on_cost_and_value():
    from ui.engine_figures import pareto_front

    cost = [1.0, 2.0, 3.0, 2.0, 0.5, float("nan")]
    value = [0.5, 0.9, 0.8, 0.9, 0.1, 1.0]
    # 3.0/0.8 is beaten by 2.0/0.9; the two 2.0/0.9 tie and both stay; NaN never counts.
    assert pareto_front(cost, value) == [True, True, False, True, True, False]

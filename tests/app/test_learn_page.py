"""The Learn page: seven lessons, each with text, a live chart that follows its widgets, and one question."""
from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.qparams import qparams_from_range
from tests.app.conftest import ROOT, texts
from ui.lessons import LESSONS, lesson_titles
from ui.lessons.scale_zero_point import EXAMPLE

PAGE = "pages/12_Learn.py"


def open_lesson(title: str) -> AppTest:
    """Start the app on its landing page, switch to Learn (so page links resolve) and pick a lesson."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page(PAGE).run()
    at.radio(key="lesson").set_value(title).run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def chart_json(at: AppTest) -> str:
    charts = at.get("plotly_chart")
    assert len(charts) == 1, f"each lesson draws one live chart, found {len(charts)}"
    return charts[0].proto.spec


def widget(at: AppTest, key: str):
    for kind in ("slider", "select_slider", "radio", "selectbox", "multiselect", "checkbox"):
        for element in at.get(kind):
            if element.key == key:
                return element
    raise KeyError(key)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def links(at: AppTest) -> list[str]:
    return [link.proto.page for link in at.get("page_link")]


def test_the_page_lists_nine_lessons_and_opens_on_the_first():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert at.radio(key="lesson").options == lesson_titles()
    assert len(LESSONS) == 9
    assert at.radio(key="lesson").value == lesson_titles()[0]
    assert "Question." in texts(at)


def test_the_chosen_lesson_is_still_open_after_visiting_another_page():
    at = open_lesson(lesson_titles()[4])
    at.switch_page("pages/1_Weights.py").run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert at.radio(key="lesson").value == lesson_titles()[4]


# (lesson index, widget key, new value): one widget per lesson whose change must redraw the chart.
CHANGES = [
    (0, "l1_bits", 6),
    (1, "l2_threshold", 2.0),
    (2, "l3_bits", 8),
    (3, "l4_formats", ["int8", "fp8_e4m3fn"]),
    (4, "l5_brightness", 0.3),
    (5, "l6_bits", [3]),
    (6, "l7_keep", 3),
]


@pytest.mark.parametrize("index, key, value", CHANGES, ids=[f"lesson{i + 1}" for i, _, _ in CHANGES])
def test_each_lesson_renders_asks_a_question_links_a_page_and_its_chart_follows_a_widget(index, key, value):
    at = open_lesson(lesson_titles()[index])
    shown = texts(at)
    assert "Question." in shown
    assert at.expander, "the computed answer sits behind an expander"
    assert links(at), "each lesson links to one of the tool's pages"
    before = chart_json(at)
    widget(at, key).set_value(value).run()
    assert_clean(at)
    assert chart_json(at) != before


def test_lesson1_fills_the_formula_with_the_labs_own_scale_and_zero_point():
    at = open_lesson(lesson_titles()[0])
    widget(at, "l1_bits").set_value(8).run()
    widget(at, "l1_range").set_value((-0.5, 1.5)).run()
    scale, zero_point = qparams_from_range(-0.5, 1.5, NumberFormat(FormatKind.UINT, 8), symmetric=False)
    assert metric(at, "scale") == f"{float(scale):.5g}"
    assert metric(at, "zero point") == str(int(zero_point))
    assert metric(at, "integer grid") == "[0, 255]"
    formula = at.latex[-1].value
    assert f"{float(scale):.5g}" in formula and f"{EXAMPLE[-1]:.4f}" in formula

    widget(at, "l1_scheme").set_value("symmetric (int)").run()
    assert metric(at, "zero point") == "0"
    assert metric(at, "integer grid") == "[-128, 127]"


def test_lesson1_error_stays_within_half_a_step_until_values_are_clipped():
    at = open_lesson(lesson_titles()[0])
    table = at.dataframe[0].value
    assert not table["clipped"].any()
    scale = float(metric(at, "scale"))
    assert table["error"].max() <= scale / 2 + 1e-6
    widget(at, "l1_range").set_value((-0.41, 1.0)).run()
    table = at.dataframe[0].value
    assert table["clipped"].tolist() == [False] * (len(EXAMPLE) - 1) + [True]  # only the outlier 1.62
    assert table["error"].iloc[-1] > 0.5  # it lands on about 1.0
    assert table["error"].iloc[:-1].max() <= float(metric(at, "scale")) / 2 + 1e-6


def test_lesson2_small_thresholds_clip_and_large_ones_round():
    at = open_lesson(lesson_titles()[1])
    widget(at, "l2_threshold").set_value(0.5).run()
    tight_rounding, tight_clipping = float(metric(at, "rounding error (MSE)")), float(metric(at, "clipping error (MSE)"))
    widget(at, "l2_threshold").set_value(widget(at, "l2_threshold").max).run()
    wide_rounding, wide_clipping = float(metric(at, "rounding error (MSE)")), float(metric(at, "clipping error (MSE)"))
    assert tight_clipping > tight_rounding
    assert wide_clipping == 0.0
    assert wide_rounding > tight_rounding
    best = float(metric(at, "best T"))
    assert 0.5 < best < widget(at, "l2_threshold").max


def test_lesson3_per_channel_weights_keep_the_cnn_accurate_where_per_tensor_does_not():
    at = open_lesson(lesson_titles()[2])
    widget(at, "l3_view").set_value("weight: per-tensor vs per-channel").run()
    widget(at, "l3_bits").set_value(8).run()
    table = at.dataframe[0].value.set_index("choice")
    per_tensor, per_channel = table.loc["per-tensor int8"], table.loc["per-channel int8"]
    assert per_channel["usable levels"] > 2 * per_tensor["usable levels"]
    assert per_channel["model accuracy"] > per_tensor["model accuracy"]

    widget(at, "l3_view").set_value("activation: symmetric vs asymmetric").run()
    table = at.dataframe[0].value.set_index("choice")
    assert table.loc["symmetric int8", "usable levels"] <= 129  # a ReLU output never uses the negative half
    assert table.loc["asymmetric uint8", "usable levels"] == 256


def test_lesson4_table_is_measured_for_every_format_on_every_demo_model():
    at = open_lesson(lesson_titles()[3])
    table = at.dataframe[0].value.set_index("format")
    assert list(table.index) == ["INT8", "INT4", "FP16", "BF16", "FP8 E4M3", "FP8 E5M2", "binary", "ternary"]
    assert table.loc["INT8", "storage bits"] == 8 and table.loc["binary", "storage bits"] == 1
    assert table.loc["INT8", "bits / weight"] > 8  # the per-channel scales cost something
    assert 1.0 < table.loc["FP16", "mlp size"] <= 2.0
    assert table.loc["INT8", "mlp size"] > table.loc["FP16", "mlp size"]
    assert table.loc["INT8", "weight SQNR (dB)"] > table.loc["INT4", "weight SQNR (dB)"] + 18
    for model in ("mlp", "cnn", "transformer"):
        drops = table[f"{model} drop (points)"]
        assert drops["binary"] > drops["INT8"]


def test_lesson5_fainter_calibration_images_cost_accuracy_that_representative_ones_do_not():
    at = open_lesson(lesson_titles()[4])
    widget(at, "l5_brightness").set_value(0.3).run()
    representative = float(metric(at, "static, representative").rstrip("%"))
    skewed = float(metric(at, "static, skewed").rstrip("%"))
    assert skewed < representative
    assert "loses most" in texts(at)


def test_lesson6_fine_tune_button_adds_qat_that_beats_ptq_at_the_lowest_bit_width():
    at = open_lesson(lesson_titles()[5])
    assert not at.dataframe
    at.button(key="l6_run").click().run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("bits")
    assert list(table.index) == [4, 3, 2]
    assert table.loc[2, "QAT"] > table.loc[2, "PTQ"]
    assert table.loc[2, "QAT"] > table.loc[2, "FP32 fine-tune, then PTQ"]
    assert "QAT" in chart_json(at) and "training loss" in chart_json(at)


def test_lesson7_keeping_the_most_sensitive_layers_at_int8_recovers_accuracy():
    at = open_lesson(lesson_titles()[6])
    widget(at, "l7_model").set_value("cnn").run()
    widget(at, "l7_bits").set_value(4).run()
    widget(at, "l7_keep").set_value(0).run()
    table = at.dataframe[0].value.set_index("config")
    assert table.loc["mixed: 0 kept at int8", "accuracy"] == pytest.approx(table.loc["all int4", "accuracy"])
    widget(at, "l7_keep").set_value(1).run()
    table = at.dataframe[0].value.set_index("config")
    assert table.loc["mixed: 1 kept at int8", "accuracy"] > table.loc["all int4", "accuracy"] + 0.5
    assert table.loc["mixed: 1 kept at int8", "size (KiB)"] < table.loc["all int8", "size (KiB)"]
    assert np.isfinite(table["accuracy"]).all()


def test_the_equalization_lesson_recovers_per_tensor_int8_at_full_strength():
    at = open_lesson("8 · Equalization (CLE)")
    before = float(metric(at, "Static INT8 (per-tensor) accuracy").rstrip("%"))
    widget(at, "l8_strength").set_value(1.0).run()
    assert_clean(at)
    after = float(metric(at, "Static INT8 (per-tensor) accuracy").rstrip("%"))
    assert before < 50 and after > 98
    assert "1.5×" in metric(at, "conv1 range spread")
    chart_json(at)


def test_lesson4_offers_the_block_formats_measured_like_the_others():
    at = open_lesson(lesson_titles()[3])
    at.multiselect(key="l4_formats").set_value(["int4", "mxfp4", "nvfp4", "mxfp8_e4m3"]).run()
    assert not at.exception, [e.message for e in at.exception]
    table = at.dataframe[0].value.set_index("format")
    assert list(table.index) == ["INT4", "MXFP4", "NVFP4", "MXFP8 E4M3"]
    assert table.loc["MXFP4", "storage bits"] == 4 and table.loc["MXFP4", "bits / weight"] >= 4.25
    assert table.loc["MXFP8 E4M3", "weight SQNR (dB)"] > table.loc["MXFP4", "weight SQNR (dB)"] + 8


@pytest.mark.slow
def test_the_group_wise_lesson_compares_rtn_and_awq_on_the_shipped_language_model():
    at = open_lesson(lesson_titles()[8])
    assert_clean(at)
    labels = [metric.label for metric in at.metric]
    assert labels == ["Output error, RTN", "Output error, AWQ", "Largest / median mean|x|"]
    assert "vs RTN" in at.metric[1].delta
    at.select_slider(key="l9_group").set_value(32).run()
    assert_clean(at)
    assert [chart.key for chart in at.get("plotly_chart")] == ["l9_chart"]

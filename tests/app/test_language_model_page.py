"""The Language model page: on the shipped LM, perplexity of a weight-only method beside FP32's and the
greedy generations side by side; on another model, one line saying what it needs."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "8_Language_model.py")


def _page(model: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    return at


def test_on_a_digits_model_the_page_says_it_needs_a_language_model_and_charts_its_largest_weight():
    at = _page("mlp")
    assert not at.exception and not at.error
    assert "Perplexity and generation need a language model" in at.info[0].value
    assert [chart.key for chart in at.get("plotly_chart")] == ["lm_weight_chart"]


@pytest.mark.slow
def test_on_the_shipped_lm_it_shows_perplexity_and_both_generations():
    at = _page("shakespeare_lm")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric[0].label == "Perplexity (RTN int3 g128 sym)"          # opens on RTN int3, no calibration
    at.selectbox(key="lm_block").set_value(32)
    at.slider(key="lm_steps").set_value(40)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [metric.label for metric in at.metric]
    assert labels[0] == "Perplexity (RTN int3 g32 sym)" and "vs FP32" in at.metric[0].delta
    assert [code.value.startswith(at.text_area(key="lm_prompt").value) for code in at.code] == [True, True]

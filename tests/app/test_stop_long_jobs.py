"""Long jobs a page starts by itself show a progress bar with a Stop; once stopped, the page says so."""
from streamlit.testing.v1 import AppTest

from tests.app.conftest import ROOT, texts

MIXED = str(ROOT / "pages" / "3_Mixed_precision.py")


def _fresh_mixed_page(monkeypatch, stopped: bool) -> AppTest:
    import streamlit as st

    from ui import cache

    st.cache_resource.clear()  # no Evaluator anywhere: this is the model's first evaluation
    monkeypatch.setattr(cache, "has_evaluator", lambda ctx: False)
    monkeypatch.setattr("ui.mixed_view.job_stopped", lambda job: stopped)
    return AppTest.from_file(MIXED, default_timeout=120).run()


def test_the_first_evaluation_runs_with_a_stop_button_then_shows_the_metrics(monkeypatch):
    at = _fresh_mixed_page(monkeypatch, stopped=False)
    assert not at.exception, [e.message for e in at.exception]
    assert any(m.label == "Accuracy" for m in at.metric), "the evaluation finished"
    assert "first evaluation was stopped" not in texts(at)


def test_a_stopped_first_evaluation_says_so_and_offers_to_start_again(monkeypatch):
    at = _fresh_mixed_page(monkeypatch, stopped=True)
    assert not at.exception
    assert "The first evaluation was stopped" in texts(at)
    assert not at.metric, "nothing is evaluated after a Stop"
    assert at.button(key="mixed_resume").label == "Evaluate"


def test_stop_marks_the_job_and_resume_forgets_it():
    # The Stop button's callback (_stop_job) and the page's "start again" (resume_job), on a bare script.
    at = AppTest.from_string("""
import streamlit as st
from ui import jobs
job = ("demo", "model", "data")
if st.session_state.get("press_stop"):
    jobs._stop_job(job)
st.write("stopped" if jobs.job_stopped(job) else "running")
if st.session_state.get("press_resume"):
    jobs.resume_job(job)
    st.write("resumed" if not jobs.job_stopped(job) else "still stopped")
""").run()
    assert at.markdown[0].value == "running"
    at.session_state["press_stop"] = True
    at.run()
    assert at.markdown[0].value == "stopped"
    at.session_state["press_resume"] = True
    at.run()
    assert at.markdown[1].value == "resumed"


def _mixed_page_with_evaluator(monkeypatch, stopped_kind: str | None) -> AppTest:
    """The Mixed precision page once the model has its Evaluator (another page made it) but this session has
    evaluated no config yet; jobs whose key starts with `stopped_kind` count as stopped by the user."""
    import streamlit as st

    from ui import cache

    st.cache_data.clear()
    monkeypatch.setattr(cache, "has_evaluator", lambda ctx: True)
    monkeypatch.setattr("ui.mixed_view.job_stopped", lambda job: job[0] == stopped_kind)
    return AppTest.from_file(MIXED, default_timeout=120).run()


def test_a_config_not_evaluated_yet_runs_behind_a_stop_and_its_chart_follows_the_metrics(monkeypatch):
    at = _mixed_page_with_evaluator(monkeypatch, stopped_kind=None)
    assert not at.exception, [e.message for e in at.exception]
    assert any(m.label == "Accuracy" for m in at.metric)
    charts = at.get("plotly_chart")
    assert len(charts) == 2, "the per-layer errors, measured after the metrics, and the per-class change"
    assert "isolated" in charts[0].proto.spec.lower()


def test_a_stopped_evaluation_of_a_new_config_says_so_and_offers_to_start_again(monkeypatch):
    at = _mixed_page_with_evaluator(monkeypatch, stopped_kind="mixed_evaluation")
    assert not at.exception
    assert "The evaluation of this config was stopped" in texts(at)
    assert not at.metric, "nothing is evaluated after a Stop"
    assert at.button(key="mixed_resume").label == "Evaluate"


def test_stopped_per_layer_errors_keep_the_metrics_and_offer_to_measure_them(monkeypatch):
    at = _mixed_page_with_evaluator(monkeypatch, stopped_kind="mixed_layer_errors")
    assert not at.exception
    assert any(m.label == "Accuracy" for m in at.metric), "the metrics do not wait for the chart"
    assert "The per-layer errors were stopped" in texts(at)
    assert at.button(key="mixed_errors_resume").label == "Measure the per-layer errors"


def test_a_stopped_fp32_run_on_the_model_page_keeps_the_structure_and_offers_to_start_again(monkeypatch):
    import streamlit as st

    from ui import cache

    st.cache_resource.clear()
    monkeypatch.setattr(cache, "has_evaluator", lambda ctx: False)
    monkeypatch.setattr("ui.model_view.has_evaluator", lambda ctx: False)
    monkeypatch.setattr("ui.model_view.job_stopped", lambda job: job[0] == "model_fp32_run")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "The FP32 run was stopped" in texts(at)
    assert at.button(key="model_fp32_resume").label == "Measure the FP32 accuracy"
    assert not any("FP32 top-1 accuracy" in m.label for m in at.metric)
    assert "Size by format" in texts(at), "the structure drawn before the FP32 run stays on the page"


def test_the_model_page_measures_the_fp32_accuracy_behind_its_bar_when_not_stopped(monkeypatch):
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("FP32 top-1 accuracy" in m.label for m in at.metric)
    assert "The FP32 run was stopped" not in texts(at)

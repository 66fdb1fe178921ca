"""Sensitivity: which layers suffer most from fewer bits, and a mixed-precision config under a budget."""
import streamlit as st

from ui import sensitivity_view
from ui.setup import page_errors, setup_page

ctx = setup_page("Sensitivity")
st.title("Sensitivity")
st.caption("Quantize one layer at a time (everything else stays FP32) in each format, and measure what the "
           "model loses. Then let a greedy search choose a format per layer under a size or quality budget (a language model: a perplexity increase).")

if ctx.evaluation_data is None:
    st.info("The sweep measures accuracy: upload a .npz with the model's inputs in the sidebar.")
    st.stop()

evaluator, baseline = sensitivity_view.load_evaluator(ctx)

st.subheader("Per-layer sweep")
sensitivity_view.start_default_sweep(ctx, evaluator)  # first visit of a small model: the default sweep
sensitivity_view.sweep_controls(ctx, evaluator)
with page_errors("the sweep"):
    job = sensitivity_view.run_pending(ctx, evaluator)
    if job is not None and job.rows:
        sensitivity_view.show_sweep(ctx, job, baseline)
        sensitivity_view.apply_cell_controls(ctx, evaluator, job)
    else:
        if job is not None and job.finished:
            st.caption("The sweep stopped before any layer finished: press Run sweep to start again.")
        sensitivity_view.show_placeholder(ctx, evaluator, baseline)

st.subheader("Mixed-precision suggestion")
sensitivity_view.budget_controls(baseline, ctx.task)
sensitivity_view.suggestion_button(ctx, baseline)
with page_errors("the suggestion"):
    suggestion = sensitivity_view.run_suggestion(ctx, evaluator, baseline)
    if suggestion is not None:
        sensitivity_view.show_suggestion(suggestion, baseline)

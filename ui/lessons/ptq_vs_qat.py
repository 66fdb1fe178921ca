"""Lesson 6: post-training quantization against quantization-aware fine-tuning, live, on the demo MLP."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from quant_core.learn.qat import Dense, evaluate_numpy_mlp, fine_tune_qat, mlp_weights
from ui import cache
from ui.jobs import heavy_job, streamlit_notice
from ui.lessons._common import COLORS, demo_context, question, show_figure, try_on_page

TITLE = "6 · PTQ against QAT"
BITS, EPOCHS, RUN = "l6_bits", "l6_epochs", "l6_run"
BIT_CHOICES = (4, 3, 2)
LEARNING_RATE = 1e-3
SEED = 0
_RUNS = "_l6_runs"  # session state: finished fine-tunes, keyed by (bits, epochs)


@dataclass(frozen=True)
class QatRun:
    """One finished fine-tune: accuracies on the evaluation split and the loss per epoch."""
    bits: int
    epochs: int
    ptq_accuracy: float  # the shipped weights rounded
    tuned_ptq_accuracy: float  # fine-tuned in FP32 on the same data, then rounded (the fair control)
    qat_accuracy: float  # fine-tuned through the rounding
    losses: tuple[float, ...]
    seconds: float


@st.cache_resource(max_entries=2, show_spinner=False)
def _weights(model_key: str, _model_bytes: bytes) -> tuple[Dense, ...]:
    return mlp_weights(_model_bytes)


def ptq_accuracies(weights, evaluation, bits: list[int]) -> dict[int | None, float]:
    """Accuracy of the float MLP (key None) and of its weights rounded to each bit width (no training)."""
    return {b: evaluate_numpy_mlp(weights, evaluation, bits=b) for b in [None, *bits]}


def run_fine_tunes(weights, train, evaluation, bits: list[int], epochs: int, ptq: dict) -> list[QatRun]:
    """Fine-tune in FP32 once (the control), then once per bit width, with one progress bar for the whole job."""
    bar = st.progress(0.0, text="Starting the fine-tunes…")
    jobs = [None, *bits]
    results = {}
    for index, b in enumerate(jobs):
        def progress(fraction: float, text: str, index=index) -> None:
            bar.progress(min(1.0, (index + fraction) / len(jobs)), text=text)

        results[b] = fine_tune_qat(weights, train, bits=b, epochs=epochs, lr=LEARNING_RATE, seed=SEED,
                                   progress=progress)
    bar.empty()
    tuned = results[None].weights
    return [QatRun(b, epochs, ptq[b], evaluate_numpy_mlp(tuned, evaluation, bits=b),
                   evaluate_numpy_mlp(results[b].weights, evaluation, bits=b), results[b].losses,
                   results[b].seconds) for b in bits]


def figure(ptq: dict, runs: dict[int, QatRun], bits: list[int]) -> go.Figure:
    """Left: accuracy after PTQ and after QAT per bit width. Right: the training loss of each QAT run."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45],
                        subplot_titles=("accuracy on the evaluation split", "QAT training loss (cross-entropy)"))
    labels = [f"{b}-bit" for b in bits]
    fig.add_trace(go.Bar(x=labels, y=[ptq[b] for b in bits], name="PTQ (round the trained weights)",
                         marker_color=COLORS["ptq"], hovertemplate="%{x} PTQ: %{y:.2%}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[runs[b].tuned_ptq_accuracy if b in runs else None for b in bits],
                         name="FP32 fine-tune on the same data, then round", marker_color="#E9A23B",
                         hovertemplate="%{x} fine-tuned in FP32, then rounded: %{y:.2%}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=labels, y=[runs[b].qat_accuracy if b in runs else None for b in bits],
                         name="QAT (fine-tuned with fake quantization)", marker_color=COLORS["qat"],
                         hovertemplate="%{x} QAT: %{y:.2%}<extra></extra>"), 1, 1)
    fig.add_trace(go.Scatter(x=labels, y=[ptq[None]] * len(bits), mode="lines", name="FP32",
                             line=dict(color=COLORS["fp32"], dash="dash")), 1, 1)
    for b in bits:
        if b in runs:
            losses = runs[b].losses
            fig.add_trace(go.Scatter(x=list(range(1, len(losses) + 1)), y=losses, mode="lines+markers",
                                     name=f"loss, {b}-bit", marker=dict(size=4)), 1, 2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_layout(barmode="group", height=380)
    return fig


def render(ctx) -> None:
    st.markdown(
        "**Post-training quantization (PTQ)** rounds the weights of a trained network: no training, but at 2–4 bits "
        "the rounding error is large. **Quantization-aware training (QAT)** fine-tunes the network *with* the "
        "rounding in the forward pass, so the weights learn to sit where rounding hurts least. Rounding has no "
        "useful gradient (it is flat almost everywhere), so the backward pass pretends it is the identity: the "
        "*straight-through estimator* (Bengio et al., 2013). Below, the demo MLP is fine-tuned live in numpy (Adam, fixed seed) on the "
        "calibration split and scored on the evaluation split, which it never trains on.")
    demo = demo_context("mlp", ctx)
    model_bytes, _, _ = cache.demo_source("mlp")
    weights = _weights(demo.model_key, model_bytes)
    train, evaluation = demo.calibration_data, demo.evaluation_data

    controls, chart = st.columns([1, 3])
    with controls:
        bits = sorted(st.multiselect("Weight bits", BIT_CHOICES, default=list(BIT_CHOICES), key=BITS), reverse=True)
        epochs = st.slider("Epochs", 5, 60, 30, step=5, key=EPOCHS)
        clicked = st.button("Fine-tune (QAT)", key=RUN, type="primary", disabled=not bits)
        st.caption(f"Train: {train.num_samples} calibration digits · evaluate: {evaluation.num_samples} others. "
                   "Weights per output channel, symmetric, min-max.")
    if not bits:
        st.info("Pick at least one bit width.")
        return
    ptq = ptq_accuracies(weights, evaluation, bits)
    runs = st.session_state.setdefault(_RUNS, {})
    if clicked:
        todo = [b for b in bits if (b, epochs) not in runs]
        if todo:
            with heavy_job("the QAT fine-tune", notify=streamlit_notice()):
                for run in run_fine_tunes(weights, train, evaluation, todo, epochs, ptq):
                    runs[(run.bits, run.epochs)] = run
    shown = {b: runs[(b, epochs)] for b in bits if (b, epochs) in runs}
    with chart:
        show_figure(figure(ptq, shown, bits), key="l6_chart")

    if shown:
        table = pd.DataFrame([{"bits": r.bits, "FP32": ptq[None], "PTQ": r.ptq_accuracy,
                               "FP32 fine-tune, then PTQ": r.tuned_ptq_accuracy, "QAT": r.qat_accuracy,
                               "QAT − PTQ (points)": 100 * (r.qat_accuracy - r.ptq_accuracy),
                               "QAT training time (s)": r.seconds} for r in shown.values()])
        percent = "{:.1%}"
        st.dataframe(table.style.format({"FP32": percent, "PTQ": percent, "FP32 fine-tune, then PTQ": percent,
                                         "QAT": percent, "QAT − PTQ (points)": "{:+.1f}",
                                         "QAT training time (s)": "{:.2f}"}),
                     hide_index=True, width="stretch")
    else:
        st.info("The orange bars are measured now: the trained weights simply rounded. "
                "Press **Fine-tune (QAT)** to train and add the green bars.")

    lowest = min(bits)
    if lowest in shown:
        gain = shown[lowest].qat_accuracy - shown[lowest].ptq_accuracy
        run = shown[lowest]
        answer = (f"At {lowest} bits PTQ scores {ptq[lowest]:.1%} and QAT {run.qat_accuracy:.1%} "
                  f"({100 * gain:+.1f} points, FP32: {ptq[None]:.1%}). Part of any gain is just the extra "
                  f"{train.num_samples} training digits: fine-tuning in FP32 on them and *then* rounding gives "
                  f"{run.tuned_ptq_accuracy:.1%}, so training *through* the rounding is worth "
                  f"{100 * (run.qat_accuracy - run.tuned_ptq_accuracy):+.1f} points by itself. The fewer the bits, the "
                  "bigger the rounding error PTQ must live with, and the more QAT wins back; at 4 bits, PTQ is "
                  "often good enough to skip training.")
    else:
        answer = ("PTQ alone: " + ", ".join(f"{b}-bit {ptq[b]:.1%}" for b in bits) +
                  f" (FP32 {ptq[None]:.1%}). Run the fine-tune to see how much QAT wins back.")
    question("At which bit width does QAT help the most, and is it worth training at 4 bits?", answer)
    try_on_page("pages/3_Mixed_precision.py", "See what PTQ does layer by layer: the Mixed precision page")

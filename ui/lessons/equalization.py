"""Lesson 8: cross-layer equalization on the demo CNN — one per-tensor grid for channels 250x apart."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.export.latency import static_int8_config
from quant_core.methods.cle import partially_equalized
from quant_core.methods.graph import Graph
from ui.jobs import heavy_job
from ui.lessons._common import cached_spec, demo_context, question, show_figure, try_on_page

TITLE = "8 · Equalization (CLE)"
STRENGTH, WEIGHTS = "l8_strength", "l8_weights"
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
FIRST, SECOND = "/conv1/Conv", "/conv2/Conv"


@st.cache_resource(max_entries=len(STRENGTHS) * 2, show_spinner=False)
def measured(model_key: str, strength: float, per_channel: bool, _ctx) -> dict:
    """conv1's per-channel weight ranges and the static INT8 accuracy of the CNN equalized to `strength`."""
    with heavy_job("the equalization lesson"):
        prepared = partially_equalized(_ctx.prepared, strength)
        evaluator = Evaluator(prepared, calibrate(prepared, _ctx.calibration_data), _ctx.evaluation_data)
        result = evaluator.evaluate(static_int8_config(prepared, per_channel=per_channel))
    graph = Graph(prepared)
    layer = graph.linear_layers()[FIRST]
    ranges = layer.out_ranges(graph.array(layer.weight))
    return {"ranges": ranges, "accuracy": result.accuracy, "fp32": evaluator.fp32_accuracy}


def figure(ranges: np.ndarray, strength: float) -> go.Figure:
    step = float(ranges.max()) / 127.5  # one step of the per-tensor int8 grid, symmetric
    frame = pd.DataFrame({"channel": np.arange(len(ranges)), "range": ranges})
    fig = go.Figure(go.Bar(x=frame["channel"], y=frame["range"], name="max |w| of the channel",
                           marker_color=["#D8572A" if r < 8 * step else "#2E6FD8" for r in ranges],
                           hovertemplate="channel %{x}: %{y:.3g}<extra></extra>"))
    fig.add_hline(y=step, line_dash="dot", line_color="#222222",
                  annotation_text="one per-tensor int8 step", annotation_position="top left")
    fig.update_layout(title=f"conv1 weight range per output channel, equalization strength {strength:g} "
                            "(orange: under 8 grid steps)", yaxis_type="log", yaxis_title="max |w|",
                      xaxis_title="output channel", height=420, showlegend=False)
    return fig


def render(ctx) -> None:
    st.markdown(
        "The demo CNN was trained with conv1's output channels scaled from 1/16 to 16 and conv2's inputs by the "
        "inverse: the function is the same, but conv1's per-channel weight ranges now span **250×**. One "
        "per-tensor int8 grid sized for the largest channel leaves the smallest with a handful of levels. "
        "Because ReLU commutes with a positive scale (relu(s·x) = s·relu(x)), you may divide conv1's channel c "
        "by s and multiply conv2's input channel c by s without changing the model: **cross-layer equalization** "
        "(Nagel et al., 2019) picks s so both layers' ranges meet in the middle.")
    controls, chart = st.columns([1, 3])
    with controls:
        strength = st.select_slider("Equalization strength (s raised to this power)", STRENGTHS, value=0.0,
                                    key=STRENGTH)
        weights = st.radio("Weights", ("per-tensor", "per-channel"), key=WEIGHTS)
    demo = demo_context("cnn", ctx)
    with st.spinner("Equalizing, calibrating and evaluating static INT8…"):
        found = measured(demo.model_key, strength, weights == "per-channel", demo)
    with controls:
        st.metric(f"Static INT8 ({weights}) accuracy", f"{found['accuracy']:.1%}",
                  delta=f"{100 * (found['accuracy'] - found['fp32']):+.1f} pp vs FP32")
        st.metric("conv1 range spread", f"{found['ranges'].max() / found['ranges'].min():.1f}×")
    with chart:
        spec = cached_spec("l8", (demo.model_key, strength), lambda: figure(found["ranges"], strength))
        show_figure(spec, key="l8_chart")
    question(
        "How much equalization does per-tensor INT8 need to come back within a point of FP32? Does "
        "per-channel INT8 need it?",
        f"At strength {strength:g} with {weights} weights the CNN keeps {found['accuracy']:.1%} (FP32 "
        f"{found['fp32']:.1%}); conv1's channels span {found['ranges'].max() / found['ranges'].min():.1f}×. "
        "Per-channel weights give each channel its own grid, so they need no equalization for the weights — "
        "but conv2's *input activation* still has per-channel ranges 250× apart on one per-tensor activation "
        "grid, and equalization fixes that too (that is why per-channel rises as well).")
    try_on_page("pages/7_Recovery.py", "Apply CLE (and the other methods) to your own model: the Recovery page")

"""Lesson 9: group-wise weight quantization and outlier input channels (why AWQ protects a few), on the shipped LM."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from quant_core.engine.language_model import collect_layer_inputs, matmul_layers
from quant_core.model.demo import load_demo
from quant_core.model.model_io import load_model
from quant_core.numerics.weight_only import awq, rtn
from ui.jobs import heavy_job
from ui.lessons._common import cached_spec, question, show_figure, try_on_page

TITLE = "9 · Groups and outlier channels (AWQ)"
LAYER, BITS, GROUP = "l9_layer", "l9_bits", "l9_group"
LAYERS = {"block 0, fc2 (reads GELU)": "/blocks/blocks.0/fc2/MatMul",
          "block 0, fc1 (reads LayerNorm)": "/blocks/blocks.0/fc1/MatMul",
          "block 3, attention out": "/blocks/blocks.3/attn/out/MatMul"}
WINDOWS = 16   # calibration windows of 128 tokens: 2,048 input rows per layer


@st.cache_resource(max_entries=4, show_spinner=False)
def layer_data(layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight [K, N], calibration inputs [rows, K], mean |x| per input channel) of one MatMul of the shipped LM."""
    with heavy_job("the group-wise lesson"):
        model_bytes, data = load_demo("shakespeare_lm")
        model = load_model(model_bytes)
        weights = {init.name: init for init in model.graph.initializer}
        from onnx import numpy_helper
        w = numpy_helper.to_array(weights[matmul_layers(model)[layer]]).astype(np.float32)
        inputs = collect_layer_inputs(model, data.inputs["tokens"][:WINDOWS], layers={layer: matmul_layers(model)[layer]})
    return w, inputs[layer].sample, inputs[layer].mean_abs


@st.cache_data(max_entries=32, show_spinner=False)
def measured(layer: str, bits: int, group: int) -> dict:
    """Per-input-channel error x-weighted (RTN and AWQ) and the layer's relative output error of each."""
    w, x, mean = layer_data(layer)
    reference = x @ w
    power = float(np.mean(reference ** 2))
    found = {"mean": mean}
    for name, quantized in (("RTN", rtn(w, bits=bits, block_size=group)),
                            ("AWQ", awq(w, x, bits=bits, block_size=group, activation_mean=mean))):
        effective = quantized.effective_weight()
        # What input channel k feeds into the output error: mean|x_k| times its weight row's error.
        found[name] = mean * np.sqrt(np.mean((w - effective) ** 2, axis=1))
        found[name + " error"] = float(np.mean((x @ effective - reference) ** 2)) / power
    return found


def figure(found: dict, bits: int, group: int) -> go.Figure:
    channels = np.arange(len(found["mean"]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("mean |x| per input channel (calibration windows)",
                                        f"error each input channel feeds the output, int{bits} g{group}"))
    fig.add_bar(x=channels, y=found["mean"], name="mean |x|", marker_color="#888888", row=1, col=1)
    fig.add_scatter(x=channels, y=found["RTN"], mode="lines", name="RTN", line=dict(color="#D8572A"), row=2, col=1)
    fig.add_scatter(x=channels, y=found["AWQ"], mode="lines", name="AWQ", line=dict(color="#2A9D55"), row=2, col=1)
    fig.update_yaxes(title_text="mean |x|", row=1, col=1)
    fig.update_yaxes(title_text="mean|x_k| · rms error of row k", row=2, col=1)
    fig.update_xaxes(title_text="input channel k", row=2, col=1)
    fig.update_layout(height=560)
    return fig


def render(ctx) -> None:
    st.markdown(
        "A 4-bit language model stores each weight column in **groups** of 32–128 input rows, each with its own "
        "scale: smaller groups follow the weights more closely and cost more scales. The *error that reaches the "
        "output*, though, is weighted by the inputs: a row k of W meets input channel x_k, and a few channels are "
        "much larger than the rest (**outlier channels**). **AWQ** (Lin et al., 2024) multiplies those rows by "
        "s_k = mean|x_k|^α before rounding and divides the input by s_k: the outlier rows get finer steps, the "
        "others slightly coarser, and α is searched on the layer's output error. On the shipped Shakespeare LM:")
    controls, chart = st.columns([1, 3])
    with controls:
        layer = LAYERS[st.selectbox("Layer", list(LAYERS), key=LAYER)]
        bits = st.select_slider("Bits", (3, 4, 8), value=4, key=BITS)
        group = st.select_slider("Group size (input rows per scale)", (32, 64, 128), value=128, key=GROUP)
    with st.spinner("Collecting the layer's inputs and quantizing…"):
        found = measured(layer, bits, group)
    spread = float(found["mean"].max() / np.median(found["mean"]))
    with controls:
        st.metric("Output error, RTN", f"{found['RTN error']:.2e}")
        st.metric("Output error, AWQ", f"{found['AWQ error']:.2e}",
                  delta=f"{100 * (found['AWQ error'] / found['RTN error'] - 1):+.1f} % vs RTN", delta_color="inverse")
        st.metric("Largest / median mean|x|", f"{spread:.1f}×")
    with chart:
        spec = cached_spec("l9", (layer, bits, group), lambda: figure(found, bits, group))
        show_figure(spec, key="l9_chart")
    question(
        "Which layer gains most from AWQ, and does a smaller group size help AWQ or make it unnecessary?",
        f"Here (int{bits}, groups of {group}) the largest input channel is {spread:.1f}× the median, and AWQ "
        f"changes the output error by {100 * (found['AWQ error'] / found['RTN error'] - 1):+.1f} % against RTN. "
        "AWQ helps where a few channels stand out (compare the layers' top charts): the GELU output feeding fc2 "
        "has more outliers than a LayerNorm output with near-uniform gains. Smaller groups lower both errors "
        "(each scale covers fewer rows), so AWQ's margin usually shrinks as the groups get smaller.")
    try_on_page("pages/8_Language_model.py", "Perplexity and generation per method: the Language model page")

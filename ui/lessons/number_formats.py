"""Lesson 4: number formats side by side — where their values fall, what they cost, what they lose."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from quant_core.numerics.axes import resolved
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.floats import FLOAT_SPECS
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, parse_format
from quant_core.numerics.metrics import sqnr_db
from quant_core.numerics.mx import element_grid, quantize_blocks
from quant_core.model.model_io import weight_array
from quant_core.numerics.tensor import quantize_tensor
from quant_core.numerics.size import bits_per_parameter
from ui.cache import evaluate_cached, get_evaluator
from ui.lessons._common import cached_spec, demo_context, question, show_figure, try_on_page

TITLE = "4 · Number formats side by side"
MODEL, LAYER, FORMATS = "l4_model", "l4_layer", "l4_formats"
DEFAULT_FORMATS = ("int8", "int4", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "binary", "ternary")
# Block formats (a shared scale per block of 32, NVFP4 16; simulated): offered, not shown by default.
FORMAT_NAMES = DEFAULT_FORMATS + ("mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "nvfp4")
LABELS = {"int8": "INT8", "int4": "INT4", "fp16": "FP16", "bf16": "BF16", "fp8_e4m3fn": "FP8 E4M3",
          "fp8_e5m2": "FP8 E5M2", "binary": "binary", "ternary": "ternary", "mxfp8_e4m3": "MXFP8 E4M3",
          "mxfp6_e2m3": "MXFP6 E2M3", "mxfp4": "MXFP4", "nvfp4": "NVFP4"}
DENSITY_BINS = 120
STRIP_MAX = 256  # formats with at most this many values in the range also get one tick per value
FORMAT_COLORS = ("#2E6FD8", "#D8572A", "#E377C2", "#2A9D55", "#9467BD", "#E9A23B", "#17BECF", "#444444")
DEMOS = ("mlp", "cnn", "transformer")


def weight_quant(name: str) -> TensorQuant:
    """How the lesson quantizes weights in `name`: symmetric, min-max, per output channel (each layer's natural
    axis, `quant_core.numerics.axes`)."""
    return TensorQuant(parse_format(name), symmetric=True, granularity=Granularity.PER_CHANNEL)


def _all_float_values(fmt: NumberFormat) -> np.ndarray:
    """Every finite value of a float format, sorted (FP8 and FP16 are subsets of FP16's 65536 patterns)."""
    if fmt.kind == FormatKind.BF16:
        values = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    else:
        values = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
        if fmt.kind != FormatKind.FP16:
            values = values[np.isfinite(values) & (np.abs(values) <= FLOAT_SPECS[fmt.kind].max_finite)]
            from quant_core.numerics.floats import round_to_float_format
            values = round_to_float_format(values, fmt)
    return np.unique(values[np.isfinite(values)])


def representable_values(weight_row: np.ndarray, name: str) -> np.ndarray:
    """The values one output channel can take in format `name`, within the channel's [-max|w|, max|w|]."""
    row = np.asarray(weight_row, dtype=np.float32).reshape(1, -1)
    amax = float(np.abs(row).max())
    if parse_format(name).is_block:  # each block of the channel has its own scale: the union of their grids
        blocks = quantize_blocks(row, name, axis=1)
        scales = np.unique(blocks.block_scales) * np.float32(blocks.tensor_scale)
        levels = np.unique(np.concatenate([element_grid(name) * scale for scale in scales]))
        return levels[np.abs(levels) <= amax * (1 + 1e-6)]
    tq = replace(weight_quant(name), axis=0)
    quantized = quantize_tensor(row, tq, name="channel")
    fmt = tq.format
    if fmt.is_integer:
        scale, zero_point = float(quantized.scale[0]), int(quantized.zero_point[0])
        levels = scale * (np.arange(fmt.qmin, fmt.qmax + 1) - zero_point)
    elif fmt.kind in (FormatKind.FP16, FormatKind.BF16):
        levels = _all_float_values(fmt)
    elif fmt.is_float:
        levels = _all_float_values(fmt) * float(quantized.scale[0])
    elif fmt.kind == FormatKind.BINARY:
        levels = np.array([-1.0, 1.0]) * float(quantized.scale[0])
    else:
        levels = np.array([-1.0, 0.0, 1.0]) * float(quantized.scale[0])
    return levels[np.abs(levels) <= amax * (1 + 1e-6)]


def density_figure(weight_row: np.ndarray, formats: list[str], channel: int, layer: str) -> go.Figure:
    """Top: the channel's weights. Middle: how many representable values of each format fall in each bin.
    Bottom: every value of the formats with few of them (at most STRIP_MAX), one row per format."""
    amax = float(np.abs(weight_row).max())
    edges = np.linspace(-amax, amax, DENSITY_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, row_heights=[0.25, 0.45, 0.3], vertical_spacing=0.07,
                        subplot_titles=(f"weights of {layer}, output channel {channel} (its widest)",
                                        "representable values per bin (log scale)",
                                        f"every representable value (formats with at most {STRIP_MAX})"))
    counts, _ = np.histogram(weight_row, bins=edges)
    fig.add_trace(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_color="#8FA9C9", name="weights",
                         hovertemplate="%{x:.3g}: %{y} weights<extra></extra>"), 1, 1)
    strips = []
    for index, name in enumerate(formats):
        color = FORMAT_COLORS[index % len(FORMAT_COLORS)]
        levels = representable_values(weight_row, name)
        density, _ = np.histogram(levels, bins=edges)
        fig.add_trace(go.Scatter(x=centers, y=np.where(density > 0, density, np.nan), mode="lines+markers",
                                 line_shape="hvh", marker=dict(size=4, color=color), line=dict(color=color),
                                 connectgaps=False, name=f"{LABELS[name]} ({len(levels)} values)",
                                 legendgroup=name,
                                 hovertemplate=f"{LABELS[name]}: %{{y}} values near %{{x:.3g}}<extra></extra>"), 2, 1)
        if len(levels) <= STRIP_MAX:
            strips.append(LABELS[name])
            fig.add_trace(go.Scatter(x=levels, y=[LABELS[name]] * len(levels), mode="markers", legendgroup=name,
                                     marker=dict(symbol="line-ns-open", size=12, color=color), showlegend=False,
                                     hovertemplate=f"{LABELS[name]}: %{{x:.4g}}<extra></extra>"), 3, 1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=strips[::-1], row=3, col=1)
    fig.update_xaxes(title_text="weight value", row=3, col=1)
    fig.update_layout(height=460 + 26 * len(strips))
    return fig


def format_table(ctx, model: str, layer: str, weight: np.ndarray, formats: list[str]) -> pd.DataFrame:
    """Per format: bits and SQNR on one weight, the chosen model's size, and every demo model's accuracy drop.

    Accuracy drops are measured with every layer's weights in the format (per-channel where the format has a
    scale), activations FP32, on each demo's evaluation split; size counts scales, biases and other floats.
    """
    contexts = {name: (ctx if name == model else demo_context(name, ctx)) for name in DEMOS}
    fp32 = {name: get_evaluator(demo).fp32_accuracy for name, demo in contexts.items()}
    rows = []
    for name in formats:
        tq = weight_quant(name)
        layer_tq = resolved(tq, ctx.info.layer(layer), ctx.prepared.model)
        config = QuantConfig(LayerQuant(weights=tq), name=f"{name} weights")
        results = {demo_name: evaluate_cached(demo, config) for demo_name, demo in contexts.items()}
        row = {"format": LABELS[name], "storage bits": tq.format.bits,
               "bits / weight": bits_per_parameter(weight.shape, layer_tq),
               "weight SQNR (dB)": sqnr_db(weight, quantize_tensor(weight, layer_tq, name="weight").values),
               f"{model} size": results[model].fp32_size_bytes / results[model].size_bytes}
        for demo_name, result in results.items():
            row[f"{demo_name} drop (points)"] = 100 * (fp32[demo_name] - result.accuracy)
        rows.append(row)
    return pd.DataFrame(rows)


def render(ctx) -> None:
    st.markdown(
        "An **integer** format spreads its values evenly over the range. A **floating-point** format (FP16, BF16, "
        "FP8) puts many values near zero and few far away: constant *relative* precision. FP8 E4M3 spends its bits "
        "on precision, E5M2 on range (Micikevicius et al., *FP8 Formats for Deep Learning*, 2022). **Binary** and "
        "**ternary** keep only the sign (and zero) times one scale per channel. Below, one channel of a real layer; "
        "pick formats and compare.")
    controls, chart = st.columns([1, 3])
    with controls:
        model = st.selectbox("Demo model", DEMOS, key=MODEL)
        demo = demo_context(model, ctx)
        layers = _weight_layers(demo)
        layer = st.selectbox("Layer", list(layers), key=LAYER)
        formats = st.multiselect("Formats", FORMAT_NAMES, default=list(DEFAULT_FORMATS), key=FORMATS,
                                 format_func=LABELS.get)
    if not formats:
        st.info("Pick at least one format.")
        return
    weight = layers[layer]
    axis = resolved(weight_quant("int8"), demo.info.layer(layer), demo.prepared.model).axis
    rows = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)  # one row per output channel
    channel = int(np.argmax(np.abs(rows).max(axis=1)))  # the channel with the widest range
    with chart:
        spec = cached_spec("l4", (demo.model_key, layer, tuple(formats)),
                           lambda: density_figure(rows[channel], formats, channel, layer))
        show_figure(spec, key="l4_chart")

    with st.spinner("Measuring every format on the three demo models…"):
        table = format_table(demo, model, layer, weight, formats)
    st.markdown("**The precision comparison table, measured.** *bits / weight* (scales included) and *weight SQNR*: "
                f"the layer above. *{model} size*: the whole model against FP32. *… drop*: accuracy lost by each demo "
                f"model with every weight in the format (activations FP32; {demo.evaluation_data.num_samples} "
                "held-out digits each), in percentage points.")
    formats_shown = {column: "{:+.1f}" for column in table.columns if column.endswith("drop (points)")}
    formats_shown.update({"bits / weight": "{:.2f}", f"{model} size": "{:.1f}× smaller",
                          "weight SQNR (dB)": "{:.1f}"})
    st.dataframe(table.style.format(formats_shown), hide_index=True, width="stretch")
    by_sqnr = table.sort_values("weight SQNR (dB)", ascending=False)
    int8 = table[table["format"] == "INT8"]
    fp8 = table[table["format"] == "FP8 E4M3"]
    comparison = ""
    if len(int8) and len(fp8):
        int8_db, fp8_db = int8["weight SQNR (dB)"].iloc[0], fp8["weight SQNR (dB)"].iloc[0]
        why = ("most weights are of the same order as the largest, so INT8's evenly spaced steps fit them better"
               if int8_db > fp8_db else
               "a few large weights stretch the range, and FP8 keeps fine steps near zero where most weights are")
        comparison = (f" On this layer INT8 gives {int8_db:.1f} dB and FP8 E4M3 {fp8_db:.1f} dB at the same 8 bits: "
                      f"{why}.")
    question(
        "Which 8-bit format is more precise on these weights, INT8 or FP8 E4M3 — and why does the picture tell you?",
        f"Ranked by SQNR on this weight: {', '.join(by_sqnr['format'])}.{comparison} The smallest format whose "
        f"accuracy drop stays under one point on the {model} is **{_smallest_ok(table, model)}**.")
    try_on_page("pages/1_Weights.py", "Look at any layer in any format: the Weights page")


def _smallest_ok(table: pd.DataFrame, model: str) -> str:
    ok = table[table[f"{model} drop (points)"] < 1.0].sort_values("bits / weight")
    return ok["format"].iloc[0] if len(ok) else "none of them"


def _weight_layers(ctx) -> dict[str, np.ndarray]:
    """Quantizable layers with a weight of at least two dimensions, by ONNX node name."""
    found = {}
    for layer in ctx.info.quantizable_layers:
        if len(layer.weight.shape) >= 2:
            found[layer.name] = np.asarray(weight_array(ctx.prepared.model, layer.weight.name), dtype=np.float32)
    return found

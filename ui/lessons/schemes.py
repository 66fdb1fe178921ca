"""Lesson 3: symmetric against asymmetric, per-tensor against per-channel, on real layers of the demo CNN."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat
from quant_core.numerics.metrics import sqnr_db
from quant_core.model.model_io import weight_array
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.tensor import quantize_tensor
from ui.cache import get_calibration, get_evaluator
from ui.lessons._common import cached_spec, demo_context, question, show_figure, try_on_page

TITLE = "3 · Symmetric or asymmetric, per-tensor or per-channel"
BITS, VIEW = "l3_bits", "l3_view"
VIEWS = ("activation: symmetric vs asymmetric", "weight: per-tensor vs per-channel")
MODEL = "cnn"
ACTIVATION_LAYER = "/conv2/Conv"  # reads conv1's ReLU output: never negative
WEIGHT_LAYER = "/conv1/Conv"  # 16 output channels with very different ranges (BatchNorm folded in)


@dataclass(frozen=True)
class Choice:
    """One way to quantize one tensor, with its cost in codes and its measured error."""
    label: str
    config: QuantConfig
    codes_used: float  # grid levels inside the data's range (mean over channels for a weight)
    codes_total: int


def activation_choices(histogram, bits: int) -> list[Choice]:
    """The ReLU output as signed symmetric int`bits` and as unsigned asymmetric uint`bits` (min-max range)."""
    choices = []
    for label, kind, symmetric in (("symmetric int", FormatKind.INT, True), ("asymmetric uint", FormatKind.UINT, False)):
        fmt = NumberFormat(kind, bits)
        scale, zero_point = qparams_from_range(float(histogram.min), float(histogram.max), fmt, symmetric=symmetric)
        levels = float(scale) * (np.arange(fmt.qmin, fmt.qmax + 1) - int(zero_point))
        used = np.sum((levels >= histogram.min - scale / 2) & (levels <= histogram.max + scale / 2))
        tq = TensorQuant(fmt, symmetric=symmetric)
        config = QuantConfig(FP32_LAYER, ((ACTIVATION_LAYER, LayerQuant(activations=tq)),), name=label)
        choices.append(Choice(f"{label}{bits}", config, float(used), fmt.qmax - fmt.qmin + 1))
    return choices


def weight_choices(weight: np.ndarray, bits: int) -> tuple[list[Choice], dict[str, np.ndarray]]:
    """conv1's weight as symmetric int`bits` per tensor and per output channel, and per channel the number
    of grid levels inside [-max|w|, max|w|] of that channel (the codes it can actually use)."""
    fmt = NumberFormat(FormatKind.INT, bits)
    amax = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    choices, levels_per_channel = [], {}
    for label, granularity in (("per-tensor", Granularity.PER_TENSOR), ("per-channel", Granularity.PER_CHANNEL)):
        tq = TensorQuant(fmt, symmetric=True, granularity=granularity, axis=0)
        quantized = quantize_tensor(weight, tq, name="conv1 weight")
        scale = np.broadcast_to(quantized.scale, amax.shape).astype(np.float64)
        zero_point = np.broadcast_to(quantized.zero_point, amax.shape)
        q = np.arange(fmt.qmin, fmt.qmax + 1)
        values = scale[:, None] * (q[None, :] - zero_point[:, None])
        inside = np.sum(np.abs(values) <= amax[:, None] + scale[:, None] / 2, axis=1)
        levels_per_channel[label] = inside
        config = QuantConfig(FP32_LAYER, ((WEIGHT_LAYER, LayerQuant(weights=tq)),), name=label)
        choices.append(Choice(f"{label} int{bits}", config, float(inside.mean()), fmt.qmax - fmt.qmin + 1))
    return choices, levels_per_channel


def activation_figure(histogram, choices: list[Choice], bits: int) -> go.Figure:
    """The ReLU output's histogram with both grids: the symmetric one spends half its codes below zero."""
    edges, counts = histogram.edges.astype(np.float64), histogram.counts
    keep = counts > 0
    centers = ((edges[:-1] + edges[1:]) / 2)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.05)
    fig.add_trace(go.Bar(x=centers[keep], y=counts[keep], width=np.diff(edges)[keep], marker_color="#8FA9C9",
                         name="calibration values", hovertemplate="%{x:.3g}: %{y} values<extra></extra>"), 1, 1)
    for row, (choice, color) in enumerate(zip(choices, ("#D8572A", "#2A9D55"))):
        fmt = choice.config.overrides[0][1].activations
        scale, zero_point = qparams_from_range(float(histogram.min), float(histogram.max), fmt.format,
                                               symmetric=fmt.symmetric)
        levels = float(scale) * (np.arange(fmt.format.qmin, fmt.format.qmax + 1) - int(zero_point))
        shown = levels[:: max(1, len(levels) // 64)]
        fig.add_trace(go.Scatter(x=shown, y=np.full(len(shown), row), mode="markers", name=
                                 f"{choice.label} levels ({int(choice.codes_used)} of {choice.codes_total} used)",
                                 marker=dict(symbol="line-ns-open", size=14, color=color),
                                 hovertemplate="level %{x:.3g}<extra></extra>"), 2, 1)
    fig.update_yaxes(type="log", title_text="count", row=1, col=1)
    fig.update_yaxes(tickvals=[0, 1], ticktext=["sym", "asym"], range=[-0.6, 1.6], row=2, col=1)
    fig.update_xaxes(title_text=f"ReLU output read by {ACTIVATION_LAYER} (calibration split)", row=2, col=1)
    fig.update_layout(height=420, bargap=0)
    return fig


def weight_figure(weight: np.ndarray, used: dict[str, np.ndarray], bits: int) -> go.Figure:
    """Top: each output channel's largest |w|. Bottom: how many grid levels fall inside each channel's range."""
    rows = weight.reshape(weight.shape[0], -1)
    channels = np.arange(len(rows))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"largest |w| per output channel of {WEIGHT_LAYER}",
                                        f"int{bits} levels inside each channel's range (of {2 ** bits})"))
    fig.add_trace(go.Bar(x=channels, y=np.abs(rows).max(axis=1), marker_color="#8FA9C9", name="max |w|",
                         hovertemplate="channel %{x}: max |w| = %{y:.3g}<extra></extra>"), 1, 1)
    for label, color in (("per-tensor", "#D8572A"), ("per-channel", "#2A9D55")):
        fig.add_trace(go.Bar(x=channels, y=used[label], marker_color=color, name=f"{label}: usable levels",
                             hovertemplate=f"channel %{{x}}: %{{y}} levels ({label})<extra></extra>"), 2, 1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_xaxes(title_text="output channel", row=2, col=1)
    fig.update_layout(height=420, barmode="group")
    return fig


@st.cache_data(max_entries=32, show_spinner=False)
def measure(model_key: str, config_json: str, _ctx, _config: QuantConfig, layer: str) -> tuple[float, float]:
    """(isolated SQNR at the layer's output in dB, model accuracy) with only this choice applied."""
    evaluator = get_evaluator(_ctx)
    errors = {error.layer: error for error in evaluator.layer_errors(_config)}
    return errors[layer].isolated_sqnr_db, evaluator.evaluate(_config).accuracy


def render(ctx) -> None:
    st.markdown(
        "**Symmetric** quantization puts 0.0 in the middle of the integer grid; **asymmetric** shifts the grid with "
        "a zero point so it covers exactly [min, max]. A ReLU output is never negative, so a symmetric grid wastes "
        "half its codes on values that never occur. **Per-tensor** uses one scale for a whole weight; **per-channel** "
        "one per output channel. When channels have very different ranges — as in the demo CNN's first conv, whose "
        "folded BatchNorm scales channels by up to 270× — one scale is far too coarse for the small channels.")
    demo = demo_context(MODEL, ctx)
    controls, chart = st.columns([1, 3])
    with controls:
        view = st.radio("Look at", VIEWS, key=VIEW)
        bits = st.slider("Bits", 2, 8, 4, key=BITS)
    if view == VIEWS[0]:
        layer = ACTIVATION_LAYER
        tensor = demo.info.layer(layer).activation_input
        histogram = get_calibration(demo).histogram(tensor)
        choices = activation_choices(histogram, bits)
        spec = cached_spec("l3", (demo.model_key, view, bits), lambda: activation_figure(histogram, choices, bits))
    else:
        layer = WEIGHT_LAYER
        weight = np.asarray(weight_array(demo.prepared.model, demo.info.layer(layer).weight.name), dtype=np.float32)
        choices, used = weight_choices(weight, bits)
        spec = cached_spec("l3", (demo.model_key, view, bits), lambda: weight_figure(weight, used, bits))
    with chart:
        show_figure(spec, key="l3_chart")

    rows = []
    for choice in choices:
        layer_sqnr, accuracy = measure(demo.model_key, choice.config.to_json(), demo, choice.config, layer)
        rows.append({"choice": choice.label, "usable levels": choice.codes_used, "levels in the grid": choice.codes_total,
                     f"SQNR at {layer}'s output (dB)": layer_sqnr, "model accuracy": accuracy})
    if view == VIEWS[1]:
        for row, granularity in zip(rows, (Granularity.PER_TENSOR, Granularity.PER_CHANNEL)):
            tq = TensorQuant(NumberFormat(FormatKind.INT, bits), symmetric=True, granularity=granularity)
            row["SQNR on the weight (dB)"] = sqnr_db(weight, quantize_tensor(weight, tq).values)
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"usable levels": st.column_config.NumberColumn(format="%.1f"),
                                "model accuracy": st.column_config.NumberColumn(format="percent")})
    fp32 = get_fp32_accuracy(demo)
    worse, better = rows[0], rows[1]
    sqnr_key = f"SQNR at {layer}'s output (dB)"
    question(
        "How many of the grid's levels can each choice really use, and what does that cost in accuracy? At which "
        "bit width does the difference start to matter?",
        f"At {bits} bits, **{worse['choice']}** can use {worse['usable levels']:.1f} of {worse['levels in the grid']} levels "
        f"and gives {worse[sqnr_key]:.1f} dB at the layer's output ({worse['model accuracy']:.1%} accuracy); "
        f"**{better['choice']}** {better['usable levels']:.1f} and gives {better[sqnr_key]:.1f} dB "
        f"({better['model accuracy']:.1%}); FP32: {fp32:.1%}. Each extra bit is worth about 6 dB of SQNR (the "
        "uniform-quantizer rule, noise = step²/12: Bennett, *Spectra of Quantized Signals*, Bell System Technical "
        "Journal, 1948), so wasting half the levels throws away one bit of precision; the gap matters once that bit is one you cannot spare.")
    try_on_page("pages/1_Weights.py", "Compare per-tensor and per-channel on any layer: the Weights page")


def get_fp32_accuracy(ctx) -> float:
    return get_evaluator(ctx).fp32_accuracy

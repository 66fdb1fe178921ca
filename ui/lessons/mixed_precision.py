"""Lesson 7: layers differ in sensitivity; mixed precision keeps the fragile ones wide."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig
from quant_core.numerics.formats import parse_format
from quant_core.search.sensitivity import run_sweep, weight_quant
from ui.cache import evaluate_cached, get_evaluator
from ui.jobs import heavy_job
from ui.lessons._common import cached_spec, demo_context, question, show_figure, try_on_page

TITLE = "7 · Mixed precision and sensitivity"
MODEL, BITS, KEEP = "l7_model", "l7_bits", "l7_keep"
DEMOS = ("transformer", "cnn", "mlp")
ROLE_COLORS = {"first": "#D8572A", "last": "#7A3DB8", "attention": "#2E6FD8", "other": "#8FA9C9"}


def role(layer: str, layers: tuple[str, ...]) -> str:
    """first / last layer of the model, an attention projection, or other."""
    if layer == layers[0]:
        return "first"
    if layer == layers[-1]:
        return "last"
    return "attention" if "attn" in layer or "attention" in layer.lower() else "other"


@st.cache_data(max_entries=16, show_spinner=False)
def sweep(model_key: str, bits: int, _ctx) -> pd.DataFrame:
    """Accuracy with one layer's weights at int`bits` and every other layer FP32 (sensitivity.run_sweep)."""
    with heavy_job("the sensitivity sweep"):
        evaluator = get_evaluator(_ctx)
        rows = run_sweep(evaluator, [f"int{bits}"])
    layers = tuple(row.layer for row in rows)
    return pd.DataFrame({"layer": layers, "role": [role(r.layer, layers) for r in rows],
                         "accuracy": [r.accuracy for r in rows],
                         "accuracy drop (points)": [100 * (evaluator.fp32_accuracy - r.accuracy) for r in rows]})


def mixed_config(ctx, low_bits: int, keep: set[str], layers: tuple[str, ...]) -> QuantConfig:
    """Every layer's weights at int`low_bits` except those in `keep`, which stay at int8 (per-channel, min-max)."""
    session = get_evaluator(ctx).session
    choices = []
    for layer in layers:
        fmt = parse_format("int8" if layer in keep else f"int{low_bits}")
        choices.append((layer, LayerQuant(weight_quant(fmt, tuple(session.fp32_weight(layer).shape)))))
    return QuantConfig(FP32_LAYER, tuple(choices), name=f"int{low_bits}, {len(keep)} kept at int8")


def figure(table: pd.DataFrame, kept: set[str], bits: int) -> go.Figure:
    fig = go.Figure()
    for name, color in ROLE_COLORS.items():
        part = table[table["role"] == name]
        if part.empty:
            continue
        fig.add_trace(go.Bar(x=part["layer"], y=part["accuracy drop (points)"], name=f"{name} layer",
                             marker=dict(color=color, pattern_shape=["/" if layer in kept else ""
                                                                     for layer in part["layer"]]),
                             hovertemplate="%{x}: −%{y:.1f} points<extra></extra>"))
    fig.update_layout(title=f"accuracy drop with only one layer at int{bits} (hatched: kept at int8 below)",
                      yaxis_title="accuracy drop (points)", height=420,
                      xaxis=dict(categoryorder="array", categoryarray=list(table["layer"]), tickangle=-35))
    return fig


def render(ctx) -> None:
    st.markdown(
        "Not every layer suffers equally from fewer bits. A common rule of thumb says the **first** layer (it sees "
        "the raw input), the **last** (its errors go straight to the answer) and **attention** projections are the "
        "most fragile; many low-bit papers keep the first and last layers in full precision for that reason "
        "(e.g. DoReFa-Net, Zhou et al., 2016). Rather than trust it, *measure*: quantize one layer at a time and watch the accuracy — a "
        "**sensitivity sweep**. Then keep only the most sensitive layers at 8 bits: **mixed precision**.")
    controls, chart = st.columns([1, 3])
    with controls:
        model = st.selectbox("Demo model", DEMOS, key=MODEL)
        bits = st.slider("Low bit width", 2, 6, 3, key=BITS)
    demo = demo_context(model, ctx)
    with st.spinner(f"Sweeping every layer of the {model} at int{bits}…"):
        table = sweep(demo.model_key, bits, demo)
    layers = tuple(table["layer"])
    with controls:
        keep_count = st.slider("Keep the most sensitive layers at int8", 0, len(layers), min(1, len(layers)), key=KEEP)
    ranked = table.sort_values("accuracy drop (points)", ascending=False)
    kept = set(ranked["layer"].head(keep_count))
    with chart:
        spec = cached_spec("l7", (demo.model_key, bits, tuple(sorted(kept))), lambda: figure(table, kept, bits))
        show_figure(spec, key="l7_chart")


    fp32 = get_evaluator(demo).fp32_accuracy
    candidates = {f"all int{bits}": set(), f"mixed: {keep_count} kept at int8": kept, "all int8": set(layers)}
    rows = []
    for label, keep in candidates.items():
        result = evaluate_cached(demo, mixed_config(demo, bits, keep, layers))
        rows.append({"config": label, "accuracy": result.accuracy, "drop (points)": 100 * (fp32 - result.accuracy),
                     "size (KiB)": result.size_bytes / 1024, "size vs FP32": result.size_bytes / result.fp32_size_bytes})
    summary = pd.DataFrame(rows)
    st.dataframe(summary.style.format({"accuracy": "{:.1%}", "drop (points)": "{:+.1f}", "size (KiB)": "{:.1f}",
                                       "size vs FP32": "{:.1%}"}), hide_index=True, width="stretch")

    top = ranked.head(3)
    described = ", ".join(f"{layer} ({kind}, −{drop:.1f})" for layer, kind, drop
                          in zip(top["layer"], top["role"], top["accuracy drop (points)"]))
    low, mixed = rows[0], rows[1]
    question(
        "Which layers must stay wide on this model — does the rule of thumb (first, last, attention) hold? How "
        "few layers must you keep at 8 bits to get most of the accuracy back?",
        f"Most sensitive at int{bits} on the {model} demo: {described} (accuracy drop in points). Keeping "
        f"{keep_count} of {len(layers)} layers at int8 gives {mixed['accuracy']:.1%} for {mixed['size (KiB)']:.1f} KiB, "
        f"against {low['accuracy']:.1%} for {low['size (KiB)']:.1f} KiB with every layer at int{bits} "
        f"(FP32 {fp32:.1%}). The ranking is measured, not assumed: where it differs from the rule of thumb, the "
        "measurement wins.")
    try_on_page("pages/5_Sensitivity.py", "Run the full sweep on your own model: the Sensitivity page")

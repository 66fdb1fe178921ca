"""Plotly figures of the engine pages (mixed precision, sensitivity, trade-offs).

Every builder takes a tidy pandas DataFrame (one row per thing plotted) and returns a
`plotly.graph_objects.Figure`; the views turn engine results into those frames. No Streamlit here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

FRONT_COLOR = "#d62728"
POINT_COLOR = "#1f77b4"
SIMULATED_COLOR = "#7f7f7f"
_MARGIN = dict(l=10, r=10, t=40, b=10)
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def pareto_front(cost: list[float], value: list[float]) -> list[bool]:
    """Mark the points no other point beats: lower or equal cost and higher or equal value, one strictly.

    Notes
    -----
    Ties (same cost and value) are all on the front. NaN costs or values are never on it.
    """
    points = list(zip(cost, value))
    on_front = []
    for c, v in points:
        if c != c or v != v:  # NaN
            on_front.append(False)
            continue
        beaten = any(oc <= c and ov >= v and (oc < c or ov > v) for oc, ov in points if oc == oc and ov == ov)
        on_front.append(not beaten)
    return on_front


# From this many layers on, per-layer bars are drawn horizontally, one row per layer, so that every name
# stays readable (a 40-layer chart squeezed into the default height cut its labels off).
HORIZONTAL_FROM_LAYERS = 13
ROW_HEIGHT_PX = 26


def layer_error_figure(frame: pd.DataFrame) -> go.Figure:
    """Grouped bars of isolated vs accumulated SQNR (dB) per layer, in graph order.

    `frame` columns: layer, isolated_sqnr_db, accumulated_sqnr_db (and optionally simulated: bool).
    Up to `HORIZONTAL_FROM_LAYERS - 1` layers: vertical bars; more: horizontal bars, the first layer at the
    top, the chart as tall as its rows.
    """
    horizontal = len(frame) >= HORIZONTAL_FROM_LAYERS
    series = (("isolated_sqnr_db", "isolated (only this layer quantized)", "isolated"),
              ("accumulated_sqnr_db", "accumulated (all layers up to here)", "accumulated"))
    fig = go.Figure()
    for column, name, short in series:
        if horizontal:
            fig.add_bar(y=frame["layer"], x=frame[column], name=name, orientation="h",
                        hovertemplate=f"%{{y}}<br>{short} SQNR %{{x:.1f}} dB<extra></extra>")
        else:
            fig.add_bar(x=frame["layer"], y=frame[column], name=name,
                        hovertemplate=f"%{{x}}<br>{short} SQNR %{{y:.1f}} dB<extra></extra>")
    fig.update_layout(barmode="group", title="Per-layer error: SQNR of each layer's output (higher is better)",
                      margin=_MARGIN, legend=dict(orientation="h", y=-0.3))
    if horizontal:
        fig.update_layout(xaxis_title="SQNR (dB)", height=max(360, ROW_HEIGHT_PX * len(frame) + 160),
                          yaxis=dict(autorange="reversed", type="category", automargin=True),
                          legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0), margin=dict(l=10, r=10, t=90, b=10))
    else:
        fig.update_layout(yaxis_title="SQNR (dB)", xaxis_title="layer")
    return fig


def per_class_change_figure(frame: pd.DataFrame) -> go.Figure:
    """Bars of the accuracy change per class (percentage points, quantized minus FP32).

    `frame` columns: class, fp32_accuracy, accuracy, change_pp.
    """
    colors = [FRONT_COLOR if change < 0 else POINT_COLOR for change in frame["change_pp"]]
    fig = go.Figure(go.Bar(
        x=frame["class"].astype(str), y=frame["change_pp"], marker_color=colors,
        customdata=frame[["fp32_accuracy", "accuracy"]].to_numpy() * 100,
        hovertemplate="class %{x}<br>%{y:+.1f} pp (FP32 %{customdata[0]:.1f}% → %{customdata[1]:.1f}%)<extra></extra>"))
    fig.update_layout(title="Accuracy change per class vs FP32", xaxis_title="class",
                      yaxis_title="change (percentage points)", margin=_MARGIN, xaxis_type="category")
    return fig


def sensitivity_heatmap(frame: pd.DataFrame, *, value: str, label: str, higher_is_worse: bool) -> go.Figure:
    """Layer × format heatmap of one sweep column.

    `frame` is long: one row per (layer, format) with a column named `value`. Layers keep the
    order they first appear in (graph order); formats too.
    """
    layers = list(dict.fromkeys(frame["layer"]))
    formats = list(dict.fromkeys(frame["format"]))
    grid = frame.pivot(index="layer", columns="format", values=value).reindex(index=layers, columns=formats)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=formats, y=layers, colorscale="Reds" if higher_is_worse else "Reds_r",
        colorbar=dict(title=label), texttemplate="%{z:.2f}",
        hovertemplate="layer %{y}<br>format %{x}<br>" + label + " %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"Sensitivity: {label} when only one layer is quantized",
                      xaxis_title="format", yaxis_title="layer", margin=_MARGIN,
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category"),
                      height=max(320, 40 * len(layers) + 140))
    return fig


def sensitivity_placeholder(layers: list[str], formats: list[str], metric: str = "accuracy") -> go.Figure:
    """The layer × format grid of a sweep not run yet: empty cells, the axes the heatmap will have.

    Notes
    -----
    Cells are drawn as flat grey tiles marked "?" (a heatmap of NaN would draw no axes at all); the
    title says what will appear once the sweep has run.
    """
    zeros = [[0.0] * len(formats) for _ in layers]
    fig = go.Figure(go.Heatmap(z=zeros, x=formats, y=layers, showscale=False, xgap=2, ygap=2,
                               colorscale=[[0.0, "#eef0f4"], [1.0, "#eef0f4"]],
                               text=[["?"] * len(formats) for _ in layers], texttemplate="%{text}",
                               hovertemplate="layer %{y}<br>format %{x}<br>not measured yet<extra></extra>"))
    change = "perplexity increase" if metric == "perplexity" else f"{metric} drop"
    fig.update_layout(title=f"Not swept yet: each cell will show the {change} when only that layer is quantized",
                      xaxis_title="format", yaxis_title="layer", margin=_MARGIN,
                      yaxis=dict(autorange="reversed", type="category", showgrid=True),
                      xaxis=dict(type="category", showgrid=True), height=max(320, 40 * len(layers) + 140))
    return fig


def pareto_figure(frame: pd.DataFrame, *, chosen: tuple[float, float] | None = None,
                  metric: str = "accuracy", unit=None) -> go.Figure:
    """Size vs accuracy of the candidate configs of a suggestion, Pareto front highlighted.

    `frame` columns: size_kb, accuracy (the headline, 0..1), label. `chosen` is the suggestion's (size_kb,
    headline). With a perplexity `unit` (`search.budget.BudgetUnit`, a language model) the y axis is the
    perplexity itself (lower is better), not the ratio the search ranks by.
    """
    front = pareto_front(list(frame["size_kb"]), list(frame["accuracy"]))
    if unit is not None and unit.is_perplexity:
        def y_of(headline):
            return unit.fp32_perplexity + np.array([unit.from_headline(h) for h in np.atleast_1d(headline)])
        y_title, hover = "perplexity (lower is better)", "%{text}<br>%{x:.1f} KB, perplexity %{y:.3f}<extra></extra>"
    else:
        def y_of(headline):
            return np.asarray(headline, dtype=float) * 100
        y_title, hover = f"{metric} (%)", "%{text}<br>%{x:.1f} KB, %{y:.2f}%<extra></extra>"
    fig = go.Figure()
    fig.add_scatter(x=frame["size_kb"], y=y_of(frame["accuracy"]), mode="markers", name="candidate",
                    marker=dict(color=POINT_COLOR, size=8, opacity=0.6), text=frame["label"], hovertemplate=hover)
    front_rows = frame[front].sort_values("size_kb")
    fig.add_scatter(x=front_rows["size_kb"], y=y_of(front_rows["accuracy"]), mode="lines+markers",
                    name="Pareto front", line=dict(color=FRONT_COLOR, shape="hv"),
                    marker=dict(color=FRONT_COLOR, size=9), text=front_rows["label"], hovertemplate=hover)
    if chosen is not None:
        fig.add_scatter(x=[chosen[0]], y=y_of([chosen[1]]), mode="markers", name="suggestion",
                        marker=dict(symbol="star", size=18, color="gold", line=dict(color="black", width=1)),
                        text=["suggestion"], hovertemplate=hover)
    what = "perplexity" if unit is not None and unit.is_perplexity else metric
    fig.update_layout(title=f"Size vs {what} of the configs tried", xaxis_title="model size (KB)",
                      yaxis_title=y_title, margin=_MARGIN, legend=dict(orientation="h", y=-0.25))
    return fig


def tradeoff_figure(frame: pd.DataFrame, *, x: str) -> go.Figure:
    """Accuracy against measured latency (x="latency_ms") or size (x="size_kb") of each variant.

    `frame` columns: variant, accuracy (0..1), size_kb, latency_ms, latency_p10_ms, latency_p90_ms,
    simulated (bool). One legend entry per variant (names are too long to print next to close points).
    Simulated-only variants have no latency: the latency chart leaves them out (the view lists them);
    the size chart draws them as grey open diamonds. Error bars span p10..p90 of the latency samples.
    The Pareto front (lower x, higher accuracy) of the measured variants is a red dotted step line,
    its points ringed in red.
    """
    metric = str(frame["metric"].iloc[0]) if "metric" in frame and len(frame) else "accuracy"
    measured = frame[~frame["simulated"]]
    if x == "latency_ms":
        measured = measured[measured["latency_ms"].notna()]
    front = pareto_front(list(measured[x]), list(measured["accuracy"]))
    unit = "ms" if x == "latency_ms" else "KB"
    fig = go.Figure()
    for index, (row, on_front) in enumerate(zip(measured.itertuples(index=False), front)):
        error_x = None
        if x == "latency_ms":
            error_x = dict(type="data", symmetric=False, array=[row.latency_p90_ms - row.latency_ms],
                           arrayminus=[row.latency_ms - row.latency_p10_ms])
        fig.add_scatter(x=[getattr(row, x)], y=[row.accuracy * 100], mode="markers", name=row.variant,
                        error_x=error_x,
                        marker=dict(size=12, color=_PALETTE[index % len(_PALETTE)],
                                    line=dict(color=FRONT_COLOR if on_front else "white", width=3 if on_front else 1)),
                        hovertemplate=f"{row.variant}<br>%{{x:.4g}} {unit}, {metric} %{{y:.2f}}%<extra></extra>")
    front_rows = measured[front].sort_values(x)
    if len(front_rows) > 1:
        fig.add_scatter(x=front_rows[x], y=front_rows["accuracy"] * 100, mode="lines", name="Pareto front",
                        line=dict(color=FRONT_COLOR, shape="hv", dash="dot"), hoverinfo="skip")
    if x == "size_kb":
        for row in frame[frame["simulated"]].itertuples(index=False):
            fig.add_scatter(x=[row.size_kb], y=[row.accuracy * 100], mode="markers", name=f"{row.variant} (simulated)",
                            marker=dict(color=SIMULATED_COLOR, size=13, symbol="diamond-open", line=dict(width=2)),
                            hovertemplate=f"{row.variant} (simulated)<br>%{{x:.1f}} KB, {metric} %{{y:.2f}}%"
                                          "<extra></extra>")
    name = metric[:1].upper() + metric[1:]
    title = (f"{name} vs measured latency (error bars: p10–p90)" if x == "latency_ms"
             else f"{name} vs model size")
    fig.update_layout(title=title, xaxis_title="latency per batch (ms)" if x == "latency_ms" else "model size (KB)",
                      yaxis_title=f"{metric} (%)", margin=_MARGIN, legend=dict(orientation="h", y=-0.18, yanchor="top"),
                      height=520)
    return fig

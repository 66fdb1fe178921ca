"""The Graph page's figure: a laid-out `LayerGraph` drawn with Plotly, nodes coloured by an overlay.

No Streamlit here. The overlay is plain data (`Overlay`): each node's colour group and hover text,
and the groups in legend order with their colours. Numeric overlays (SQNR, sweep drop) are cut into
bands by two thresholds (`bands`), as Model Explorer's thresholds do; categorical overlays (export
status, format) get one group per value.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import plotly.graph_objects as go

from quant_core.model.graph_layout import LayerGraph, NodeKind

GOOD_COLOR, FAIR_COLOR, BAD_COLOR, NONE_COLOR = "#2ca02c", "#f0a202", "#d62728", "#b8bec8"
EDGE_COLOR = "#9aa3b2"
IO_COLOR = "#4a5568"
CATEGORY_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                   "#7f7f7f", "#d62728"]
LABELS_UP_TO_NODES = 80  # above this many nodes, names are shown on hover only (they would overlap)
LEVEL_HEIGHT_PX = 34
MAX_HEIGHT_PX = 1600
NOT_MEASURED = "not measured"
LONG_EDGE_OFFSET = 0.3  # x units an edge that skips levels runs beside the column


@dataclass(frozen=True)
class Overlay:
    """What colours the nodes: node id → group name, groups in legend order → colour, node id → hover line."""

    title: str
    group: Mapping[str, str]
    colors: Mapping[str, str]
    hover: Mapping[str, str]


def bands(values: Mapping[str, float | None], *, good: float, bad: float, unit: str = "dB",
          higher_is_better: bool = True) -> tuple[dict[str, str], dict[str, str]]:
    """Cut numeric values into three bands; return (node → band name, band name → colour) in legend order.

    Higher is better (SQNR): ≥ good is good, < bad is bad, between is fair. Lower is better (a metric drop):
    ≤ good is good, > bad is bad. None and NaN go to "not measured"; +inf (an exact layer) is good.
    """
    if higher_is_better and bad > good or not higher_is_better and bad < good:
        raise ValueError(f"the bad threshold ({bad}) must be on the worse side of the good one ({good})")
    if higher_is_better:
        names = (f"≥ {good:g} {unit}", f"{bad:g}–{good:g} {unit}", f"< {bad:g} {unit}")
    else:
        names = (f"≤ {good:g} {unit}", f"{good:g}–{bad:g} {unit}", f"> {bad:g} {unit}")
    group = {}
    for node, value in values.items():
        if value is None or math.isnan(value):
            group[node] = NOT_MEASURED
        elif (value >= good) if higher_is_better else (value <= good):
            group[node] = names[0]
        elif (value < bad) if higher_is_better else (value > bad):
            group[node] = names[2]
        else:
            group[node] = names[1]
    colors = dict(zip(names, (GOOD_COLOR, FAIR_COLOR, BAD_COLOR)))
    colors[NOT_MEASURED] = NONE_COLOR
    return group, colors


def categories(values: Mapping[str, str], *, fixed: Mapping[str, str] | None = None) -> dict[str, str]:
    """One colour per distinct value, in order of appearance (`fixed` colours first where given)."""
    colors = dict(fixed or {})
    for value in dict.fromkeys(values.values()):
        if value not in colors:
            colors[value] = CATEGORY_COLORS[len(colors) % len(CATEGORY_COLORS)]
    return {name: color for name, color in colors.items() if name in set(values.values())}


def short_label(name: str, op_type: str = "", limit: int = 28) -> str:
    """A node name short enough to print beside its marker.

    Trailing path parts that only repeat the op type ("/conv/Conv" of "/model.2/cv1/conv/Conv") are dropped,
    then the name is cut to its last `limit` characters at a "/" where possible: "…/model.2/cv1".
    """
    parts = name.split("/")
    while len(parts) > 2 and op_type and parts[-1].lower() == op_type.lower():
        parts.pop()
    text = "/".join(parts)
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find("/")
    return "…" + (tail[cut:] if 0 <= cut < limit - 6 else tail)


def graph_figure(graph: LayerGraph, overlay: Overlay, *, selected: str | None = None,
                 focus_levels: int | None = None) -> go.Figure:
    """The graph top to bottom: edges as grey lines, layers as squares coloured by `overlay`, inputs and outputs
    as dark triangles; `selected` ringed. Every layer marker carries its id as customdata (for clicks).

    `focus_levels`: show only that many levels around the selected node (zoomed in); None shows the whole graph.
    """
    fig = go.Figure()
    xs, ys = [], []
    mid_x, mid_y, mid_text = [], [], []
    for edge in graph.edges:
        source, target = graph.node(edge.source), graph.node(edge.target)
        # An edge that skips levels leaves its column by LONG_EDGE_OFFSET, so that it never runs over the
        # nodes between (nor does its dot, which would then catch their clicks).
        offset = LONG_EDGE_OFFSET if target.depth - source.depth > 1 else 0.0
        path_x = [source.x, source.x + offset, target.x + offset, target.x]
        path_y = [source.depth, source.depth + 0.5, target.depth - 0.5, target.depth]
        xs += [*path_x, None]
        ys += [*path_y, None]
        if edge.hidden_ops:
            mid_x.append(source.x + offset + (target.x - source.x) * 0.5 / max(target.depth - source.depth, 1))
            mid_y.append(source.depth + 0.5)
            mid_text.append(f"{source.label} → {target.label}<br>collapsed: {edge.describe()}")
    fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=EDGE_COLOR, width=1), hoverinfo="skip",
                    showlegend=False, name="edges")
    if mid_x:
        fig.add_scatter(x=mid_x, y=mid_y, mode="markers", marker=dict(size=5, color=EDGE_COLOR, symbol="circle"),
                        text=mid_text, hovertemplate="%{text}<extra></extra>", showlegend=False,
                        name="collapsed ops")
    show_labels = len(graph.nodes) <= LABELS_UP_TO_NODES
    limit = 28 if graph.width <= 2 else 16  # side by side, long labels would run into the next column
    layers = [node for node in graph.nodes if node.kind == NodeKind.LAYER]
    for name, color in overlay.colors.items():
        members = [node for node in layers if overlay.group.get(node.id, NOT_MEASURED) == name]
        if not members:
            continue
        fig.add_scatter(
            x=[node.x for node in members], y=[node.depth for node in members], name=name,
            mode="markers+text" if show_labels else "markers", text=[short_label(node.label, node.op_type, limit) for node in members],
            textposition="middle right", textfont=dict(size=11),
            customdata=[node.id for node in members],
            hovertext=[f"<b>{node.label}</b> ({node.op_type})<br>{overlay.hover.get(node.id, '')}" for node in members],
            hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(symbol="square", size=16, color=color, line=dict(color="white", width=1)))
    ops = [node for node in graph.nodes if node.kind == NodeKind.OP]
    if ops:  # the expanded view: every other op as a small grey dot, named on hover (not selectable)
        fig.add_scatter(x=[node.x for node in ops], y=[node.depth for node in ops], name="other op",
                        mode="markers+text" if show_labels else "markers", text=[node.op_type for node in ops],
                        textposition="middle right", textfont=dict(size=10, color=EDGE_COLOR),
                        hovertext=[f"{node.label} ({node.op_type})" for node in ops],
                        hovertemplate="%{hovertext}<extra></extra>",
                        marker=dict(symbol="circle", size=7, color=EDGE_COLOR))
    io = [node for node in graph.nodes if node.kind in (NodeKind.INPUT, NodeKind.OUTPUT)]
    if io:
        fig.add_scatter(x=[node.x for node in io], y=[node.depth for node in io], name="model input / output",
                        mode="markers+text", text=[short_label(node.label, limit=limit) for node in io],
                        textposition="middle right", textfont=dict(size=11, color=IO_COLOR),
                        hovertext=[f"model {node.kind.value}: {node.label}" for node in io],
                        hovertemplate="%{hovertext}<extra></extra>",
                        marker=dict(symbol=["triangle-down" if node.kind == NodeKind.INPUT else "triangle-up"
                                            for node in io], size=14, color=IO_COLOR))
    chosen = graph._by_id.get(selected) if selected else None
    if chosen is not None:
        fig.add_scatter(x=[chosen.x], y=[chosen.depth], mode="markers", name="selected", hoverinfo="skip",
                        marker=dict(symbol="square-open", size=28, color="#111827", line=dict(width=3)))
    depth = max(graph.depth, 1)
    height = int(min(max(420, LEVEL_HEIGHT_PX * depth + 140), MAX_HEIGHT_PX))
    x_values = [node.x for node in graph.nodes] or [0.0]
    # Room on the right for the labels printed beside the widest level's last node.
    x_range = [min(x_values) - 0.6, max(x_values) + (2.2 if show_labels else 0.6)]
    y_range = [depth - 0.5, -0.5]
    if chosen is not None and focus_levels:
        half = focus_levels / 2
        y_range = [min(chosen.depth + half, depth - 0.5), max(chosen.depth - half, -0.5)]
    fig.update_layout(
        title=dict(text=overlay.title, font=dict(size=14)), height=height, dragmode="pan", hovermode="closest", clickmode="event+select",
        margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white",
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, title_text=""),
        xaxis=dict(visible=False, range=x_range), yaxis=dict(visible=False, range=y_range))
    return fig

"""Plotly figure builders shared by the pages: histograms with range lines and grids, curves."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

# One colour per range method, the same on every chart.
METHOD_COLORS = {"minmax": "#444444", "percentile": "#2E6FD8", "mse": "#D8572A", "entropy": "#2A9D55"}
# Ranges often coincide (e.g. minmax = MSE at 8 bits): a dash pattern per line keeps every colour visible.
_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot")
GRID_COLOR = "rgba(120, 60, 160, 0.55)"
MAX_GRID_LINES = 64
DISPLAY_BINS = 256
# Legend under the plot, so long range labels never cover the title or the data.
_LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=40), hovermode="closest", bargap=0,
               legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0))


def figure(traces: list[dict], *, title: str = "", x_title: str = "", y_title: str = "",
           log_y: bool = False) -> go.Figure:
    """A Plotly figure from trace dicts, in the lab's layout.

    Built without Plotly's property validation (`_validate=False`): validating costs about 25 ms
    per chart, a large part of the 150 ms rerun budget. Traces must therefore be written in
    Plotly's canonical form (nested dicts, no magic underscores); the page tests re-validate every
    chart the pages draw.
    """
    layout = dict(_LAYOUT, title=dict(text=title), xaxis=dict(title=dict(text=x_title)),
                  yaxis=dict(title=dict(text=y_title), type="log" if log_y else "linear"))
    return go.Figure(data=traces, layout=layout, _validate=False)


@dataclass(frozen=True)
class RangeLine:
    """A clipping range to draw as two labelled vertical lines."""

    label: str
    lo: float
    hi: float
    color: str = "#444444"


def coarsen(edges: np.ndarray, counts: np.ndarray, max_bins: int = DISPLAY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins so a chart draws at most about `max_bins` bars (counts are summed)."""
    factor = int(np.ceil(len(counts) / max_bins))
    if factor <= 1:
        return edges, counts
    pad = (-len(counts)) % factor
    padded = np.concatenate([counts, np.zeros(pad, dtype=counts.dtype)])
    merged = padded.reshape(-1, factor).sum(axis=1)
    merged_edges = np.append(edges[:-1:factor], edges[-1])
    return merged_edges, merged


def thin_grid(grid: np.ndarray, max_lines: int = MAX_GRID_LINES) -> tuple[np.ndarray, int]:
    """Keep every k-th grid value so at most `max_lines` are drawn; return (values, k)."""
    step = max(1, int(np.ceil(len(grid) / max_lines)))
    return grid[::step], step


def histogram_with_ranges(edges: np.ndarray, counts: np.ndarray, ranges: Sequence[RangeLine], *,
                          grid: np.ndarray | None = None, grid_label: str = "", log_y: bool = False,
                          title: str = "", x_title: str = "value") -> go.Figure:
    """Histogram bars, each range as two vertical lines, and optionally the quantization grid."""
    edges, counts = coarsen(np.asarray(edges, dtype=np.float64), np.asarray(counts))
    centers = (edges[:-1] + edges[1:]) / 2
    traces = [dict(type="bar", x=centers, y=counts, width=np.diff(edges), name="count",
                   marker=dict(color="#8FA9C9"), hovertemplate="%{x:.4g}: %{y} values<extra></extra>")]
    top = float(counts.max()) if len(counts) and counts.max() > 0 else 1.0
    if grid is not None and len(grid):
        shown, step = thin_grid(np.asarray(grid, dtype=np.float64))
        suffix = f" (every {step}th level of {len(grid)})" if step > 1 else f" ({len(grid)} levels)"
        xs = np.repeat(shown, 3)
        xs[2::3] = np.nan
        ys = np.tile([0.0, top, np.nan], len(shown))
        traces.append(dict(type="scatter", x=xs, y=ys, mode="lines", line=dict(color=GRID_COLOR, width=1),
                           name=(grid_label or "quantization grid") + suffix, hoverinfo="skip"))
    for index, line in enumerate(ranges):
        traces.append(dict(type="scatter", x=[line.lo, line.lo, None, line.hi, line.hi], y=[0, top, None, 0, top],
                           mode="lines", line=dict(color=line.color, width=2, dash=_DASHES[index % len(_DASHES)]),
                           name=f"{line.label} [{line.lo:.4g}, {line.hi:.4g}]",
                           hovertemplate=f"{line.label}: %{{x:.4g}}<extra></extra>"))
    return figure(traces, title=title, x_title=x_title, y_title="count", log_y=log_y)


MAX_CHANNEL_BARS = 1024  # above this many channels the ranges are drawn as a band: 30k SVG bars freeze the browser


def channel_ranges(lo: np.ndarray, hi: np.ndarray, tensor_lo: float, tensor_hi: float, *,
                   title: str = "") -> go.Figure:
    """One bar per output channel from its min to its max, with the per-tensor range across.

    Above MAX_CHANNEL_BARS channels (an embedding table's 30k rows), one band between the channels' max and
    min lines instead: the same values, drawn as two paths."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    channels = np.arange(len(lo))
    if len(lo) <= MAX_CHANNEL_BARS:
        traces = [dict(type="bar", x=channels, y=hi - lo, base=lo, name="channel [min, max]",
                       marker=dict(color="#2E6FD8"), customdata=np.stack([lo, hi], axis=1),
                       hovertemplate="channel %{x}: [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra></extra>")]
    else:
        traces = [dict(type="scatter", x=channels, y=hi, mode="lines", name="channel max",
                       line=dict(color="#2E6FD8", width=1), hovertemplate="channel %{x}: max %{y:.4g}<extra></extra>"),
                  dict(type="scatter", x=channels, y=lo, mode="lines", name="channel min", fill="tonexty",
                       line=dict(color="#2E6FD8", width=1), fillcolor="rgba(46, 111, 216, 0.35)",
                       hovertemplate="channel %{x}: min %{y:.4g}<extra></extra>")]
    for value, label in ((tensor_lo, "per-tensor min"), (tensor_hi, "per-tensor max")):
        traces.append(dict(type="scatter", x=[-0.5, len(lo) - 0.5], y=[value, value], mode="lines", name=label,
                           line=dict(color="#D8572A", width=2, dash="dash")))
    return figure(traces, title=title, x_title="output channel", y_title="weight value")


def curve(x: np.ndarray, y: np.ndarray, *, marks: Sequence[tuple[str, float, float]] = (), title: str = "",
          x_title: str = "", y_title: str = "", log_y: bool = False) -> go.Figure:
    """A line (e.g. error against clipping threshold) with labelled points such as the optimum."""
    traces = [dict(type="scatter", x=x, y=y, mode="lines", name=y_title or "curve", line=dict(color="#2E6FD8"),
                   hovertemplate="%{x:.4g}: %{y:.4g}<extra></extra>")]
    symbols = ("star", "circle", "diamond", "square")
    for index, (label, mark_x, mark_y) in enumerate(marks):
        traces.append(dict(type="scatter", x=[mark_x], y=[mark_y], mode="markers", name=label,
                           marker=dict(size=12, symbol=symbols[index % len(symbols)]),
                           hovertemplate=f"{label}: %{{x:.4g}}, %{{y:.4g}}<extra></extra>"))
    return figure(traces, title=title, x_title=x_title, y_title=y_title, log_y=log_y)


def lines(x: Sequence[float], series: dict[str, Sequence[float]], *, colors: dict[str, str] | None = None,
          title: str = "", x_title: str = "", y_title: str = "") -> go.Figure:
    """Several labelled lines over the same x (e.g. SQNR against bits, one line per range method)."""
    colors = colors or {}
    traces = [dict(type="scatter", x=list(x), y=list(y), mode="lines+markers", name=label,
                   line=dict(color=colors.get(label, "#2E6FD8")),
                   hovertemplate=f"{label}: %{{x}} → %{{y:.4g}}<extra></extra>") for label, y in series.items()]
    return figure(traces, title=title, x_title=x_title, y_title=y_title)


def bars(labels: Sequence[str], values: Sequence[float], *, title: str = "", y_title: str = "",
         text: Sequence[str] | None = None) -> go.Figure:
    """A plain bar chart (e.g. model size per format)."""
    trace = dict(type="bar", x=list(labels), y=list(values), marker=dict(color="#2E6FD8"))
    if text is not None:
        trace["text"] = list(text)
    return figure([trace], title=title, y_title=y_title)

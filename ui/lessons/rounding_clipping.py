"""Lesson 2: the clipping threshold trades rounding error against clipping error."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from quant_core.config import TensorQuant
from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import fake_quantize
from quant_core.numerics.ranges import estimate_range
from ui.lessons._common import COLORS, cached_spec, question, show_figure, try_on_page

TITLE = "2 · Rounding against clipping"
BITS, THRESHOLD, DISTRIBUTION = "l2_bits", "l2_threshold", "l2_distribution"
DISTRIBUTIONS = ("heavy tails (Student t, 3 degrees of freedom)", "Laplace", "Gaussian")
SAMPLES = 10_000
CURVE_POINTS = 100
SEED = 0
METHOD_COLORS = {"min-max": "#444444", "percentile 99.99": "#2E6FD8", "MSE": "#D8572A", "entropy": "#2A9D55"}


@dataclass(frozen=True)
class ErrorCurve:
    """Mean squared error split by cause, for each symmetric threshold T (range [-T, T])."""
    thresholds: np.ndarray
    rounding: np.ndarray  # from values inside the grid: rounded to the nearest level
    clipping: np.ndarray  # from values beyond the last level: saturated

    @property
    def total(self) -> np.ndarray:
        return self.rounding + self.clipping

    @property
    def best(self) -> int:
        return int(np.argmin(self.total))


@st.cache_data(max_entries=4, show_spinner=False)
def sample(distribution: str) -> np.ndarray:
    """A fixed sample (seeded) of the distribution, scaled to unit standard deviation."""
    rng = np.random.default_rng(SEED)
    if distribution == DISTRIBUTIONS[0]:
        x = rng.standard_t(3, SAMPLES)
    elif distribution == DISTRIBUTIONS[1]:
        x = rng.laplace(0.0, 1.0, SAMPLES)
    else:
        x = rng.standard_normal(SAMPLES)
    return (x / x.std()).astype(np.float32)


def split_errors(x: np.ndarray, thresholds: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (rounding MSE, clipping MSE) of x fake-quantized symmetrically to int`bits` over [-T, T], per T.

    A value is *clipped* when it lies more than half a step beyond the grid's ends (it saturates).
    """
    fmt = NumberFormat(FormatKind.INT, bits)
    scale, zero_point = qparams_from_range(-np.asarray(thresholds), np.asarray(thresholds), fmt, symmetric=True)
    rounding, clipping = np.empty(len(scale)), np.empty(len(scale))
    for i, (step, zero) in enumerate(zip(scale, zero_point)):
        error = np.square(x - fake_quantize(x, step, zero, fmt))
        clipped = (x > (fmt.qmax - zero + 0.5) * step) | (x < (fmt.qmin - zero - 0.5) * step)
        clipping[i] = error[clipped].sum() / x.size
        rounding[i] = error.sum() / x.size - clipping[i]
    return rounding, clipping


def split_error(x: np.ndarray, threshold: float, bits: int) -> tuple[float, float]:
    """Return (rounding MSE, clipping MSE) for one threshold."""
    rounding, clipping = split_errors(x, np.array([threshold]), bits)
    return float(rounding[0]), float(clipping[0])


@st.cache_data(max_entries=24, show_spinner=False)
def error_curve(distribution: str, bits: int) -> ErrorCurve:
    x = sample(distribution)
    top = float(np.abs(x).max())
    thresholds = np.geomspace(top / 200, top, CURVE_POINTS)
    rounding, clipping = split_errors(x, thresholds, bits)
    return ErrorCurve(thresholds, rounding, clipping)


@st.cache_data(max_entries=24, show_spinner=False)
def method_thresholds(distribution: str, bits: int) -> dict[str, float]:
    """Where min-max, percentile, MSE and entropy calibration put the threshold max(|lo|, |hi|)."""
    histogram = StreamingHistogram.from_array(sample(distribution))
    fmt = NumberFormat(FormatKind.INT, bits)
    found = {}
    for label, method in (("min-max", "minmax"), ("percentile 99.99", "percentile"), ("MSE", "mse"),
                          ("entropy", "entropy")):
        result = estimate_range(histogram, TensorQuant(fmt, symmetric=True, range_method=method, percentile=99.99))
        found[label] = float(max(abs(result.lo), abs(result.hi)))
    return found


def figure(curve: ErrorCurve, x: np.ndarray, methods: dict[str, float]) -> go.Figure:
    """Left: the data. Right: rounding, clipping and total error against the threshold, the minimum and where
    each calibration method puts T. The learner's T is added by `with_threshold`."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.12,
                        subplot_titles=("the data (log count)", "error against the clipping threshold T"))
    counts, edges = np.histogram(x, bins=200)
    fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name="values",
                         marker_color="#8FA9C9", showlegend=False,
                         hovertemplate="%{x:.3g}: %{y} values<extra></extra>"), 1, 1)
    fig.update_yaxes(type="log", row=1, col=1)
    for name in ("rounding", "clipping", "total"):
        fig.add_trace(go.Scatter(x=curve.thresholds, y=getattr(curve, name), mode="lines", name=f"{name} error",
                                 line=dict(color=COLORS[name], width=3 if name == "total" else 2),
                                 hovertemplate=f"T = %{{x:.3g}}: {name} MSE %{{y:.3g}}<extra></extra>"), 1, 2)
    best = curve.best
    fig.add_trace(go.Scatter(x=[curve.thresholds[best]], y=[curve.total[best]], mode="markers", name="minimum",
                             marker=dict(symbol="star", size=16, color="#F2B700", line=dict(color="#222", width=1)),
                             hovertemplate="best T = %{x:.3g}: MSE %{y:.3g}<extra></extra>"), 1, 2)
    for label, value in methods.items():
        fig.add_trace(go.Scatter(x=[value, value], y=[curve.total.min() / 3, curve.total.max()], mode="lines",
                                 name=f"{label}: T = {value:.3g}", line=dict(color=METHOD_COLORS[label], dash="dot"),
                                 hovertemplate=f"{label}: T = {value:.3g}<extra></extra>"), 1, 2)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50) if curve.thresholds[0] <= t <= curve.thresholds[-1]]
    fig.update_xaxes(type="log", title_text="threshold T", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                     row=1, col=2)
    fig.update_xaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(type="log", title_text="mean squared error", row=1, col=2)
    fig.update_layout(height=420)
    return fig


def with_threshold(spec: dict, threshold: float, x: np.ndarray, curve: ErrorCurve) -> dict:
    """Add the learner's T to a cached spec as plain traces: ±T on the data, T on the error curves.

    Plain dicts skip Plotly's validation, so moving the slider only costs this and the chart's one
    validation in st.plotly_chart.
    """
    line = {"color": COLORS["total"], "dash": "dash", "width": 2}
    top = float(np.histogram(x, bins=200)[0].max())
    spec["data"] = list(spec["data"]) + [
        {"type": "scatter", "x": [-threshold, -threshold, None, threshold, threshold], "y": [1, top, None, 1, top],
         "mode": "lines", "line": line, "xaxis": "x", "yaxis": "y", "name": f"your range ±{threshold:g}",
         "showlegend": False, "hoverinfo": "skip"},
        {"type": "scatter", "x": [threshold, threshold], "y": [float(curve.total.min()) / 3, float(curve.total.max())],
         "mode": "lines", "line": line, "xaxis": "x2", "yaxis": "y2", "name": f"your T = {threshold:g}",
         "hovertemplate": f"your T = {threshold:g}<extra></extra>"},
    ]
    return spec


def render(ctx) -> None:
    st.markdown(
        "A range [−T, T] with b bits has 2^b levels. A **small T** gives fine steps (small *rounding* error) but "
        "every value beyond T is flattened to ±T (large *clipping* error). A **large T** clips nothing but makes "
        "the steps coarse. On heavy-tailed data — most values small, a few huge, as in many activations — the "
        "best T is far inside the largest value. Drag T and watch the two errors trade places.")
    controls, chart = st.columns([1, 3])
    with controls:
        distribution = st.selectbox("Data", DISTRIBUTIONS, key=DISTRIBUTION)
        bits = st.slider("Bits", 2, 8, 4, key=BITS)
        x = sample(distribution)
        top = float(np.abs(x).max())
        threshold = st.slider("Clipping threshold T (in standard deviations)", 0.1, round(top, 1),
                              min(4.0, round(top, 1)), step=0.1, key=THRESHOLD)
    curve = error_curve(distribution, bits)
    methods = method_thresholds(distribution, bits)
    spec = cached_spec("l2", (distribution, bits), lambda: figure(curve, x, methods))
    with chart:
        show_figure(with_threshold(spec, threshold, x, curve), key="l2_chart")

    rounding, clipping = split_error(x, threshold, bits)
    best = curve.best
    a, b, c, d = st.columns(4)
    a.metric("rounding error (MSE)", f"{rounding:.3g}")
    b.metric("clipping error (MSE)", f"{clipping:.3g}")
    c.metric("clipped values", f"{np.mean(np.abs(x) > threshold):.3%}")
    d.metric("best T", f"{curve.thresholds[best]:.3g}", help=f"the largest |x| is {top:.3g}")
    closest = min(methods, key=lambda label: abs(np.log(methods[label] / curve.thresholds[best])))
    question(
        "Where is the best threshold compared with the largest value, and does it move when you add bits?",
        f"At {bits} bits on this data the total error is smallest at T = {curve.thresholds[best]:.3g}, "
        f"{curve.thresholds[best] / top:.0%} of the largest |x| ({top:.3g}); min-max would use {top:.3g}, with a "
        f"total error {curve.total[-1] / curve.total[best]:.1f}× the best. With more bits the steps shrink, rounding "
        f"matters less, and the best T moves outwards. Of the calibration methods, **{closest}** lands closest "
        f"({methods[closest]:.3g}).")
    try_on_page("pages/2_Activations.py", "Now compare the range methods on real activations: the Activations page")

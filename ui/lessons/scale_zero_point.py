"""Lesson 1: how a float range becomes a scale and a zero point, and what the codes cost."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import dequantize, quantize
from ui.lessons._common import COLORS, question, show_figure, try_on_page

TITLE = "1 · Scale and zero-point"
BITS, RANGE, SCHEME, ELEMENT = "l1_bits", "l1_range", "l1_scheme", "l1_element"
SCHEMES = ("asymmetric (uint)", "symmetric (int)")
# A small, lopsided tensor: most values positive, one outlier, like an activation after a bias.
EXAMPLE = np.array([-0.41, -0.12, 0.0, 0.07, 0.26, 0.38, 0.55, 0.71, 0.93, 1.62], dtype=np.float32)


@dataclass(frozen=True)
class Grid:
    """The example quantized with one (bits, range, scheme) choice."""

    fmt: NumberFormat
    symmetric: bool
    scale: float
    zero_point: int
    codes: np.ndarray
    reconstruction: np.ndarray
    levels: np.ndarray  # every representable value scale * (q - zero_point), q in [qmin, qmax]

    @property
    def error(self) -> np.ndarray:
        return np.abs(EXAMPLE - self.reconstruction)

    @property
    def clipped(self) -> np.ndarray:
        """Values more than half a step beyond the grid's ends: saturated rather than rounded."""
        half = self.scale / 2
        return (EXAMPLE < self.levels[0] - half) | (EXAMPLE > self.levels[-1] + half)


def quantize_example(bits: int, lo: float, hi: float, symmetric: bool) -> Grid:
    """Quantize EXAMPLE with the range [lo, hi]: signed and symmetric, or unsigned and asymmetric."""
    fmt = NumberFormat(FormatKind.INT if symmetric else FormatKind.UINT, bits)
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    codes = quantize(EXAMPLE, scale, zero_point, fmt)
    reconstruction = dequantize(codes, scale, zero_point)
    levels = dequantize(np.arange(fmt.qmin, fmt.qmax + 1, dtype=np.int32), scale, zero_point)
    return Grid(fmt, symmetric, float(scale), int(zero_point), codes, reconstruction, levels)


def figure(grid: Grid, lo: float, hi: float) -> go.Figure:
    """The real line: the grid of representable values, each value and where it lands."""
    fig = go.Figure()
    fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(46, 111, 216, 0.07)", line_width=0)
    shown = grid.levels[(grid.levels >= min(lo, EXAMPLE.min()) - grid.scale)
                        & (grid.levels <= max(hi, EXAMPLE.max()) + grid.scale)]
    xs = np.repeat(shown, 3).astype(np.float64)
    xs[2::3] = np.nan
    fig.add_trace(go.Scatter(x=xs, y=np.tile([-0.2, 1.2, np.nan], len(shown)), mode="lines",
                             line=dict(color=COLORS["grid"], width=1), hoverinfo="skip",
                             name=f"representable values ({len(grid.levels)} codes)"))
    links_x = np.column_stack([EXAMPLE, grid.reconstruction, np.full(len(EXAMPLE), np.nan)]).ravel()
    links_y = np.tile([1.0, 0.0, np.nan], len(EXAMPLE))
    fig.add_trace(go.Scatter(x=links_x, y=links_y, mode="lines", line=dict(color="#999999", width=1),
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=EXAMPLE, y=np.ones(len(EXAMPLE)), mode="markers", name="x (float)",
                             marker=dict(size=11, color=COLORS["x"]), customdata=np.arange(len(EXAMPLE)),
                             hovertemplate="x[%{customdata}] = %{x:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=grid.reconstruction, y=np.zeros(len(EXAMPLE)), mode="markers",
                             name="scale · (q − zero_point)", marker=dict(size=11, color=COLORS["reconstruction"],
                                                                         symbol="diamond"),
                             customdata=np.column_stack([np.arange(len(EXAMPLE)), grid.codes]),
                             hovertemplate="x̂[%{customdata[0]}] = %{x:.4f} (q = %{customdata[1]})<extra></extra>"))
    fig.update_layout(title=f"{grid.fmt.name}, scale = {grid.scale:.5g}, zero_point = {grid.zero_point}",
                      xaxis_title="real value", height=320,
                      yaxis=dict(tickvals=[0, 1], ticktext=["after", "before"], range=[-0.4, 1.4]))
    return fig


def render(ctx) -> None:
    st.markdown(
        "A quantized tensor stores small integers **q** and two numbers: a **scale** (the step between two "
        "neighbouring values) and a **zero point** (the integer that stands for 0.0). The float range you choose "
        "is cut into 2^bits − 1 equal steps. Values inside the range move to the nearest step (*rounding*); "
        "values outside it are pushed to the ends (*clipping*).")
    low, high = float(EXAMPLE.min()), float(EXAMPLE.max())
    controls, chart = st.columns([1, 3])
    with controls:
        bits = st.slider("Bits", 2, 8, 3, key=BITS)
        scheme = st.radio("Scheme", SCHEMES, key=SCHEME)
        lo, hi = st.slider("Float range [lo, hi]", -2.0, 2.0, (round(low, 2), round(high, 2)), step=0.01, key=RANGE)
    grid = quantize_example(bits, lo, hi, symmetric=scheme == SCHEMES[1])
    with chart:
        show_figure(figure(grid, lo, hi), key="l1_chart")

    qmin, qmax = grid.fmt.limits
    a, b, c, d = st.columns(4)
    a.metric("scale", f"{grid.scale:.5g}", help="(hi − lo) / (qmax − qmin), after widening the range to hold 0")
    b.metric("zero point", grid.zero_point)
    c.metric("integer grid", f"[{qmin}, {qmax}]")
    d.metric("largest error", f"{grid.error.max():.4f}", help=f"half a step is {grid.scale / 2:.4f}")

    index = st.select_slider("Fill the formula in for element", options=list(range(len(EXAMPLE))),
                             value=len(EXAMPLE) - 1, key=ELEMENT)
    x, q, x_hat = float(EXAMPLE[index]), int(grid.codes[index]), float(grid.reconstruction[index])
    st.latex(rf"q = \mathrm{{clip}}\!\left(\mathrm{{round}}\!\left(\tfrac{{{x:.4f}}}{{{grid.scale:.5g}}}\right)"
             rf" + {grid.zero_point},\ {qmin},\ {qmax}\right) = {q}")
    st.latex(rf"x \approx \text{{scale}}\cdot(q - \text{{zero\_point}}):\quad {x:.4f} \approx {grid.scale:.5g}"
             rf" \cdot ({q} - ({grid.zero_point})) = {x_hat:.4f}")
    table = pd.DataFrame({"x": EXAMPLE, "q": grid.codes, "scale·(q − zero_point)": grid.reconstruction,
                          "error": grid.error, "clipped": grid.clipped})
    st.dataframe(table, hide_index=True, width="stretch")

    clipped = int(table["clipped"].sum())
    inside = grid.error[~table["clipped"].to_numpy()]
    half = grid.scale / 2
    unused = int(np.sum((grid.levels < EXAMPLE.min() - half) | (grid.levels > EXAMPLE.max() + half)))
    question(
        "Shrink the range until the outlier 1.62 is clipped. Does the error of the *other* values go up or down, "
        "and what happens to the outlier's error? Then switch the scheme: how many codes are wasted?",
        f"With your settings {clipped} value(s) are clipped. Inside the range every error is at most half a step: "
        f"largest {inside.max() if inside.size else 0:.4f} ≤ scale/2 = {half:.4f}. A narrower range makes the "
        "step smaller, so the values inside get *more* precise, while a clipped value's error grows with its "
        f"distance to the end of the range. {unused} of the {len(grid.levels)} codes stand for values outside "
        f"the data [{EXAMPLE.min():.2f}, {EXAMPLE.max():.2f}] and are never used: the symmetric scheme mirrors "
        "the range around 0, which wastes codes on this lopsided tensor.")
    try_on_page("pages/1_Weights.py", "Now try this on a real layer: the Weights page")

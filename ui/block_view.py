"""The Weights page's block-format section: MX (OCP v1.0) and NVFP4 on one layer's weight.

Blocks run along the layer's reduction axis (quant_core.numerics.axes: the per-group layout). Drawn: one block's
values with the grid its shared scale gives (the spec's exponent rule and the round-up variant side by
side), the distribution of the shared exponents over every block, and every block format's error and
bits per value. These formats are simulated: onnxruntime has no CPU kernel, the export keeps them FP32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from quant_core.numerics.axes import resolve, weight_axes
from quant_core.config import TensorQuant
from quant_core.numerics.formats import parse_format
from quant_core.numerics.metrics import sqnr_db
from quant_core.numerics.mx import BLOCK_FORMATS, element_grid, quantize_blocks
from ui import figures
from ui.setup import LabContext

BLOCK_FORMAT = "weights_block_format"
BLOCK_INDEX = "weights_block_index"
MAX_GRID_DRAWN = 64  # grid lines drawn inside one block's range
# The whole-weight views (exponents, the formats table) run on whole rows of the blocked weight, sampled
# (seeded) to about this many values: the Weights page's sampling budget (ui.weights_view).
MAX_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class BlockLayout:
    """The weight viewed as blocks: the 2-D-or-more view, the block axis, the number of blocks."""

    view: np.ndarray
    axis: int
    blocks: int


def layout(ctx: LabContext, layer_name: str, weight: np.ndarray, fmt_name: str) -> BlockLayout:
    """The weight as the simulation blocks it (per-group layout along the reduction axis)."""
    from ui.weights_view import _layer

    tq = TensorQuant(parse_format(fmt_name))
    axes = weight_axes(_layer(ctx, layer_name), ctx.prepared.model)
    resolved = resolve(tq, axes) if axes is not None else None
    view = weight.reshape(resolved.shape) if resolved is not None else weight.reshape(1, -1)
    axis = resolved.tq.axis % view.ndim if resolved is not None else 1
    block = BLOCK_FORMATS[fmt_name].block_size
    blocks = view.size // view.shape[axis] * -(-view.shape[axis] // block)
    return BlockLayout(view, axis, blocks)


def _block_values(blocked: BlockLayout, index: int, block: int) -> np.ndarray:
    moved = np.moveaxis(blocked.view, blocked.axis, -1)
    rows, length = moved.reshape(-1, moved.shape[-1]), moved.shape[-1]
    per_row = -(-length // block)
    row, start = divmod(index, per_row)
    return rows[row, start * block:(start + 1) * block]


def block_figure(values: np.ndarray, fmt_name: str, *, round_up: bool):
    """One block's values (a rug + histogram) with its grid: element values × the block's scale."""
    result = quantize_blocks(values, fmt_name, round_up=round_up)
    scale = float(result.block_scales.reshape(-1)[0]) * result.tensor_scale
    grid = element_grid(fmt_name) * scale
    amax = float(np.max(np.abs(values))) if values.size else 0.0
    shown = grid if len(grid) <= MAX_GRID_DRAWN else grid[np.abs(grid) <= max(amax * 1.25, scale)]
    if len(shown) > MAX_GRID_DRAWN:
        shown = shown[np.linspace(0, len(shown) - 1, MAX_GRID_DRAWN).astype(int)]
    counts, edges = np.histogram(values, bins=min(40, max(len(values), 1)))
    top = float(max(counts.max(), 1)) if counts.size else 1.0
    # One trace for every grid line (x, x, None...): a shape per line costs milliseconds each to build.
    grid_x = [v for x in shown for v in (float(x), float(x), None)]
    grid_y = [v for _ in shown for v in (0.0, top * 1.05, None)]
    traces = [dict(type="bar", x=list((edges[:-1] + edges[1:]) / 2), y=[int(c) for c in counts],
                   width=list(np.diff(edges)), name="weights", marker=dict(color="#2E6FD8"), opacity=0.7),
              dict(type="scatter", x=grid_x, y=grid_y, mode="lines", name=f"{fmt_name} grid",
                   line=dict(color=figures.GRID_COLOR, width=1), hoverinfo="skip"),
              dict(type="scatter", x=list(result.values.astype(float)), y=[0] * len(values), mode="markers",
                   name="quantized", marker=dict(color="#D8572A", symbol="line-ns-open", size=14))]
    exponent = "" if result.exponents is None else f" = 2^{int(result.exponents.reshape(-1)[0])}"
    title = (f"{'round-up' if round_up else 'spec'}: scale {scale:.3g}{exponent}, "
             f"SQNR {sqnr_db(values, result.values):.1f} dB")
    fig = figures.figure(traces, title=title, x_title="weight value", y_title="count")
    return fig


def sampled(blocked: BlockLayout) -> BlockLayout:
    """Whole rows of the blocked weight (seeded sample) holding about MAX_ELEMENTS values; all when smaller."""
    moved = np.moveaxis(blocked.view, blocked.axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    keep = max(1, MAX_ELEMENTS // rows.shape[1])
    if keep >= rows.shape[0]:
        return BlockLayout(rows, 1, blocked.blocks)
    chosen = np.sort(np.random.default_rng(0).choice(rows.shape[0], keep, replace=False))
    per_row = blocked.blocks // rows.shape[0]
    return BlockLayout(rows[chosen], 1, per_row * keep)


@st.cache_data(max_entries=32, show_spinner=False)
def _exponent_counts(model_key: str, layer_name: str, fmt_name: str, _blocked: BlockLayout) -> dict:
    counts = {}
    for round_up in (False, True):
        result = quantize_blocks(_blocked.view, fmt_name, axis=_blocked.axis, round_up=round_up)
        exponents, found = np.unique(result.exponents, return_counts=True)
        counts[round_up] = ([int(e) for e in exponents], [int(c) for c in found])
    return counts


def exponent_figure(model_key: str, layer_name: str, blocked: BlockLayout, fmt_name: str):
    """How many blocks get each shared exponent, spec rule and round-up side by side."""
    counts = _exponent_counts(model_key, layer_name, fmt_name, blocked)
    traces = [dict(type="bar", x=counts[round_up][0], y=counts[round_up][1], name="round-up" if round_up else "spec",
                   marker=dict(color=color)) for round_up, color in ((False, "#2E6FD8"), (True, "#D8572A"))]
    fig = figures.figure(traces, title=f"Shared E8M0 exponents over {blocked.blocks} blocks",
                         x_title="exponent e (scale 2^e)", y_title="blocks")
    fig.update_layout(barmode="group", bargap=0.2)
    return fig


@st.cache_data(max_entries=32, show_spinner=False)
def _formats_table(model_key: str, layer_name: str, _blocked_by_format: dict[str, BlockLayout]) -> pd.DataFrame:
    return formats_table(_blocked_by_format)


def formats_table(blocked_by_format: dict[str, BlockLayout]) -> pd.DataFrame:
    """Every block format on the whole weight: bits per value, SQNR by the spec rule and rounded up."""
    rows = []
    for name, blocked in blocked_by_format.items():
        fmt = BLOCK_FORMATS[name]
        spec = quantize_blocks(blocked.view, name, axis=blocked.axis)
        stored = blocked.view.size * fmt.element_bits + spec.block_scales.size * fmt.scale_bits + fmt.tensor_scale_bits
        row = {"format": name, "element bits": fmt.element_bits, "block": fmt.block_size,
               "bits / value": round(stored / blocked.view.size, 3),  # partial blocks cost a whole scale
               "SQNR spec (dB)": round(sqnr_db(blocked.view, spec.values), 2)}
        if name != "nvfp4":
            up = quantize_blocks(blocked.view, name, axis=blocked.axis, round_up=True)
            row["SQNR round-up (dB)"] = round(sqnr_db(blocked.view, up.values), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def section(ctx: LabContext, layer_name: str) -> None:
    """The whole section: format and block pickers, the two block grids, the exponents, the table."""
    from ui.weights_view import _layer, _weight

    layer = _layer(ctx, layer_name)
    weight = _weight(ctx.model_key, layer.weight.name, ctx)
    st.subheader("Block formats (MX, NVFP4): simulated")
    st.caption("Blocks of 32 values (NVFP4: 16) along the layer's reduction axis share one scale: an 8-bit power "
               "of two (E8M0) for MX, an FP8 E4M3 scale times one FP32 per tensor for NVFP4. Simulated only: "
               "onnxruntime has no CPU kernel for them, so the export keeps these layers FP32.")
    left, right = st.columns([2, 3])
    fmt_name = left.selectbox("Block format", list(BLOCK_FORMATS), index=list(BLOCK_FORMATS).index("mxfp4"),
                              key=BLOCK_FORMAT)
    blocked = layout(ctx, layer_name, weight, fmt_name)
    widest = _widest(ctx.model_key, layer_name, fmt_name, blocked)
    index = right.number_input(f"Block (0 to {blocked.blocks - 1}; default: the one with the largest value)",
                               0, blocked.blocks - 1, widest, key=BLOCK_INDEX)
    values = _block_values(blocked, int(index), BLOCK_FORMATS[fmt_name].block_size)
    spec_column, up_column = st.columns(2)
    spec_column.plotly_chart(block_figure(values, fmt_name, round_up=False), key="block_spec")
    if fmt_name == "nvfp4":
        up_column.caption("NVFP4's block scale is an FP8 value, not a power of two: no round-up variant.")
    else:
        up_column.plotly_chart(block_figure(values, fmt_name, round_up=True), key="block_round_up")
        st.plotly_chart(exponent_figure(ctx.model_key, layer_name, sampled(blocked), fmt_name), key="block_exponents")
    table = _formats_table(ctx.model_key, layer_name,
                           {name: sampled(layout(ctx, layer_name, weight, name)) for name in BLOCK_FORMATS})
    st.table(table.set_index("format"))  # a static table: the page's one dataframe stays the error table below
    if weight.size > MAX_ELEMENTS:
        st.caption(f"Exponents and the table: on a seeded sample of whole rows (about {MAX_ELEMENTS:,} of the "
                   f"{weight.size:,} weights).")


@st.cache_data(max_entries=32, show_spinner=False)
def _widest(model_key: str, layer_name: str, fmt_name: str, _blocked: BlockLayout) -> int:
    return _widest_block(_blocked, BLOCK_FORMATS[fmt_name].block_size)


def _widest_block(blocked: BlockLayout, block: int) -> int:
    moved = np.moveaxis(blocked.view, blocked.axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    pad = -rows.shape[1] % block
    padded = np.pad(np.abs(rows), ((0, 0), (0, pad)))
    return int(np.argmax(padded.reshape(rows.shape[0], -1, block).max(axis=2).reshape(-1)))

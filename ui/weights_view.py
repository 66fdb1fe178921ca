"""The Weights page's content: one layer's weight distribution under every range method and bit-width."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.axes import weight_axes
from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.formats import FormatKind, Granularity, NumberFormat, RangeMethod
from quant_core.metrics import clipped_fraction, mse, sqnr_db
from quant_core.model_io import weight_array
from quant_core.quantize import dequantize, fake_quantize, quantize_tensor, tensor_range
from quant_core.qparams import qparams_from_range
from quant_core.ranges import weight_ranges
from ui import figures
from ui.setup import LabContext

BIT_WIDTHS = (2, 3, 4, 6, 8)
METHODS = tuple(RangeMethod)
CLIP_PERCENTS = range(1, 101)  # the clip slider: % of the min-max range kept
LARGE_WEIGHT = 1 << 20  # above this many values the clip curve is drawn every 5 % (the user's point stays exact)
HISTOGRAM_BINS = 256


@dataclass(frozen=True)
class WeightChoice:
    """What the user picked on the Weights page."""

    layer: str
    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = Granularity.PER_TENSOR
    clip_percent: int = 100
    log_y: bool = False


@dataclass(frozen=True)
class ClipPoint:
    percent: int
    mse: float
    sqnr_db: float


@dataclass(frozen=True)
class WeightsView:
    """Everything the Weights page draws for one choice."""

    layer: str
    weight_name: str
    shape: tuple[int, ...]
    axis: int
    fmt_name: str
    histogram: go.Figure
    channels: go.Figure | None
    channel_note: str
    table: pd.DataFrame
    table_figure: go.Figure
    clip_figure: go.Figure
    clip: ClipPoint
    best_clip: ClipPoint


def weight_layers(ctx: LabContext) -> list[str]:
    """Names of the layers that have a static weight, in model order."""
    return [layer.name for layer in ctx.info.layers if layer.weight is not None]


def weights_view(ctx: LabContext, choice: WeightChoice) -> WeightsView:
    """Compute (cached per model + layer + format) and draw the views of one layer's weight."""
    layer = _layer(ctx, choice.layer)
    x = _weight(ctx.model_key, layer.weight.name, ctx)
    axis = channel_axis(ctx, layer.name)
    granularity = choice.granularity if x.ndim >= 2 else Granularity.PER_TENSOR
    key = (ctx.model_key, layer.weight.name)
    stats = _distribution(*key, choice.bits, choice.symmetric, axis, x)
    table = _error_table(*key, choice.symmetric, granularity.value, axis, x)
    points = _clip_points(*key, choice.bits, choice.symmetric, granularity.value, axis, x)
    best = max(points, key=lambda p: (p.sqnr_db, p.percent))
    clip = next((p for p in points if p.percent == choice.clip_percent), None) or _clip_points(
        *key, choice.bits, choice.symmetric, granularity.value, axis, x, percents=(choice.clip_percent,))[0]
    tq = _tq(choice.bits, choice.symmetric, granularity, axis)
    grid = _grid(stats, choice.clip_percent, tq)
    histogram = figures.histogram_with_ranges(
        stats.edges, stats.counts, stats.range_lines, grid=grid, log_y=choice.log_y,
        grid_label=f"int{choice.bits} grid at {choice.clip_percent}% clip (per-tensor)",
        title=f"{layer.weight.name}: {x.size:,} weights", x_title="weight value")
    channels, note = None, "A 1-D weight has no output channels: per-channel is the same as per-tensor."
    if x.ndim >= 2:
        channels = figures.channel_ranges(stats.channel_lo, stats.channel_hi, stats.tensor_lo, stats.tensor_hi,
                                          title=f"Range of each output channel (axis {axis})")
        note = _channel_note(stats)
    clip_figure = figures.curve(
        [p.percent for p in points], [p.sqnr_db for p in points],
        marks=[(f"best: {best.percent}%", best.percent, best.sqnr_db),
               (f"yours: {clip.percent}%", clip.percent, clip.sqnr_db)],
        title=f"SQNR against clipping (int{choice.bits}, {'symmetric' if choice.symmetric else 'asymmetric'}, "
              f"{granularity.value.replace('_', '-')})",
        x_title="clip range (% of min-max range kept)", y_title="SQNR (dB)")
    return WeightsView(layer=layer.name, weight_name=layer.weight.name, shape=tuple(x.shape), axis=axis,
                       fmt_name=tq.format.name, histogram=histogram, channels=channels, channel_note=note,
                       table=table, table_figure=_sqnr_by_bits(table, symmetric=choice.symmetric,
                                                               granularity=granularity),
                       clip_figure=clip_figure, clip=clip, best_clip=best)


def _sqnr_by_bits(table: pd.DataFrame, *, symmetric: bool, granularity: Granularity) -> go.Figure:
    series = {method: table.loc[table["method"] == method, "SQNR (dB)"].tolist() for method in table["method"].unique()}
    return figures.lines(BIT_WIDTHS, series, colors=figures.METHOD_COLORS, x_title="bits", y_title="SQNR (dB)",
                         title=f"SQNR by bit-width ({'symmetric' if symmetric else 'asymmetric'}, "
                               f"{granularity.value.replace('_', '-')})")


def channel_axis(ctx: LabContext, layer_name: str) -> int:
    """The output-channel axis of a layer's weight, exactly the export's (quant_core.axes.weight_axes:
    Conv 0, MatMul the last, LSTM / GRU / RNN (D, G*H, I) 1, ...)."""
    axes = weight_axes(_layer(ctx, layer_name), ctx.prepared.model)
    return 0 if axes is None else axes.channel_axis


# --- cached computations --------------------------------------------------------------------------

@st.cache_resource(max_entries=16, show_spinner=False)
def _weight(model_key: str, weight_name: str, _ctx: LabContext) -> np.ndarray:
    return np.asarray(weight_array(_ctx.prepared.model, weight_name), dtype=np.float32)


@dataclass(frozen=True)
class _Distribution:
    edges: np.ndarray
    counts: np.ndarray
    range_lines: tuple[figures.RangeLine, ...]
    tensor_lo: float
    tensor_hi: float
    channel_lo: np.ndarray | None
    channel_hi: np.ndarray | None


@st.cache_data(max_entries=64, show_spinner=False)
def _distribution(model_key: str, weight_name: str, bits: int, symmetric: bool, axis: int,
                  _x: np.ndarray) -> _Distribution:
    """Histogram, each method's per-tensor range (MSE depends on the bits) and the channel ranges."""
    counts, edges = np.histogram(_x, bins=HISTOGRAM_BINS)
    lines = []
    for method in METHODS:
        lo, hi = _method_range(_x, _tq(bits, symmetric, Granularity.PER_TENSOR, axis, method), weight_name, model_key)
        lines.append(figures.RangeLine(method.value, float(lo), float(hi), figures.METHOD_COLORS[method.value]))
    tensor_lo, tensor_hi = (float(v) for v in tensor_range(_x, granularity=Granularity.PER_TENSOR, name=weight_name))
    channel_lo = channel_hi = None
    if _x.ndim >= 2:
        channel_lo, channel_hi = tensor_range(_x, granularity=Granularity.PER_CHANNEL, axis=axis, name=weight_name)
    return _Distribution(edges, counts, tuple(lines), tensor_lo, tensor_hi, channel_lo, channel_hi)


@st.cache_data(max_entries=64, show_spinner=False)
def _error_table(model_key: str, weight_name: str, symmetric: bool, granularity: str, axis: int,
                 _x: np.ndarray) -> pd.DataFrame:
    """MSE, SQNR and clipped fraction for every bit-width × range method."""
    rows = []
    for bits in BIT_WIDTHS:
        for method in METHODS:
            tq = _tq(bits, symmetric, Granularity(granularity), axis, method)
            row = {"bits": bits, "method": method.value, "MSE": np.nan, "SQNR (dB)": np.nan, "clipped (%)": np.nan,
                   "note": ""}
            try:
                lo, hi = _method_range(_x, tq, weight_name, model_key)
                values = quantize_tensor(_x, tq, name=weight_name, lo=lo, hi=hi).values
                row.update({"MSE": float(mse(_x, values)), "SQNR (dB)": round(float(sqnr_db(_x, values)), 2),
                            "clipped (%)": round(100.0 * _clipped_fraction(_x, lo, hi, tq), 3)})
            except QuantLabError as err:  # one failing estimator must not hide the other 19 rows
                row["note"] = str(err)
            rows.append(row)
    table = pd.DataFrame(rows)
    return table if table["note"].any() else table.drop(columns="note")


@st.cache_data(max_entries=64, show_spinner=False)
def _clip_points(model_key: str, weight_name: str, bits: int, symmetric: bool, granularity: str, axis: int,
                 _x: np.ndarray, percents: tuple[int, ...] | None = None) -> tuple[ClipPoint, ...]:
    """MSE and SQNR when the min-max range (per tensor or per channel) is shrunk to each percent.

    Every percent from 1 to 100 (every 5th for weights above LARGE_WEIGHT values), or `percents`.
    All candidates are fake-quantized in one call: the weight is stacked once per candidate (rows of
    one channel each, per channel) and each row gets its own scale and zero point.
    """
    tq = _tq(bits, symmetric, Granularity(granularity), axis)
    if percents is None:
        percents = tuple(CLIP_PERCENTS)[:: 1 if _x.size <= LARGE_WEIGHT else 5]
        percents = tuple(sorted({*percents, 100}))
    rows = _x.reshape(1, -1) if tq.granularity == Granularity.PER_TENSOR else np.moveaxis(_x, axis, 0).reshape(
        _x.shape[axis], -1)
    lo, hi = rows.min(axis=1), rows.max(axis=1)  # (rows,): the min-max range of the tensor or of each channel
    points = []
    chunk = max(1, (1 << 22) // _x.size)  # candidates per call: bounds the stacked copy to 4M values
    for start in range(0, len(percents), chunk):
        # float32 like `lo * (percent / 100)` on the float32 range: the same scales as quantize_tensor gets
        fractions = (np.array(percents[start:start + chunk], dtype=np.float64)[:, None] / 100.0).astype(np.float32)
        scale, zero_point = qparams_from_range(lo * fractions, hi * fractions, tq.format, symmetric=symmetric)
        stacked = np.broadcast_to(rows, (len(fractions), *rows.shape)).reshape(-1, rows.shape[1])
        values = fake_quantize(stacked, scale.reshape(-1), zero_point.reshape(-1), tq.format, axis=0,
                               name=weight_name).reshape(len(fractions), -1)
        reference = rows.reshape(-1)
        for percent, row in zip(percents[start:start + chunk], values):
            points.append(ClipPoint(int(percent), float(mse(reference, row)), float(sqnr_db(reference, row))))
    return tuple(points)


def _tq(bits: int, symmetric: bool, granularity: Granularity, axis: int,
        method: RangeMethod = RangeMethod.MINMAX) -> TensorQuant:
    return TensorQuant(NumberFormat(FormatKind.INT, bits), symmetric=symmetric, granularity=granularity,
                       axis=axis, range_method=method)


def _method_range(x: np.ndarray, tq: TensorQuant, name: str, model_key: str):
    """quant_core.ranges.weight_ranges, cached; only MSE depends on the bit-width, so the others share one entry."""
    bits = tq.format.bits if tq.range_method == RangeMethod.MSE else 0
    return _cached_range(model_key, name, tq.range_method.value, bits, tq.symmetric, tq.granularity.value, tq.axis, x)


@st.cache_data(max_entries=512, show_spinner=False)
def _cached_range(model_key: str, weight_name: str, method: str, bits: int, symmetric: bool, granularity: str,
                  axis: int, _x: np.ndarray):
    tq = _tq(bits or 8, symmetric, Granularity(granularity), axis, RangeMethod(method))
    return weight_ranges(_x, tq, name=weight_name)


def _clipped_fraction(x: np.ndarray, lo, hi, tq: TensorQuant) -> float:
    """Fraction of weights outside their (per-tensor or per-channel) range."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    if lo.ndim == 1 and tq.granularity == Granularity.PER_CHANNEL:
        shape = [1] * x.ndim
        shape[tq.axis] = -1
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    return clipped_fraction(x, lo, hi)

def _grid(stats: _Distribution, clip_percent: int, tq: TensorQuant) -> np.ndarray:
    """The representable values of the per-tensor grid for the clipped min-max range."""
    fraction = clip_percent / 100.0
    scale, zero_point = qparams_from_range(stats.tensor_lo * fraction, stats.tensor_hi * fraction, tq.format,
                                           symmetric=tq.symmetric)
    codes = np.arange(tq.format.qmin, tq.format.qmax + 1, dtype=np.int32)
    return dequantize(codes, scale, zero_point)


def _channel_note(stats: _Distribution) -> str:
    widths = np.maximum(np.abs(stats.channel_lo), np.abs(stats.channel_hi))
    tensor_width = max(abs(stats.tensor_lo), abs(stats.tensor_hi))
    median = float(np.median(widths))
    if median <= 0:
        return "Most channels are all zeros."
    return (f"The per-tensor range is {tensor_width / median:.1f}× wider than the median channel's "
            f"(widest/narrowest channel: {float(widths.max() / max(widths.min(), 1e-12)):.1f}×): with one "
            "per-tensor scale the narrow channels get only a few of the integer levels; per-channel gives "
            "each channel its own scale.")


def _layer(ctx: LabContext, name: str):
    for layer in ctx.info.layers:
        if layer.name == name and layer.weight is not None:
            return layer
    raise ConfigError(f"layer {name!r} has no static weight; pick one of {', '.join(weight_layers(ctx)[:5])}")

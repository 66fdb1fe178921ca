"""The Weights page's content: one layer's weight distribution under every range method and bit-width.

A weight above MAX_HISTOGRAM_ELEMENTS values is studied on a seeded random sample of about that
many (the same random positions in every output channel, so per-channel views keep their channels):
histogram, range methods, error table and clip curve. Its exact min / max (per tensor and per
channel) still come from the full tensor, and the page says so in a caption.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.numerics.axes import weight_axes
from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, RangeMethod
from quant_core.numerics.metrics import clipped_fraction, mse, ratio_db, sqnr_db
from quant_core.model.model_io import weight_array
from quant_core.numerics.quantize import dequantize, fake_quantize, tensor_range
from quant_core.numerics.tensor import quantize_tensor
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.ranges import weight_ranges
from ui import figures
from ui.setup import LabContext

BIT_WIDTHS = (2, 3, 4, 6, 8)
METHODS = tuple(RangeMethod)
CLIP_PERCENTS = range(1, 101)  # the clip slider: % of the min-max range kept
LARGE_WEIGHT = 1 << 20  # above this many values the clip curve is drawn every 5 % (the user's point stays exact)
HISTOGRAM_BINS = 256
# 2**21 values (8 MiB of float32). A 256-bin histogram of that many samples has ~8k values in an
# average bin (relative noise ~1 %), and the error table / clip curve estimate a mean over 2 M values.
# Measured on one 4096x4096 MatMul weight (16.8 M values): on the full tensor 19-35 s for the first
# view and 8-9 s per bit-width change; sampled to 2**22, 4.0 s and 1.3-1.8 s (0.7 s with the faster
# clip curve); sampled to 2**21, 1.3 s and 0.22-0.28 s: well under a second per slider move.
MAX_HISTOGRAM_ELEMENTS = 1 << 21
SAMPLE_SEED = 0


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
    sample_note: str = ""  # non-empty when the views were computed on a sample of the weight


def weight_layers(ctx: LabContext) -> list[str]:
    """Names of the layers that have a static weight, in model order."""
    return [layer.name for layer in ctx.info.layers if layer.weight is not None]


def weights_view(ctx: LabContext, choice: WeightChoice) -> WeightsView:
    """Compute (cached per model + layer + format) and draw the views of one layer's weight."""
    layer = _layer(ctx, choice.layer)
    x = _weight(ctx.model_key, layer.weight.name, ctx)
    axis = channel_axis(ctx, layer.name)
    granularity = choice.granularity if x.ndim >= 2 else Granularity.PER_TENSOR
    exact = _exact_ranges(ctx.model_key, layer.weight.name, axis, x)
    sample, axis = weight_sample(x, axis)  # the sample's channels are on axis 0
    key = (ctx.model_key, layer.weight.name)
    stats = _distribution(*key, choice.bits, choice.symmetric, axis, sample, exact)
    table = _error_table(*key, choice.symmetric, granularity.value, axis, sample)
    points = _clip_points(*key, choice.bits, choice.symmetric, granularity.value, axis, sample)
    best = max(points, key=lambda p: (p.sqnr_db, p.percent))
    clip = next((p for p in points if p.percent == choice.clip_percent), None) or _clip_points(
        *key, choice.bits, choice.symmetric, granularity.value, axis, sample, percents=(choice.clip_percent,))[0]
    tq = _tq(choice.bits, choice.symmetric, granularity, axis)
    grid = _grid(stats, choice.clip_percent, tq)
    sample_note = "" if sample is x else (
        f"Large weight: {x.size:,} values. The histogram, the range methods, the clip curve and the error table "
        f"use a seeded random sample of {sample.size:,} of them (the same positions in each of its "
        f"{sample.shape[0]:,} output channels); the min / max ranges (per tensor and per channel) are exact.")
    if sample_note:
        st.caption(sample_note)
    histogram = figures.histogram_with_ranges(
        stats.edges, stats.counts, stats.range_lines, grid=grid, log_y=choice.log_y,
        grid_label=f"int{choice.bits} grid at {choice.clip_percent}% clip (per-tensor)",
        title=f"{layer.weight.name}: {x.size:,} weights"
              + ("" if sample is x else f" (histogram of a random sample of {sample.size:,})"),
        x_title="weight value")
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
                       clip_figure=clip_figure, clip=clip, best_clip=best, sample_note=sample_note)


def weight_sample(x: np.ndarray, axis: int, limit: int | None = None) -> tuple[np.ndarray, int]:
    """Return (`x`, `axis`) when `x` has at most `limit` values, else a seeded random sample and its channel axis.

    The sample keeps every output channel: it is (channels, k) with the same k random positions
    (seeded, without repeats, in storage order) from each channel, k = limit // channels (at least
    1); its channel axis is 0. A 1-D weight gives a 1-D sample of `limit` values.
    """
    limit = MAX_HISTOGRAM_ELEMENTS if limit is None else limit
    if x.size <= limit:
        return x, axis
    rng = np.random.default_rng(SAMPLE_SEED)
    if x.ndim < 2:
        return x[np.sort(rng.choice(x.size, limit, replace=False))], 0
    rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    k = max(1, limit // rows.shape[0])
    return np.ascontiguousarray(rows[:, np.sort(rng.choice(rows.shape[1], k, replace=False))]), 0


def _sqnr_by_bits(table: pd.DataFrame, *, symmetric: bool, granularity: Granularity) -> go.Figure:
    series = {method: table.loc[table["method"] == method, "SQNR (dB)"].tolist() for method in table["method"].unique()}
    return figures.lines(BIT_WIDTHS, series, colors=figures.METHOD_COLORS, x_title="bits", y_title="SQNR (dB)",
                         title=f"SQNR by bit-width ({'symmetric' if symmetric else 'asymmetric'}, "
                               f"{granularity.value.replace('_', '-')})")


def channel_axis(ctx: LabContext, layer_name: str) -> int:
    """The output-channel axis of a layer's weight, exactly the export's (quant_core.numerics.axes.weight_axes:
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
def _exact_ranges(model_key: str, weight_name: str, axis: int, _x: np.ndarray):
    """(tensor_lo, tensor_hi, channel_lo, channel_hi) of the full weight (channels None for a 1-D weight)."""
    tensor_lo, tensor_hi = (float(v) for v in tensor_range(_x, granularity=Granularity.PER_TENSOR, name=weight_name))
    channel_lo = channel_hi = None
    if _x.ndim >= 2:
        channel_lo, channel_hi = tensor_range(_x, granularity=Granularity.PER_CHANNEL, axis=axis, name=weight_name)
    return tensor_lo, tensor_hi, channel_lo, channel_hi


@st.cache_data(max_entries=64, show_spinner=False)
def _distribution(model_key: str, weight_name: str, bits: int, symmetric: bool, axis: int,
                  _x: np.ndarray, _exact) -> _Distribution:
    """Histogram, each method's per-tensor range (MSE depends on the bits) and the channel ranges.

    `_x` is the weight or its sample (`weight_sample`); `_exact` its full tensor's `_exact_ranges`,
    which the histogram spans and the minmax line shows.
    """
    tensor_lo, tensor_hi, channel_lo, channel_hi = _exact
    counts, edges = np.histogram(_x, bins=HISTOGRAM_BINS, range=(tensor_lo, tensor_hi) if tensor_hi > tensor_lo else None)
    lines = []
    for method in METHODS:
        if method == RangeMethod.MINMAX:
            lo, hi = tensor_lo, tensor_hi  # exact, from the full tensor
        else:
            lo, hi = _method_range(_x, _tq(bits, symmetric, Granularity.PER_TENSOR, axis, method), weight_name,
                                   model_key)
        lines.append(figures.RangeLine(method.value, float(lo), float(hi), figures.METHOD_COLORS[method.value]))
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
    reference = rows.reshape(-1).astype(np.float64)
    signal = float(np.sum(np.square(reference)))
    points = []
    chunk = max(1, (1 << 22) // _x.size)  # candidates per call: bounds the stacked copy to 4M values
    for start in range(0, len(percents), chunk):
        # float32 like `lo * (percent / 100)` on the float32 range: the same scales as quantize_tensor gets
        fractions = (np.array(percents[start:start + chunk], dtype=np.float64)[:, None] / 100.0).astype(np.float32)
        scale, zero_point = qparams_from_range(lo * fractions, hi * fractions, tq.format, symmetric=symmetric)
        stacked = np.broadcast_to(rows, (len(fractions), *rows.shape)).reshape(-1, rows.shape[1])
        values = fake_quantize(stacked, scale.reshape(-1), zero_point.reshape(-1), tq.format, axis=0,
                               name=weight_name).reshape(len(fractions), -1)
        for percent, row in zip(percents[start:start + chunk], values):
            # metrics.mse and metrics.sqnr_db in float64, sharing the reference and its power across candidates
            noise = float(np.sum(np.square(reference - row.astype(np.float64))))
            points.append(ClipPoint(int(percent), noise / reference.size, ratio_db(signal, noise)))
    return tuple(points)


def _tq(bits: int, symmetric: bool, granularity: Granularity, axis: int,
        method: RangeMethod = RangeMethod.MINMAX) -> TensorQuant:
    return TensorQuant(NumberFormat(FormatKind.INT, bits), symmetric=symmetric, granularity=granularity,
                       axis=axis, range_method=method)


def _method_range(x: np.ndarray, tq: TensorQuant, name: str, model_key: str):
    """quant_core.numerics.ranges.weight_ranges, cached; only MSE depends on the bit-width, so the others share one entry."""
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

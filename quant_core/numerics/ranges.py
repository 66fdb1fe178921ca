"""Range estimators: a histogram (or a weight tensor) in, a clipping range `[lo, hi]` out.

Every estimator returns a `RangeResult`: the range, the fraction of values it clips, and for the
search-based methods the curve it minimised (what a chart of the choice needs). The range then
goes through `qparams.qparams_from_range`, the one formula for scale and zero point.

    range_minmax      [min, max] of everything seen
    range_percentile  onnxruntime's PercentileCalibrater, bit for bit
    range_mse         the clipping threshold minimising the squared fake-quantization error
    range_entropy     onnxruntime's EntropyCalibrater (TensorRT KL search), vectorized
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.formats import Granularity, NumberFormat, RangeMethod
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import as_float32, natural_axis, split3, tensor_range

NUM_QUANTIZED_BINS = 128
MSE_CANDIDATES = 128
_EPS = 1e-4  # onnxruntime's smooth_distribution: empty bins get this mass
# Weights (range estimated straight from the tensor, per channel or group):
WEIGHT_BINS = 2048           # per-tensor histogram
ROW_BINS = 256               # per-channel MSE histograms: small rows need few bins
ROW_ENTROPY_BINS = 256       # per-channel entropy: the search clips to no less than 128/256 of max|x|
ROW_MSE_CANDIDATES = 64       # per channel
GROUP_MSE_CANDIDATES = 32     # per group (16-256 values, on a grid of at most 2^bits levels)
_ROW_CHUNK_ELEMENTS = 1 << 18  # rows x candidates x bins per step: temporaries stay in cache


@dataclass(frozen=True, eq=False)
class RangeResult:
    """A clipping range and what a chart of it needs.

    thresholds, curve   the candidate thresholds searched and the loss at each (MSE, KL), else None
    clipped_fraction    fraction of the values outside [lo, hi] (from the histogram, values
                        assumed uniform within a bin)
    """

    method: RangeMethod
    lo: float
    hi: float
    clipped_fraction: float
    thresholds: np.ndarray | None = None
    curve: np.ndarray | None = None
    curve_label: str | None = None


def _require_data(hist: StreamingHistogram) -> None:
    if not isinstance(hist, StreamingHistogram):
        raise QuantLabError(f"range estimators take a StreamingHistogram, got {type(hist).__name__}")
    if hist.count == 0:
        raise QuantLabError(f"the histogram of tensor {hist.name!r} is empty: update it with at least one batch")


def _clipped_fraction(hist: StreamingHistogram, lo: float, hi: float) -> float:
    """Return the fraction of the histogram's values below lo or above hi (uniform within a bin)."""
    cumulative = np.concatenate(([0], np.cumsum(hist.counts))).astype(np.float64)
    edges = hist.edges.astype(np.float64)
    below = 0.0 if lo <= hist.min else np.interp(lo, edges, cumulative)
    above = 0.0 if hi >= hist.max else cumulative[-1] - np.interp(hi, edges, cumulative)
    return float((below + above) / cumulative[-1])


def _clamp(lo, hi, hist: StreamingHistogram) -> tuple[float, float]:
    # As onnxruntime: a threshold beyond the data is pulled back to the data's min / max.
    lo, hi = _clamp_rows(np.asarray(lo), np.asarray(hi), np.asarray(hist.min), np.asarray(hist.max))
    return float(lo), float(hi)


def _clamp_rows(lo, hi, data_lo, data_hi):
    """Pull thresholds beyond the data back to [data_lo, data_hi], as onnxruntime does.

    Notes
    -----
    Clamping can invert a range (lo > hi): a symmetric threshold t below all of one-signed data,
    or both thresholds inside the single bin of a constant. Then the bound that does the clipping
    is kept on both sides: -t for negative data, +t for positive data (the grid spans zero
    anyway), and a constant gets exactly its value.
    """
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    data_lo, data_hi = np.asarray(data_lo, np.float64), np.asarray(data_hi, np.float64)
    raw_lo, raw_hi = np.maximum(lo, data_lo), np.minimum(hi, data_hi)
    inverted = raw_lo > raw_hi
    constant = data_lo == data_hi
    keep_lo = inverted & (data_hi <= 0)  # negative data: -t clips
    keep_hi = inverted & ~keep_lo  # positive data: +t clips
    out_lo = np.where(constant & inverted, data_lo, np.where(keep_hi, raw_hi, raw_lo))
    out_hi = np.where(constant & inverted, data_hi, np.where(keep_lo, raw_lo, raw_hi))
    return out_lo, out_hi


def range_minmax(hist: StreamingHistogram) -> RangeResult:
    """Return [min, max] of every value seen; clips nothing (onnxruntime's MinMaxCalibrater)."""
    _require_data(hist)
    return RangeResult(RangeMethod.MINMAX, float(hist.min), float(hist.max), 0.0)


def range_percentile(hist: StreamingHistogram, percentile: float = 99.99, *, symmetric: bool = False) -> RangeResult:
    """Return the range holding `percentile` % of the values, as onnxruntime's PercentileCalibrater.

    symmetric:  t = first |x| bin edge where the CDF of |x| reaches p / 100;  range [-t, t]
    otherwise:  cut (100 - p) / 200 on each side of the signed histogram's CDF
    then lo >= min and hi <= max (a threshold beyond the data is pulled back to it).

    Notes
    -----
    The thresholds are bin edges, as in onnxruntime: the upper one is the lower edge of the bin
    where the CDF reaches the cut, so the values of that bin count as clipped. When every value
    falls in one bin that edge is below lo; hi is then raised to lo (onnxruntime returns lo > hi).
    """
    _require_data(hist)
    if not 0.0 < percentile <= 100.0:
        raise QuantLabError(f"percentile must be in (0, 100], got {percentile}")
    counts, edges = (hist.abs_counts, hist.abs_edges) if symmetric else (hist.counts, hist.edges)
    cdf = np.cumsum(counts / counts.sum())  # onnxruntime's arithmetic, so ties fall the same way
    if symmetric:
        threshold = edges[np.searchsorted(cdf, percentile / 100.0)]
        lo, hi = -threshold, threshold
    else:
        cut = (100.0 - percentile) / 200.0
        lo, hi = edges[np.searchsorted(cdf, cut)], edges[np.searchsorted(cdf, 1.0 - cut)]
    lo, hi = _clamp(lo, hi, hist)
    hi = max(hi, lo)  # all values in one bin: onnxruntime's hi (that bin's lower edge) can fall below lo
    return RangeResult(RangeMethod.PERCENTILE, lo, hi, _clipped_fraction(hist, lo, hi))


# ---------------------------------------------------------------------------------------------
# MSE: expected squared error of fake-quantizing the histogram's bin centres, per candidate range
# ---------------------------------------------------------------------------------------------

def _mse_curves(centers: np.ndarray, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                fmt: NumberFormat, symmetric: bool) -> np.ndarray:
    """Return the weighted mean of (fake_quantize(c) - c)^2 for each row and candidate range.

    centers, weights (rows, bins); lo, hi (rows, candidates) -> (rows, candidates)
    """
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    qmin, qmax = fmt.limits
    # float32, as quantize.py computes (and 7x faster than float64 for these broadcasts).
    scale = scale[..., None]
    zero_point = zero_point.astype(np.float32)[..., None]
    x = centers.astype(np.float32)[:, None, :]
    # clip(rint(x / s), qmin - zp, qmax - zp) * s - x: one fewer pass than adding zp back.
    error = np.rint(x / scale)
    np.clip(error, qmin - zero_point, qmax - zero_point, out=error)
    error *= scale
    error -= x
    np.square(error, out=error)
    weights = np.asarray(weights, dtype=np.float64)
    weights32 = weights.astype(np.float32)
    if error.shape[0] == 1:  # one histogram: a BLAS mat-vec; many rows: einsum beats batched matmul
        weighted = np.matmul(error[0], weights32[0])[None, :]
    else:
        weighted = np.einsum("rkb,rb->rk", error, weights32)
    return weighted.astype(np.float64) / weights.sum(axis=1, keepdims=True)


def _mse_candidates(lo, hi, count: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return candidate (lo, hi) ranges (rows, count) and the threshold each is plotted at.

    symmetric: [-t, t] for t = k/count x max|x|; otherwise [k/count x min, k/count x max].
    """
    fraction = np.arange(1, count + 1) / count
    lo, hi = np.asarray(lo, np.float64)[:, None], np.asarray(hi, np.float64)[:, None]
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    thresholds = absmax * fraction
    if symmetric:
        return -thresholds, thresholds, thresholds
    return lo * fraction, hi * fraction, thresholds


def range_mse(hist: StreamingHistogram, fmt: NumberFormat, *, symmetric: bool = False,
              candidates: int = MSE_CANDIDATES) -> RangeResult:
    """Return the range that minimises the mean squared error of fake-quantizing to `fmt`.

    MSE(range) = sum_b counts_b * (fake_quantize(center_b) - center_b)^2 / sum_b counts_b, with the
    range's scale and zero point from qparams_from_range, over `candidates` ranges shrinking the
    min-max range: [-t, t] for t = k/K x max|x| (symmetric), else k/K x [min, max]; k = 1..K.
    The winner is clamped to [min, max] (for symmetric, the same grid: qparams re-symmetrize it).

    Notes
    -----
    Only integer formats have the uniform grid this searches: other formats (fp16, bf16, fp8,
    binary, ternary, k-means) return the min-max range. Ties go to the widest range, so a flat
    curve (e.g. values all below the smallest step) keeps min-max.
    """
    _require_data(hist)
    if not isinstance(fmt, NumberFormat):
        raise QuantLabError(f"range_mse needs a NumberFormat, got {type(fmt).__name__}")
    if not fmt.is_integer:
        return range_minmax(hist)
    if not 2 <= candidates <= 4096:
        raise QuantLabError(f"candidates must be between 2 and 4096, got {candidates}")
    used = hist.counts > 0
    centers = ((hist.edges[:-1].astype(np.float64) + hist.edges[1:]) / 2)[used][None, :]
    weights = hist.counts[used].astype(np.float64)[None, :]
    lo, hi, thresholds = _mse_candidates([hist.min], [hist.max], candidates, symmetric)
    curve = _mse_curves(centers, weights, lo, hi, fmt, symmetric)[0]
    best = curve.size - 1 - int(np.argmin(curve[::-1]))  # ties: the widest range
    # A symmetric [-t, t] wider than the data on one side is the same grid clamped to the data.
    lo, hi = _clamp(lo[0, best], hi[0, best], hist)
    return RangeResult(RangeMethod.MSE, lo, hi, _clipped_fraction(hist, lo, hi), thresholds[0], curve,
                       f"MSE of {fmt.name} fake-quantization")


# ---------------------------------------------------------------------------------------------
# Entropy: onnxruntime's get_entropy_threshold, every candidate at once
# ---------------------------------------------------------------------------------------------

def _entropy_plan(bins: int, num_quantized_bins: int):
    """Return the candidate slices [start, end) of a `bins`-bin signed histogram, as onnxruntime's loop."""
    zero = bins // 2
    i = np.arange(num_quantized_bins // 2, zero + 1)
    start = zero - i
    end = np.minimum(zero + i + 1, bins)
    return start, end


def _xlogx(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, values * np.log(np.where(values > 0, values, 1.0)), 0.0)


def _kl_curves(counts: np.ndarray, num_quantized_bins: int) -> np.ndarray:
    """Return KL(p || q) for every candidate of onnxruntime's entropy search, per histogram row.

    counts (rows, bins) -> (rows, candidates). For candidate [start, end):
      p = counts[start:end], with the counts left of start added to p[0] and right of end to p[-1]
      quantized_j = sum of counts[start:end] over chunk j of m = len // nq bins (the remainder
                    bins are added to the last one), q = floor(quantized_j / nonzero-p bins of
                    chunk j) on every bin of chunk j, 0 on the remainder bins
      both smoothed (zeros -> eps = 1e-4, the same mass taken evenly from the non-zeros), then
      KL = sum p~/P log((p~/P) / (q~/Q)) = (sum p~ log p~ - sum p~ log q~) / P - log P + log Q
    q~ is constant over a chunk, so sum p~ log q~ needs only per-chunk sums of p~ (prefix sums);
    sum p~ log p~ over the inner bins uses a second-order Taylor expansion in the smoothing
    eps1 = 1e-4 x zeros / non-zeros (error <= eps1^3 / (6 (1 - eps1)^2) per bin, as counts >= 1),
    the two end bins exactly.
    """
    counts = np.asarray(counts, dtype=np.int64)
    rows, bins = counts.shape
    nq = num_quantized_bins
    start, end = _entropy_plan(bins, nq)
    length = end - start
    merged = length // nq
    nonzero = counts > 0
    zero_col = np.zeros((rows, 1), dtype=np.int64)
    cum = np.concatenate((zero_col, np.cumsum(counts, axis=1)), axis=1)
    cum_nonzero = np.concatenate((zero_col, np.cumsum(nonzero, axis=1)), axis=1)
    total = cum[:, -1:].astype(np.float64)

    first, last = counts[:, start], counts[:, end - 1]
    p_first, p_last = first + cum[:, start], last + (cum[:, -1:] - cum[:, end])
    nonzero_p = (cum_nonzero[:, end] - cum_nonzero[:, start] + (p_first > 0) - (first > 0)
                 + (p_last > 0) - (last > 0))
    zeros_p = length - nonzero_p

    bounds = start[:, None] + np.arange(nq + 1)[None, :] * merged[:, None]  # (candidates, nq + 1)
    chunk_sum = np.diff(cum[:, bounds], axis=-1)                             # (rows, candidates, nq)
    chunk_nonzero = np.diff(cum_nonzero[:, bounds], axis=-1)
    covered = bounds[:, -1]
    tail_len = end - covered
    no_tail = tail_len == 0
    chunk_nonzero[:, :, 0] += (p_first > 0).astype(np.int64) - (first > 0)
    chunk_nonzero[:, no_tail, -1] += ((p_last > 0).astype(np.int64) - (last > 0))[:, no_tail]
    quantized = chunk_sum.copy()
    quantized[:, :, -1] += cum[:, end] - cum[:, covered]
    # onnxruntime assigns a float quotient into an int64 array: truncation.
    q_level = np.trunc(quantized / np.maximum(chunk_nonzero, 1)) * (chunk_nonzero > 0)

    zeros_q = (q_level == 0).sum(axis=-1) * merged + tail_len
    nonzero_q = length - zeros_q
    with np.errstate(divide="ignore", invalid="ignore"):
        eps_p = _EPS * zeros_p / nonzero_p
        eps_q = _EPS * zeros_q / nonzero_q

    # p~ mass per chunk: the counts (with the outliers folded into the end bins), +eps per empty
    # bin, -eps_p per non-empty one; what is left of P sits on the tail, where q~ = eps.
    mass = chunk_sum.astype(np.float64)
    mass[:, :, 0] += cum[:, start]
    mass[:, no_tail, -1] += (cum[:, -1:] - cum[:, end])[:, no_tail]
    mass += _EPS * (merged[None, :, None] - chunk_nonzero) - eps_p[..., None] * chunk_nonzero
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(np.where(q_level > 0, q_level - eps_q[..., None], _EPS))
    log_q *= mass
    cross = log_q.sum(axis=-1) + (total - mass.sum(axis=-1)) * np.log(_EPS)

    # sum p~ log p~: inner bins by Taylor expansion around the counts, end bins exactly.
    safe = np.where(nonzero, counts, 1).astype(np.float64)
    prefix = [np.concatenate((np.zeros((rows, 1)), np.cumsum(np.where(nonzero, term, 0.0), axis=1)), axis=1)
              for term in (_xlogx(counts.astype(np.float64)), np.log(safe) + 1.0, 1.0 / safe)]
    inner = [s[:, end - 1] - s[:, start + 1] for s in prefix]
    self_term = inner[0] - eps_p * inner[1] + 0.5 * eps_p**2 * inner[2]
    for end_bin in (p_first, p_last):
        self_term = self_term + np.where(end_bin > 0, _xlogx(end_bin - eps_p), 0.0)
    self_term = self_term + zeros_p * _EPS * np.log(_EPS)

    q_total = q_level.sum(axis=-1) * merged
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (self_term - cross) / total - np.log(total) + np.log(q_total)
    return np.where((nonzero_q > 0) & (nonzero_p > 0), kl, np.inf)


def range_entropy(hist: StreamingHistogram, num_quantized_bins: int = NUM_QUANTIZED_BINS) -> RangeResult:
    """Return the range minimising the KL divergence of its quantized histogram (TensorRT, as onnxruntime).

    Candidates are the symmetric slices [edges[n/2 - i], edges[n/2 + i + 1]] of the signed
    histogram for i = nq/2 .. n/2; the one with the smallest KL (first on ties) wins, then
    lo >= min, hi <= max. See `_kl_curves` for the divergence, which equals onnxruntime's
    `get_entropy_threshold` up to float rounding (onnxruntime sums in float32).
    """
    _require_data(hist)
    bins = hist.counts.size
    if not isinstance(num_quantized_bins, (int, np.integer)) or not 2 <= num_quantized_bins <= bins:
        raise QuantLabError(f"num_quantized_bins must be an integer between 2 and the histogram's {bins} bins, "
                            f"got {num_quantized_bins}")
    start, end = _entropy_plan(bins, num_quantized_bins)
    curve = _kl_curves(hist.counts[None, :], num_quantized_bins)[0]
    best = int(np.argmin(curve))
    lo, hi = _clamp(hist.edges[start[best]], hist.edges[end[best]], hist)
    return RangeResult(RangeMethod.ENTROPY, lo, hi, _clipped_fraction(hist, lo, hi),
                       hist.edges[end].astype(np.float64), curve, "KL divergence (nats)")


def estimate_range(hist: StreamingHistogram, tq: TensorQuant) -> RangeResult:
    """Return the range of tq.range_method for the histogram (percentile, symmetry and format from tq)."""
    method = tq.range_method
    if method == RangeMethod.MINMAX:
        return range_minmax(hist)
    if method == RangeMethod.PERCENTILE:
        return range_percentile(hist, tq.percentile, symmetric=tq.symmetric)
    if method == RangeMethod.MSE:
        return range_mse(hist, tq.format, symmetric=tq.symmetric)
    return range_entropy(hist)


# ---------------------------------------------------------------------------------------------
# Weights: ranges straight from the tensor, per tensor, channel or group
# ---------------------------------------------------------------------------------------------

def _rows_layout(x: np.ndarray, tq: TensorQuant):
    """Return [rows (n, m) float32, ...] and a function that puts per-row results in tq's layout."""

    axis = natural_axis(x.shape, tq.granularity, "weight") if tq.axis is None else tq.axis
    axis %= x.ndim
    outer, length, inner = split3(x.shape, axis)
    x3 = x.reshape(outer, length, inner)
    if tq.granularity == Granularity.PER_CHANNEL:
        return [x3.transpose(1, 0, 2).reshape(length, -1)], lambda parts: parts[0]
    block = tq.block_size
    full = length // block
    blocks = -(-length // block)
    parts = []
    if full:
        x4 = x3[:, :full * block].reshape(outer, full, block, inner)
        parts.append(x4.transpose(0, 1, 3, 2).reshape(-1, block))
    if full < blocks:
        parts.append(x3[:, full * block:].transpose(0, 2, 1).reshape(outer * inner, -1))
    shape = x.shape[:axis] + (blocks,) + x.shape[axis + 1:]

    def assemble(results):
        pieces = []
        if full:
            pieces.append(results[0].reshape(outer, full, inner))
        if full < blocks:
            pieces.append(results[-1].reshape(outer, 1, inner))
        return np.concatenate(pieces, axis=1).reshape(shape)

    return parts, assemble


def _row_percentile(rows: np.ndarray, percentile: float, symmetric: bool):
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    if symmetric:
        t = np.quantile(np.abs(rows), percentile / 100.0, axis=1, method="inverted_cdf")
        return _clamp_rows(-t, t, lo, hi)
    cut = (100.0 - percentile) / 200.0
    q = np.quantile(rows, [cut, 1.0 - cut], axis=1, method="inverted_cdf")
    return _clamp_rows(q[0], q[1], lo, hi)


def _row_histograms(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int):
    """Return per-row histograms (counts (n, bins), edges (n, bins + 1)) over each row's [lo, hi]."""
    lo, hi = lo.astype(np.float64), hi.astype(np.float64)
    flat = hi <= lo
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)  # numpy's rule for a flat range
    width = (hi - lo) / bins
    index = np.clip(((rows - lo[:, None]) / width[:, None]).astype(np.int64), 0, bins - 1)
    index += np.arange(rows.shape[0])[:, None] * bins
    counts = np.bincount(index.reshape(-1), minlength=rows.shape[0] * bins).reshape(rows.shape[0], bins)
    edges = lo[:, None] + width[:, None] * np.arange(bins + 1)
    return counts, edges


def _row_chunks(rows: int, per_row: int):
    step = max(1, _ROW_CHUNK_ELEMENTS // max(per_row, 1))
    return [slice(i, i + step) for i in range(0, rows, step)]


def _row_mse(rows: np.ndarray, fmt: NumberFormat, symmetric: bool):
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    if not fmt.is_integer:
        return lo, hi
    if rows.shape[1] <= ROW_BINS:  # small rows (groups): the values themselves, weight 1
        centers, weights = rows, np.ones(rows.shape)
        candidates = GROUP_MSE_CANDIDATES
    else:
        counts, edges = _row_histograms(rows, lo, hi, ROW_BINS)
        centers, weights = (edges[:, :-1] + edges[:, 1:]) / 2, counts.astype(np.float64)
        candidates = ROW_MSE_CANDIDATES
    out_lo, out_hi = np.empty(rows.shape[0]), np.empty(rows.shape[0])
    for part in _row_chunks(rows.shape[0], centers.shape[1] * candidates):
        cand_lo, cand_hi, _ = _mse_candidates(lo[part], hi[part], candidates, symmetric)
        curves = _mse_curves(centers[part], weights[part], cand_lo, cand_hi, fmt, symmetric)
        best = candidates - 1 - np.argmin(curves[:, ::-1], axis=1)  # ties: the widest range
        pick = np.arange(best.size)
        out_lo[part], out_hi[part] = _clamp_rows(cand_lo[pick, best], cand_hi[pick, best], lo[part], hi[part])
    return out_lo, out_hi


def _row_entropy(rows: np.ndarray):
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    counts, edges = _row_histograms(rows, -absmax, absmax, ROW_ENTROPY_BINS)
    start, end = _entropy_plan(ROW_ENTROPY_BINS, NUM_QUANTIZED_BINS)
    best = np.empty(rows.shape[0], dtype=np.int64)
    for part in _row_chunks(rows.shape[0], start.size * (NUM_QUANTIZED_BINS + 1) * 4):
        best[part] = np.argmin(_kl_curves(counts[part], NUM_QUANTIZED_BINS), axis=1)
    pick = np.arange(rows.shape[0])
    return _clamp_rows(edges[pick, start[best]], edges[pick, end[best]], lo, hi)


def weight_ranges(x, tq: TensorQuant, *, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Return float32 `(lo, hi)` for a weight at tq's granularity, by tq.range_method.

    Shapes as quantize.tensor_range: () per tensor, (x.shape[axis],) per channel, x.shape with
    shape[axis] = ceil(x.shape[axis] / block_size) per group.

    per tensor    estimate_range on a 2048-bin histogram of the tensor
    per channel   percentile: exact order statistics of each channel (no histogram);
                  MSE (64 candidates): a 256-bin histogram per channel (a channel of at most
                  256 values uses the values themselves); entropy: a 256-bin signed histogram
                  per channel (so it clips to no less than 1/2 of max|x|: the search's cost
                  grows with bins x 128 per channel); all channels at once
    per group     percentile: order statistics; MSE (32 candidates): on the group's values

    Notes
    -----
    Entropy per group raises ConfigError (a group of 16-256 values has no meaningful 128-bin
    distribution). NaN or Inf raise QuantLabError naming the tensor.
    """

    lo, hi = tensor_range(x, granularity=tq.granularity, axis=tq.axis, block_size=tq.block_size, name=name)
    method = tq.range_method
    if method == RangeMethod.MINMAX:
        return lo, hi
    x = as_float32(x, name)
    if tq.granularity == Granularity.PER_TENSOR:
        result = estimate_range(StreamingHistogram.from_array(x, WEIGHT_BINS, name=name), tq)
        return np.float32(result.lo), np.float32(result.hi)
    if method == RangeMethod.ENTROPY and tq.granularity == Granularity.PER_GROUP:
        raise ConfigError(f"tensor {name!r}: the entropy range needs a histogram per channel or tensor; "
                          "use minmax, percentile or mse per group")
    parts, assemble = _rows_layout(x, tq)
    results = []
    for rows in parts:
        if method == RangeMethod.PERCENTILE:
            results.append(_row_percentile(rows, tq.percentile, tq.symmetric))
        elif method == RangeMethod.MSE:
            results.append(_row_mse(rows, tq.format, tq.symmetric))
        else:
            results.append(_row_entropy(rows))
    return (assemble([r[0] for r in results]).astype(np.float32),
            assemble([r[1] for r in results]).astype(np.float32))

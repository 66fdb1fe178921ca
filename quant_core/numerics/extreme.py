"""Extreme low-bit formats: binary (sign x scale), ternary (TWN) and k-means codebooks.

binary   w' = scale_c * sign(w),  scale_c = mean |w| over output channel c; sign(0) = +1
ternary  (Ternary Weight Networks, Li & Liu 2016), per output channel c:
         delta_c = 0.7 * mean |w|,  code = sign(w) if |w| > delta_c else 0,
         scale_c = mean of |w| over |w| > delta_c,  w' = scale_c * code
kmeans   2^bits centroids per tensor, found by Lloyd's algorithm on the sorted values: deterministic
         (quantile initialisation, no random numbers), each iteration O(k log n).

The output channels lie along `axis` (default 0; `quantize_tensor` passes the layer's natural axis,
quant_core.numerics.axes: a MatMul weight (K, N) has them on axis 1). A tensor with fewer than 2 dimensions
(a bias) counts as a single channel.
"""
from __future__ import annotations

import numpy as np

from quant_core.errors import ConfigError
from quant_core.numerics.formats import FormatKind, NumberFormat
from quant_core.numerics.quantize import QuantizedTensor, as_float32, refuse_non_finite

TWN_THRESHOLD = 0.7
KMEANS_MAX_ITERATIONS = 100


def _channel_axis(x: np.ndarray, axis: int, name: str) -> int | None:
    """Return `axis` made non-negative, or None for a tensor of fewer than 2 dimensions (one channel)."""
    if x.ndim < 2:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ConfigError(f"axis {axis!r} is out of range for tensor {name!r} with {x.ndim} dimension(s)")
    return int(axis) % x.ndim


def _channels(x: np.ndarray, axis: int | None) -> np.ndarray:
    """View x as (channels, elements per channel): one row per index of `axis` (None: a single row)."""
    if axis is None:
        return x.reshape(1, -1)
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _channel_shape(x: np.ndarray, axis: int | None) -> tuple[int, ...]:
    """The shape a per-channel vector takes to broadcast against x."""
    if axis is None:
        return (1,) * x.ndim
    return tuple(x.shape[axis] if d == axis else 1 for d in range(x.ndim))


def binarize(x, *, axis: int = 0, name: str = "tensor") -> QuantizedTensor:
    """Return w' = mean|w| * sign(w) per output channel (one scale per index of `axis`), codes in {-1, +1}.

    Notes
    -----
    Zero maps to +1 (a binary weight has no zero). An all-zero channel gets scale 0.
    """
    x = as_float32(x, name)
    refuse_non_finite(x, name)
    axis = _channel_axis(x, axis, name)
    scale = np.abs(_channels(x, axis)).mean(axis=1, dtype=np.float64).astype(np.float32)
    codes = np.where(x >= 0, 1, -1).astype(np.int8)
    values = codes.astype(np.float32) * scale.reshape(_channel_shape(x, axis))
    return QuantizedTensor(values, scale, None, codes, None, NumberFormat(FormatKind.BINARY), axis)


def ternarize(x, *, axis: int = 0, name: str = "tensor") -> QuantizedTensor:
    """Return TWN ternary weights per output channel (along `axis`): w' = scale * code, code in {-1, 0, +1}.

    delta = 0.7 * mean|w|; code = sign(w) where |w| > delta else 0; scale = mean |w| over |w| > delta.

    Notes
    -----
    A channel with no |w| > delta (all zeros) gets scale 0 and all codes 0.
    """
    x = as_float32(x, name)
    refuse_non_finite(x, name)
    axis = _channel_axis(x, axis, name)
    shape = _channel_shape(x, axis)
    magnitude = np.abs(_channels(x, axis))
    delta = TWN_THRESHOLD * magnitude.mean(axis=1, dtype=np.float64, keepdims=True)
    kept = magnitude > delta
    count = kept.sum(axis=1)
    total = np.where(kept, magnitude, 0.0).sum(axis=1, dtype=np.float64)
    scale = np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)
    # The same comparison in x's own layout (float64 |x| > float64 delta, as above): no transpose back.
    kept_here = np.abs(x).astype(np.float64) > delta.reshape(shape)
    codes = (np.sign(x) * kept_here).astype(np.int8)
    values = codes.astype(np.float32) * scale.reshape(shape)
    return QuantizedTensor(values, scale, None, codes, None, NumberFormat(FormatKind.TERNARY), axis)


def _lloyd_sorted(sorted_x: np.ndarray, k: int) -> np.ndarray:
    """Run Lloyd's 1-D k-means on sorted values; return k non-decreasing float64 centroids.

    With sorted data each cluster is a contiguous run between midpoints of adjacent centroids, so an
    iteration is k binary searches plus k differences of a prefix sum.
    """
    n = sorted_x.size
    prefix = np.concatenate(([0.0], np.cumsum(sorted_x, dtype=np.float64)))
    # Quantile initialisation: the centre of each of k equal-count slices.
    centroids = sorted_x[np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)].astype(np.float64)
    for _ in range(KMEANS_MAX_ITERATIONS):
        edges = np.concatenate(([0], np.searchsorted(sorted_x, (centroids[:-1] + centroids[1:]) / 2), [n]))
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        # An empty cluster keeps its centroid (it can happen with repeated values).
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        updated = np.maximum.accumulate(updated)  # guard the order against rounding
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    return centroids


def kmeans_codebook(x, bits: int, *, name: str = "tensor") -> QuantizedTensor:
    """Quantize x to a codebook of 2^bits centroids (per tensor) found by 1-D k-means.

    Returns codes (uint8 index of the nearest centroid) and the codebook (float32, sorted ascending,
    exactly 2^bits entries). Deterministic: the same x always gives the same codebook.

    Notes
    -----
    A tensor with at most 2^bits distinct values is represented exactly: the codebook holds those
    values (repeated at the end to fill 2^bits entries).
    """
    fmt = NumberFormat(FormatKind.KMEANS, bits)
    x = as_float32(x, name)
    refuse_non_finite(x, name)
    k = 2**fmt.bits
    flat = x.reshape(-1)
    sorted_x = np.sort(flat)
    distinct = sorted_x[np.concatenate(([True], sorted_x[1:] != sorted_x[:-1]))]
    if distinct.size <= k:
        codebook = np.concatenate((distinct, np.repeat(distinct[-1:], k - distinct.size))).astype(np.float32)
    else:
        codebook = _lloyd_sorted(sorted_x, k).astype(np.float32)
    # Nearest centroid: compare against the midpoints of the (sorted) codebook.
    midpoints = (codebook[:-1].astype(np.float64) + codebook[1:]) / 2
    codes = np.searchsorted(midpoints, flat, side="left").astype(np.uint8)
    # With repeated centroids, point every code at the first copy, so only distinct entries are used.
    first = np.searchsorted(codebook, codebook, side="left").astype(np.uint8)
    codes = first[codes].reshape(x.shape)
    values = codebook[codes]
    return QuantizedTensor(values, None, None, codes, codebook, fmt)

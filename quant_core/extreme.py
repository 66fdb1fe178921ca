"""Extreme low-bit formats: binary (sign x scale), ternary (TWN) and k-means codebooks.

binary   w' = scale_c * sign(w),  scale_c = mean |w| over output channel c (axis 0); sign(0) = +1
ternary  (Ternary Weight Networks, Li & Liu 2016), per output channel c:
         delta_c = 0.7 * mean |w|,  code = sign(w) if |w| > delta_c else 0,
         scale_c = mean of |w| over |w| > delta_c,  w' = scale_c * code
kmeans   2^bits centroids per tensor, found by Lloyd's algorithm on the sorted values: deterministic
         (quantile initialisation, no random numbers), each iteration O(k log n).

A tensor with fewer than 2 dimensions (a bias) counts as a single channel.
"""
from __future__ import annotations

import numpy as np

from .formats import FormatKind, NumberFormat
from .quantize import QuantizedTensor, _as_float32, _refuse_non_finite

TWN_THRESHOLD = 0.7
KMEANS_MAX_ITERATIONS = 100


def _channels(x: np.ndarray) -> np.ndarray:
    """View x as (channels, elements per channel): one row per output channel (axis 0)."""
    return x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.ndim - 1) if x.ndim >= 2 else (1,) * x.ndim


def binarize(x, *, name: str = "tensor") -> QuantizedTensor:
    """Return w' = mean|w| * sign(w) per output channel (axis 0), codes in {-1, +1}.

    Notes
    -----
    Zero maps to +1 (a binary weight has no zero). An all-zero channel gets scale 0.
    """
    x = _as_float32(x, name)
    _refuse_non_finite(x, name)
    rows = _channels(x)
    scale = np.abs(rows).mean(axis=1, dtype=np.float64).astype(np.float32)
    codes = np.where(x >= 0, 1, -1).astype(np.int8)
    values = codes.astype(np.float32) * scale.reshape(_channel_shape(x))
    axis = 0 if x.ndim >= 2 else None
    return QuantizedTensor(values, scale, None, codes, None, NumberFormat(FormatKind.BINARY), axis)


def ternarize(x, *, name: str = "tensor") -> QuantizedTensor:
    """Return TWN ternary weights per output channel (axis 0): w' = scale * code, code in {-1, 0, +1}.

    delta = 0.7 * mean|w|; code = sign(w) where |w| > delta else 0; scale = mean |w| over |w| > delta.

    Notes
    -----
    A channel with no |w| > delta (all zeros) gets scale 0 and all codes 0.
    """
    x = _as_float32(x, name)
    _refuse_non_finite(x, name)
    magnitude = np.abs(_channels(x))
    delta = TWN_THRESHOLD * magnitude.mean(axis=1, dtype=np.float64, keepdims=True)
    kept = magnitude > delta
    count = kept.sum(axis=1)
    total = np.where(kept, magnitude, 0.0).sum(axis=1, dtype=np.float64)
    scale = np.divide(total, count, out=np.zeros_like(total), where=count > 0).astype(np.float32)
    codes = (np.sign(_channels(x)) * kept).astype(np.int8).reshape(x.shape)
    values = codes.astype(np.float32) * scale.reshape(_channel_shape(x))
    axis = 0 if x.ndim >= 2 else None
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
    x = _as_float32(x, name)
    _refuse_non_finite(x, name)
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

"""A streaming, mergeable histogram per tensor, with memory fixed by its bin count.

`StreamingHistogram` keeps two histograms of the values it has seen, laid out exactly as
onnxruntime's `HistogramCollector` lays them out, so that our range estimators reproduce its
calibrators on the same data and bin count:

    signed    counts / edges      x over [-threshold, +threshold], threshold = max |x|
              (onnxruntime's `collect_value`: entropy, and percentile when asymmetric)
    absolute  abs_counts / abs_edges   |x| over [min |x|, max |x|] of the first batch
              (onnxruntime's `collect_absolute_value`: percentile when symmetric)

plus the exact `min`, `max` and `count`. A batch that exceeds the current range widens it the
way onnxruntime does: bins of the same width are added on the sides. Unlike onnxruntime, whose
bin count then grows without bound, once a histogram would exceed `max_bins` (default 2 x bins)
its bins are merged `m` at a time (an exact re-binning: every new edge is an old edge) into a
grid of `bins` bins of width m x the old width. Memory is therefore at most `max_bins` counts per
histogram, whatever the number of samples.

Each update first decides both grids (here: the first batch's, or the current ones widened to the batch's
range), then counts every value into them. The counting has two implementations with the same bins:
numpy (`_count_with_numpy`: np.histogram and `_histogram_on_edges`, the reference) and a compiled loop
that reads each value once for both grids (`histogram_kernel`, numba), used where numba loads.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from quant_core.errors import QuantLabError
from quant_core.numerics import histogram_kernel

DEFAULT_BINS = 2048
# Count with the compiled loop where numba provides it (tests switch it off to check the numpy path).
USE_KERNEL = True
_EMPTY = np.empty(0, dtype=np.float32)


def _uniform_edges(bins: int, lo, hi) -> np.ndarray:
    """Return the edges np.histogram uses for `bins` equal bins over (lo, hi), bit for bit.

    Notes
    -----
    When hi - lo overflows float32 (|lo|, |hi| near float32's maximum), numpy's edges are not finite:
    the edges over (lo / 2, hi / 2) are doubled instead (exact: a power-of-two scale).
    """
    if _overflows(lo, hi):
        return np.histogram(_EMPTY, bins, range=(np.float32(lo) / 2, np.float32(hi) / 2))[1] * np.float32(2)
    return np.histogram(_EMPTY, bins, range=(lo, hi))[1]


def _overflows(lo, hi) -> bool:
    """True when hi - lo is not finite in float32."""
    with np.errstate(over="ignore"):
        return not np.isfinite(np.float32(hi) - np.float32(lo))


def _edges_fit(bins: int, lo, hi) -> bool:
    """True when np.histogram can make `bins` finite, strictly increasing float32 edges over (lo, hi)."""
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            edges = _uniform_edges(bins, np.float32(lo), np.float32(hi))
        except ValueError:  # numpy's "Too many bins for data range"
            return False
    return bool(np.all(np.isfinite(edges)))


def _fitting_range(bins: int, lo, hi, *, symmetric: bool, name: str) -> tuple[np.float32, np.float32]:
    """(lo, hi) itself when its float32 edges fit (`_edges_fit`); otherwise the narrowest wider range that fits.

    Notes
    -----
    Float32 edges collide when hi - lo spans fewer than about `bins` float32 steps: values near 1e-42
    (subnormal), or a saturated sigmoid's [0.99999994, 1.0]. The range then grows by doubling from
    `bins` steps of float32 spacing until the edges are distinct: upwards from `lo` (downwards next to
    float32's maximum), or around zero when `symmetric`; every value stays inside it. Ranges that
    already fit are returned unchanged (onnxruntime's bins).
    """
    lo, hi = np.float32(lo), np.float32(hi)
    if _edges_fit(bins, lo, hi):
        return lo, hi
    with np.errstate(over="ignore"):
        largest = max(abs(lo), abs(hi))
        width = np.float32(bins) * np.spacing(np.nextafter(largest, np.float32(0)))  # finite at float32's maximum
        for _ in range(300):  # float32 spans 2**277 spacings: more doublings cannot help
            top = hi + width
            if symmetric:
                candidate = (-top, top)
            else:
                candidate = (lo, top) if np.isfinite(top) else (lo - width, hi)
            if np.all(np.isfinite(candidate)) and _edges_fit(bins, *candidate):
                return np.float32(candidate[0]), np.float32(candidate[1])
            width = width * np.float32(2)
    raise QuantLabError(f"tensor {name!r}: cannot make {bins} histogram bins over [{float(lo):.6g}, {float(hi):.6g}] "
                        "in float32 (check the model or the data)")


# Values per block of `_histogram_on_edges`: its temporaries stay in the cache (numpy's own block size).
_BLOCK = 1 << 16


def _histogram_on_edges(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return np.histogram(x, bins=edges)[0] bit for bit, without the sort numpy does for an array of edges.

    Bin i counts edges[i] <= x < edges[i + 1], the last bin also x == edges[-1]; values outside
    [edges[0], edges[-1]] are not counted (numpy's rules). The edges here are nearly uniform
    (onnxruntime's np.arange extension of np.histogram's edges), so, as numpy's own uniform-bins path
    does, each value's bin is guessed as floor((x - edges[0]) * n / (edges[-1] - edges[0])) and checked
    against the real edges; the few values a guess misses (next to an edge) get their bin from a
    binary search, so the result is exact whatever the edges.
    """
    x = x.reshape(-1)
    n = edges.size - 1
    first, last = edges[0], edges[-1]
    if x.size and (x.min() < first or x.max() > last):
        x = x[(x >= first) & (x <= last)]
    scale64 = n / (np.float64(last) - np.float64(first)) if last > first else np.inf
    # A grid about 1e-42 wide (scale overflows) or about 3e38 (x - first overflows): numpy's sort-based path.
    if not x.size or not scale64 < np.finfo(np.float32).max or _overflows(first, last):
        return np.histogram(x, bins=edges)[0]
    scale = np.float32(scale64)
    index = np.empty(x.size, dtype=np.intp)
    scaled = np.empty(min(_BLOCK, x.size), dtype=np.float32)
    for start in range(0, x.size, _BLOCK):
        block, guess = x[start:start + _BLOCK], index[start:start + _BLOCK]
        offset = scaled[:block.size]
        np.subtract(block, first, out=offset)
        offset *= scale
        np.copyto(guess, offset, casting="unsafe")  # truncation = floor: offsets are >= 0
        np.clip(guess, 0, n - 1, out=guess)
        missed = block < edges.take(guess)
        missed |= (block >= edges.take(guess + 1)) & (guess < n - 1)
        if missed.any():
            found = np.searchsorted(edges, block[missed], side="right") - 1
            guess[missed] = np.minimum(found, n - 1)  # x == edges[-1] belongs to the last bin
    return np.bincount(index, minlength=n)


class _Grid(NamedTuple):
    """Where one histogram's values are counted in this batch.

    equal_bins: np.histogram(v * scale, n, range=(first, last)), numpy's arithmetic on its own
    uniform edges (`edges`); otherwise np.histogram(v, bins=edges), any sorted edges.
    """

    first: np.float32
    last: np.float32
    edges: np.ndarray
    equal_bins: bool
    scale: np.float32 = np.float32(1.0)

    @classmethod
    def uniform(cls, first, last, edges: np.ndarray, *, scale=np.float32(1.0)) -> _Grid:
        return cls(np.float32(first), np.float32(last), edges, True, np.float32(scale))

    @classmethod
    def on_edges(cls, edges: np.ndarray) -> _Grid:
        return cls(edges[0], edges[-1], edges, False)


def _numpys_range(lo, hi) -> tuple[np.float32, np.float32]:
    """The (first, last) np.histogram bins over for range=(lo, hi): widened by 0.5 each side when equal."""
    lo, hi = np.float32(lo), np.float32(hi)
    return (lo - np.float32(0.5), hi + np.float32(0.5)) if lo == hi else (lo, hi)


def _count_with_numpy(x: np.ndarray, signed: _Grid, absolute: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The reference: x's counts on the signed grid and |x|'s on the absolute grid, by numpy."""
    def count(values: np.ndarray, grid: _Grid) -> np.ndarray:
        if not grid.equal_bins:
            return _histogram_on_edges(values, grid.edges)
        if grid.scale != 1:
            values = values * grid.scale
        return np.histogram(values, grid.edges.size - 1, range=(grid.first, grid.last))[0]
    return count(x, signed), count(np.abs(x), absolute)


def _count_with_kernel(x: np.ndarray, signed: _Grid, absolute: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The same counts as `_count_with_numpy`, in one compiled pass over x (`histogram_kernel`)."""
    counts = np.zeros(signed.edges.size - 1, dtype=np.int64)
    abs_counts = np.zeros(absolute.edges.size - 1, dtype=np.int64)
    _kernel()(x, signed.scale, signed.first, signed.last, signed.edges, counts, signed.equal_bins,
              absolute.first, absolute.last, absolute.edges, abs_counts, absolute.equal_bins)
    return counts, abs_counts


def _kernel():
    """The compiled count, or None: numpy counts (numba missing, or QUANTLAB_HISTOGRAM=numpy)."""
    return histogram_kernel.load() if USE_KERNEL else None


def _coarsen(counts: np.ndarray, offset: int, factor: int, size: int) -> np.ndarray:
    """Sum fine bins into coarse ones: fine bin j goes to coarse bin (j + offset) // factor (exact).

    offset = q * factor + r splits the arithmetic so that an offset or factor beyond int64 (a grid
    widened from about 1e-42 to about 1) stays exact: with factor > len(counts), j lands in q or q + 1.
    """
    out = np.zeros(size, dtype=np.int64)
    q, r = divmod(int(offset), int(factor))
    fine = np.arange(counts.size)
    if factor > counts.size:
        index = q + (fine >= min(int(factor) - r, counts.size))
    else:
        index = q + (fine + r) // int(factor)
    np.add.at(out, index, counts)
    return out


def _rebin(counts: np.ndarray, edges: np.ndarray, new_edges: np.ndarray) -> np.ndarray:
    """Move `counts` on `edges` onto the grid `new_edges` (which must cover them), keeping the total.

    Where an old edge falls on a new edge (to 1/1000 of a bin) the move is exact; a bin that
    straddles new edges is split in proportion to the overlap (values assumed uniform in a bin).
    """
    position = np.interp(edges.astype(np.float64), new_edges.astype(np.float64), np.arange(new_edges.size))
    nearest = np.round(position)
    position = np.where(np.abs(position - nearest) < 1e-3, nearest, position)
    cumulative = np.concatenate(([0], np.cumsum(counts)))
    at_new_edges = np.interp(np.arange(new_edges.size), position, cumulative)
    at_new_edges[0], at_new_edges[-1] = 0, cumulative[-1]
    return np.diff(np.round(at_new_edges).astype(np.int64))


def _steps(distance, width) -> int:
    """ceil(distance / width) >= 1 for a distance > 0, in float32 (onnxruntime's arithmetic), else float64.

    A quotient that underflows float32 to 0 (1e-30 below a grid of 1e26-wide bins) still needs one bin.
    """
    with np.errstate(over="ignore", under="ignore"):
        steps = np.ceil(distance / width)
    steps = int(steps) if np.isfinite(steps) else int(np.ceil(float(distance) / float(width)))
    return max(steps, 1)


class StreamingHistogram:
    """Collect a tensor's value distribution batch by batch in fixed memory; merge partial results.

    h = StreamingHistogram(bins=2048, name="conv1_out")
    for batch in batches:
        h.update(batch)
    h.merge(other)             # e.g. a histogram collected by another worker

    Notes
    -----
    NaN or Inf raise QuantLabError naming the tensor; every finite float32 is accepted (a grid whose
    width overflows float32 is built at half scale, `_first_grids`). Values are histogrammed as
    float32 (like onnxruntime). An empty batch changes nothing. Bin edges are float32, as onnxruntime's; a range too
    narrow for `bins` distinct float32 edges (values about 1e-42, or all within a few float32 steps)
    is widened just enough (`_fitting_range`) where numpy and onnxruntime would raise.
    """

    def __init__(self, bins: int = DEFAULT_BINS, *, name: str = "tensor", max_bins: int | None = None):
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2 or bins % 2:
            raise QuantLabError(f"bins must be an even integer >= 2 (the signed histogram is split at zero), "
                                f"got {bins!r}")
        max_bins = 2 * int(bins) if max_bins is None else max_bins
        if max_bins < bins:
            raise QuantLabError(f"max_bins must be >= bins ({bins}), got {max_bins}")
        self.bins = int(bins)
        self.max_bins = int(max_bins)
        self.name = str(name)
        self.count = 0
        self.min = np.float32(0.0)
        self.max = np.float32(0.0)
        self.threshold = np.float32(0.0)
        self.counts: np.ndarray | None = None      # signed histogram, int64
        self.edges: np.ndarray | None = None       # float32, len(counts) + 1
        self.abs_counts: np.ndarray | None = None  # histogram of |x|, int64
        self.abs_edges: np.ndarray | None = None
        self._abs_range: tuple | None = None       # (lo, hi) while abs_edges are np.histogram's uniform edges

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_array(cls, x, bins: int = DEFAULT_BINS, *, name: str = "tensor",
                   max_bins: int | None = None) -> StreamingHistogram:
        """Return the histogram of one array (all of it as one batch)."""
        return cls(bins, name=name, max_bins=max_bins).update(x)

    def copy(self) -> StreamingHistogram:
        other = StreamingHistogram(self.bins, name=self.name, max_bins=self.max_bins)
        for key, value in self.__dict__.items():
            setattr(other, key, value.copy() if isinstance(value, np.ndarray) else value)
        return other

    @property
    def empty(self) -> bool:
        return self.count == 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the bins and edges (independent of how many samples were seen)."""
        arrays = (self.counts, self.edges, self.abs_counts, self.abs_edges)
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def abs_min(self) -> np.float32:
        """min |x| over all values seen (0 when the values straddle zero)."""
        if self.min <= 0 <= self.max:
            return np.float32(0.0)
        return np.float32(min(abs(self.min), abs(self.max)))

    @property
    def max_abs(self) -> np.float32:
        """max |x| over all values seen."""
        return np.float32(max(abs(self.min), abs(self.max)))

    def __repr__(self) -> str:
        return (f"StreamingHistogram(name={self.name!r}, count={self.count}, min={float(self.min):.6g}, "
                f"max={float(self.max):.6g}, bins={0 if self.counts is None else self.counts.size})")

    # -- update ---------------------------------------------------------------------------------

    def _as_batch(self, x) -> np.ndarray:
        try:
            array = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise QuantLabError(f"tensor {self.name!r}: cannot histogram non-numeric data ({err})") from None
        return array.reshape(-1)

    def update(self, x) -> StreamingHistogram:
        """Add a batch of values (any shape) to both histograms; return self.

        The grids are decided first (the first batch's, or the current ones widened to the batch's
        range), then every value is counted into both: by the compiled one-pass loop where numba
        is available (`histogram_kernel`), else by numpy (`_count_with_numpy`), with the same bins.
        """
        x = self._as_batch(x)
        if x.size == 0:
            return self
        lo, hi = x.min(), x.max()
        # min/max propagate NaN and expose Inf, so checking them checks every value.
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise QuantLabError(f"tensor {self.name!r} contains {bad} NaN or Inf value(s) out of {x.size}; "
                                "calibration needs finite values (check the model or the data)")
        threshold = np.float32(max(abs(lo), abs(hi)))
        if lo >= 0 or hi <= 0:  # one sign: min |x| is |lo| or |hi| (abs: +0, never -0)
            abs_lo = abs(lo) if lo >= 0 else abs(hi)
        else:
            abs_lo = np.abs(x).min()
        if self.count == 0:
            signed, absolute = self._first_grids(abs_lo, threshold)
        else:
            self._widen_signed(threshold)
            self._widen_absolute(abs_lo, threshold)
            signed, absolute = _Grid.on_edges(self.edges), self._absolute_grid()
        compiled = x.size < 2**31 and _kernel() is not None  # the loop's int32 banks
        counts, abs_counts = (_count_with_kernel if compiled else _count_with_numpy)(x, signed, absolute)
        if self.count == 0:
            self.counts, self.abs_counts, self.min, self.max = counts, abs_counts, lo, hi
        else:
            self.counts, self.abs_counts = self.counts + counts, self.abs_counts + abs_counts
            self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += int(x.size)
        return self

    def _first_grids(self, abs_lo, threshold) -> tuple[_Grid, _Grid]:
        """Set the first batch's edges (onnxruntime's grids where float32 allows) and return both grids."""
        _, signed_top = _fitting_range(self.bins, -threshold, threshold, symmetric=True, name=self.name)
        self.threshold = signed_top
        self.edges = _uniform_edges(self.bins, -signed_top, signed_top)
        if _overflows(-signed_top, signed_top):
            # Past about 1.7e38 the width 2 * threshold overflows float32: x / 2 is counted over half the
            # range, which puts every value in the bin it has on the doubled edges (halving is exact).
            half = signed_top / 2
            signed = _Grid.uniform(-half, half, _uniform_edges(self.bins, -half, half), scale=np.float32(0.5))
        else:
            signed = _Grid.uniform(*_numpys_range(-signed_top, signed_top), self.edges)
        # numpy's own range (widened by 0.5 each side when all |x| are equal) when it fits: onnxruntime's bins
        if _edges_fit(self.bins, *_numpys_range(abs_lo, threshold)):
            self._abs_range = (abs_lo, threshold)
        else:
            self._abs_range = _fitting_range(self.bins, abs_lo, threshold, symmetric=False, name=self.name)
        self.abs_edges = _uniform_edges(self.bins, *self._abs_range).astype(np.float32)
        return signed, self._absolute_grid()

    def _absolute_grid(self) -> _Grid:
        if self._abs_range is not None and not _overflows(*self._abs_range):  # numpy's fast path, same bins
            return _Grid.uniform(*_numpys_range(*self._abs_range), self.abs_edges)
        return _Grid.on_edges(self.abs_edges)

    def _widen_signed(self, threshold) -> None:
        """Make the signed grid cover [-threshold, threshold], moving the counts (onnxruntime's merge_histogram)."""
        old, old_threshold = self.counts, self.threshold
        if threshold <= old_threshold:
            return
        n = old.size
        if old_threshold == 0:
            # Only exact zeros were seen; they stay in the middle bin, which still starts at 0.
            _, self.threshold = _fitting_range(n, -threshold, threshold, symmetric=True, name=self.name)
            self.edges = _uniform_edges(n, -self.threshold, self.threshold)
            return
        stride = old_threshold / (n // 2)  # = 2 * old_threshold / n bit for bit (n is even), without overflow
        with np.errstate(over="ignore", invalid="ignore"):
            steps = (threshold - old_threshold) // stride
            if not np.isfinite(steps):  # from a grid about 1e-42 wide: count the steps in float64
                steps = (float(threshold) - float(old_threshold)) // float(stride)
        half = int(steps + 1)
        with np.errstate(over="ignore"):
            extended = half * stride + old_threshold
        if not np.isfinite(extended):  # past float32's maximum: the grid stops there, the counts are moved onto it
            top = np.finfo(np.float32).max
            self.threshold, self.edges = top, _uniform_edges(self.bins, -top, top)
            self.counts = _rebin(old, _uniform_edges(n, -old_threshold, old_threshold), self.edges)
            return
        if n + 2 * half <= self.max_bins:
            new_threshold = extended
            counts = np.zeros(n + 2 * half, dtype=np.int64)
            counts[half:half + n] = old
        else:
            # Merge `factor` fine bins per coarse bin, centred on zero, into `bins` bins.
            factor = -(-(n // 2 + half) // (self.bins // 2))
            counts = _coarsen(old, (self.bins // 2) * factor - n // 2, factor, self.bins)
            coarse = (self.bins // 2) * factor
            if coarse < 2**63:
                new_threshold = np.float32(coarse) * stride
            else:
                new_threshold = np.float32(float(coarse) * float(stride))
        self.counts, self.threshold = counts, np.float32(new_threshold)
        self.edges = _uniform_edges(counts.size, -self.threshold, self.threshold)

    def _widen_absolute(self, lo, hi) -> None:
        """Make the |x| grid cover [lo, hi]: extend by bins of the same width, or coarsen past max_bins."""
        edges, old = self.abs_edges, self.abs_counts
        if lo >= edges[0] and hi <= edges[-1]:
            return
        width = edges[1] - edges[0]
        below = _steps(edges[0] - lo, width) if lo < edges[0] else 0
        above = _steps(hi - edges[-1], width) if hi > edges[-1] else 0
        with np.errstate(over="ignore"):
            room = bool(np.isfinite(hi + width))  # extending past float32's maximum: coarsen instead
        if room and old.size + below + above + 1 <= self.max_bins:
            parts = [edges]
            if above:
                # onnxruntime's extension, bit for bit; one more edge if float rounding stopped short.
                extra = np.arange(edges[-1] + width, hi + width, width)
                if extra.size == 0 or extra[-1] < hi:
                    extra = np.append(extra, (extra[-1] if extra.size else edges[-1]) + width).astype(extra.dtype)
                parts.append(extra)
            if below:
                # onnxruntime would drop values below its first edge; we add bins instead.
                parts.insert(0, edges[0] - width * np.arange(below, 0, -1, dtype=np.float32))
            new_edges = np.concatenate(parts).astype(np.float32)
            counts = np.zeros(new_edges.size - 1, dtype=np.int64)
            counts[below:below + old.size] = old
            self.abs_counts, self.abs_edges, self._abs_range = counts, new_edges, None
            return
        for _ in range(4):  # float32 rounding of below * width can leave lo just outside: one more bin below
            factor = -(-(below + old.size + above) // self.bins)
            with np.errstate(over="ignore"):
                if self.bins * factor < 2**24 and below < 2**24:  # float32 arithmetic, as everywhere else
                    start = np.float32(edges[0] - below * width)
                    stop = np.float32(max(start + np.float32(self.bins * factor) * width, hi))
                else:  # a grid about 1e-42 wide widened to ordinary values: the bin counts overflow float32
                    start = np.float32(float(edges[0]) - below * float(width))
                    stop = np.float32(max(float(start) + float(self.bins * factor) * float(width), float(hi)))
            if start <= lo:
                break
            below += 1
        if not np.isfinite(stop):  # the coarse grid would pass float32's maximum: stop there, move the counts
            stop = np.finfo(np.float32).max
            self.abs_edges = _uniform_edges(self.bins, start, stop)
            self.abs_counts, self._abs_range = _rebin(old, edges, self.abs_edges), (start, stop)
            return
        self.abs_counts = _coarsen(old, below, factor, self.bins)
        self._abs_range = (start, stop)
        self.abs_edges = _uniform_edges(self.bins, start, stop)

    # -- merge ----------------------------------------------------------------------------------

    def merge(self, other: StreamingHistogram) -> StreamingHistogram:
        """Add another histogram's values to this one; return self.

        Histograms on the same grid (same bins and range) add exactly, bin by bin. Otherwise the
        coarser grid is widened to cover both and the other's counts are re-binned onto it:
        exact where the grids align, split in proportion to the overlap where they do not.
        """
        if not isinstance(other, StreamingHistogram):
            raise QuantLabError(f"can only merge a StreamingHistogram into {self.name!r}, got {type(other).__name__}")
        if other.count == 0:
            return self
        if self.count == 0:
            for key, value in other.copy().__dict__.items():
                if key not in ("name", "bins", "max_bins"):
                    setattr(self, key, value)
            return self
        base, extra = (self, other) if _signed_width(self) >= _signed_width(other) else (other.copy(), self)
        base.counts = base.counts.copy()
        base._widen_signed(extra.threshold)
        base.counts = base.counts + _place(extra.counts, extra.edges, extra.threshold == 0, base.edges)
        abs_base, abs_extra = (self, other) if _abs_width(self) >= _abs_width(other) else (other, self)
        abs_counts, abs_edges, abs_range = _merged_absolute(abs_base, abs_extra)
        self.counts, self.edges, self.threshold = base.counts, base.edges, base.threshold
        self.abs_counts, self.abs_edges, self._abs_range = abs_counts, abs_edges, abs_range
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.count += other.count
        return self


def _signed_width(h: StreamingHistogram) -> float:
    return float(h.threshold) * 2 / h.counts.size


def _abs_width(h: StreamingHistogram) -> float:
    return float(h.abs_edges[-1] - h.abs_edges[0]) / h.abs_counts.size


def _place(counts: np.ndarray, edges: np.ndarray, only_zeros: bool, new_edges: np.ndarray) -> np.ndarray:
    if only_zeros:  # a histogram of exact zeros has numpy's (-0.5, 0.5) grid: put them in the bin of 0
        placed = np.zeros(new_edges.size - 1, dtype=np.int64)
        placed[min(max(np.searchsorted(new_edges, 0.0, side="right") - 1, 0), placed.size - 1)] = counts.sum()
        return placed
    if counts.size == new_edges.size - 1 and np.array_equal(edges, new_edges):
        return counts
    return _rebin(counts, edges, new_edges)


def _merged_absolute(base: StreamingHistogram, extra: StreamingHistogram):
    merged = base.copy()
    merged._widen_absolute(min(base.abs_min, extra.abs_min), max(base.max_abs, extra.max_abs))
    only_zeros = extra.max_abs == 0
    placed = _place(extra.abs_counts, extra.abs_edges, only_zeros, merged.abs_edges)
    return merged.abs_counts + placed, merged.abs_edges, merged._abs_range

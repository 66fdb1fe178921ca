"""The compiled counting loop of `StreamingHistogram`: both histograms of a batch in one read of each value.

`histogram.py` decides the grids (what); this module only counts values into them (how fast), and must give
the numpy counting's results bit for bit (tests/core/test_histogram_kernel.py):

    equal bins     np.histogram(v, n, range=(first, last))[0]: numpy's own arithmetic, in float32,
                   bin = int((v - first) / (last - first) * n), then numpy's one step down / up against
                   the edges (the same float32 operations in the same order, so the same bins)
    other edges    np.histogram(v, bins=edges)[0]: the last i with edges[i] <= v (the last bin also
                   takes v == edges[-1]), found from a guess by walking the edges: exact for any edges

Values outside [first, last] are not counted (numpy's rule). The signed grid counts v * scale (0.5 on a
grid too wide for float32, see histogram.StreamingHistogram._first_grids), the |x| grid counts |v|.

Most values need no look at the edges: a value whose float64 position lies clearly inside its bin (by more
than the edges' measured distance from an exact grid, `position_bounds`) is in that bin under both rules;
only values next to an edge take numpy's correction or the walk (`count_block`).

numba compiles the loop (`cache=True`: once per machine and CPU, then loaded from numba's cache in
__pycache__). numpy needs two np.histogram calls per tensor and batch, each several passes with
temporaries (7.6 ns per value per call); this loop reads each value once for both histograms (about 4-5x
faster per update, bench/bench_calibrate_parallel.py). It is imported on first use, not with quant_core.
Where numba is missing or cannot compile, or QUANTLAB_HISTOGRAM=numpy is set, `load()` returns None and
histogram.py counts with numpy.
"""
from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np

# Seconds the first load() took (import numba + compile or load from the on-disk cache), for the benchmarks.
load_seconds: float | None = None
_loading = threading.Lock()


def load():
    """Return the compiled `count` function, or None where numba cannot provide it (thread-safe; once)."""
    with _loading:
        return _load()


@functools.cache
def _load():
    global load_seconds
    if os.environ.get("QUANTLAB_HISTOGRAM", "").lower() == "numpy":
        return None
    started = time.perf_counter()
    try:
        count = _compile()
        x = np.float32([-1.0, 0.5, 2.0])
        edges = np.linspace(-2, 2, 5, dtype=np.float32)
        # one call compiles it (or loads it from the cache); a wrong answer disables it
        counts, abs_counts = np.zeros(4, np.int64), np.zeros(4, np.int64)
        count(x, np.float32(1), edges[0], edges[-1], edges, counts, True, edges[0], edges[-1], edges, abs_counts, False)
        if counts.tolist() != [0, 1, 1, 1] or abs_counts.tolist() != [0, 0, 1, 2]:
            return None
    except Exception:  # noqa: BLE001 - numba missing, or LLVM cannot compile here: numpy counts instead
        return None
    load_seconds = time.perf_counter() - started
    return count


# Values per block: the block's guesses stay in the L1 cache between the two steps.
_BLOCK = 2048
# Counts kept in this many banks, used in turn (a power of 2), summed at the end; int32 to stay in the L1/L2
# cache: a call counts fewer than 2**31 values (histogram.py counts larger batches with numpy).
_BANKS = 4


def _compile():
    import numba

    jit = numba.njit(cache=True, nogil=True, error_model="numpy")

    @jit
    def position_bounds(edges, origin, step):
        """(lo, hi) with i - hi <= position(edges[i]) <= i + lo for every i: the edges' distance from an exact grid.

        position(t) = (float64(t) - origin) * step, the same float64 arithmetic as count_block's; it is
        monotonic (never decreases as t grows), so position(v) > position(edges[i]) proves v > edges[i].
        """
        lo, hi = 0.0, 0.0
        for i in range(edges.size):
            off = (np.float64(edges[i]) - origin) * step - i
            lo, hi = max(lo, off), max(hi, -off)
        return lo, hi

    @jit
    def count_block(values, first, last, edges, banks, equal_bins, guess, origin, step, lo, hi, zero_bin):
        """Count a block of values into `banks` on `edges` (called per block: a call per value would be slow).

        Step 1, vectorized (SIMD, no lookups): each value's bin i before the check against the edges (with
        equal bins numpy's own float32 int((v - first) / (last - first) * n), otherwise from the float64
        position), and whether the position p of v proves edges[i] < v < edges[i + 1]: p > i + lo and
        p < i + 1 - hi (`position_bounds`); then both numpy's correction and the walk keep i. Exact zeros
        (half of a ReLU's output, on an edge of the signed grid) take `zero_bin`, the bin step 2 gives 0.
        A value not proven (next to an edge, outside the grid) is stored as -1 - i.
        Step 2: proven values are counted in their bin, in one of _BANKS banks in turn (the same bin counted
        twice in a row would wait for its own store); the others get numpy's correction (one step down,
        one step up), or on other edges a walk to the last i < n with edges[i] <= v (exact for any sorted
        edges); values outside [first, last] are not counted (numpy's rules).
        """
        n = edges.size - 1
        nf, width, zero, top = np.float32(n), last - first, np.float32(0), np.float64(n - 1)
        for k in range(values.size):
            v = values[k]
            p = (np.float64(v) - origin) * step
            if equal_bins:
                f = ((v - first) / width) * nf
                f = f if f > zero else zero
                i = np.int32(f if f < nf else nf)
            else:
                g = p if p > 0.0 else 0.0  # also NaN (a grid too narrow for float64 to divide by)
                i = np.int32(g if g < top else top)
            proven = (p > i + lo) & (p < i + 1 - hi) & (i < n) & (v >= first) & (v <= last)
            i = i if proven else -1 - i
            guess[k] = zero_bin if (v == zero) & (zero_bin >= 0) else i
        for k in range(values.size):
            i = guess[k]
            if i >= 0:
                banks[k & (_BANKS - 1), i] += 1
                continue
            v, i = values[k], np.int64(-1 - i)
            if v < first or v > last:
                continue
            if equal_bins:
                if i == n:
                    i -= 1
                if v < edges[i]:
                    i -= 1
                if i < n - 1 and v >= edges[i + 1]:
                    i += 1
            else:
                while i > 0 and v < edges[i]:
                    i -= 1
                while i < n - 1 and v >= edges[i + 1]:
                    i += 1
            banks[0, i] += 1

    @jit
    def grid(first, last, edges, equal_bins, guess):
        """What count_block needs of a grid: (origin, step, lo, hi) of positions, the bin of 0, 4 empty banks."""
        n = edges.size - 1
        origin = np.float64(edges[0])
        step = n / (np.float64(edges[-1]) - origin)
        lo, hi = position_bounds(edges, origin, step)
        banks = np.zeros((_BANKS, n), np.int32)
        count_block(np.zeros(1, np.float32), first, last, edges, banks, equal_bins, guess, origin, step, lo, hi, -1)
        zero_bin = np.int32(np.argmax(banks[0]) if banks[0].sum() else -1)
        banks[0, :] = 0
        return origin, step, lo, hi, zero_bin, banks

    @jit
    def count(x, scale, first, last, edges, counts, equal_bins, a_first, a_last, a_edges, a_counts, a_equal_bins):
        """Add x * scale to `counts` (on `edges`) and |x| to `a_counts` (on `a_edges`), block by block."""
        guess = np.empty(_BLOCK, np.int32)
        origin, step, lo, hi, zero_bin, banks = grid(first, last, edges, equal_bins, guess)
        a_origin, a_step, a_lo, a_hi, a_zero_bin, a_banks = grid(a_first, a_last, a_edges, a_equal_bins, guess)
        signed, absolute = np.empty(_BLOCK, np.float32), np.empty(_BLOCK, np.float32)
        for start in range(0, x.size, _BLOCK):
            m = min(_BLOCK, x.size - start)
            for k in range(m):
                signed[k] = x[start + k] * scale
                absolute[k] = np.abs(x[start + k])
            count_block(signed[:m], first, last, edges, banks, equal_bins, guess, origin, step, lo, hi, zero_bin)
            count_block(absolute[:m], a_first, a_last, a_edges, a_banks, a_equal_bins, guess, a_origin, a_step,
                        a_lo, a_hi, a_zero_bin)
        for b in range(_BANKS):
            counts += banks[b]
            a_counts += a_banks[b]

    return count

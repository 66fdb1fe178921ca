"""The compiled counting loop gives numpy's histograms bit for bit, and numpy counts wherever numba cannot.

`StreamingHistogram` decides its grids once and counts every batch either with `histogram_kernel` (numba,
one pass over the values) or with numpy (`np.histogram` and `_histogram_on_edges`): the reference. Every
case below runs both and compares everything a range method or a page reads.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quant_core.config import TensorQuant
from quant_core.errors import QuantLabError
from quant_core.numerics import histogram, histogram_kernel
from quant_core.numerics.formats import RangeMethod
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.numerics.ranges import estimate_range

ROOT = Path(__file__).resolve().parents[2]
F32_MAX = float(np.finfo(np.float32).max)


def _normal(seed: int, size: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(size) * scale + shift).astype(np.float32)


def _on_the_grid(first_batch: np.ndarray, bins: int) -> list[np.ndarray]:
    """The first batch, then every edge of both its grids and the float32 values either side of each."""
    h = StreamingHistogram.from_array(first_batch, bins)
    edges = np.concatenate([h.edges, h.abs_edges, -h.abs_edges])
    return [first_batch, np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)),
                                         np.nextafter(edges, np.float32(-np.inf))])]


BATCHES = {  # name: batches fed in order (bins 2048 unless the name says)
    "one normal batch": [_normal(0, 100_000)],
    "ranges grow: extended, then coarsened": [_normal(1, 5000), _normal(2, 5000, 1.3), _normal(3, 5000, 40.0)],
    "values below the first min |x|": [_normal(4, 1000, shift=5.0), _normal(5, 1000, 0.01)],
    "post-ReLU: one sign, zeros": [np.maximum(_normal(6, 50_000), 0), np.maximum(_normal(7, 50_000, 2.0), 0)],
    "all negative": [-np.abs(_normal(8, 3000)), -np.abs(_normal(9, 3000, 3.0))],
    "values exactly on and next to the edges": _on_the_grid(_normal(10, 3000), 2048),
    "on and next to the edges, 256 bins": _on_the_grid(_normal(11, 300), 256),
    "constant, then spread": [np.full(1000, 2.5, np.float32), _normal(12, 1000)],
    "zeros, then data": [np.zeros(100, np.float32), _normal(13, 1000)],
    "an empty batch in between": [_normal(14, 100), np.empty(0, np.float32), _normal(15, 100, 2.0)],
    "float16 and int inputs": [_normal(16, 1000).astype(np.float16), np.arange(-50, 50)],
    "saturated sigmoid": [np.float32([0.99999994, 1.0, 1.0]), np.float32([1.0, 0.99999994, 0.9999999])],
    "subnormal": [np.full(10, 1e-42, np.float32), np.float32([1e-45, 1e-44, 3e-42])],
    "float32 limits": [np.float32([-F32_MAX, F32_MAX, 0.0]), _normal(17, 100, 1e37)],
    "near float32 max, then ordinary": [np.full(5, 3e38, np.float32), np.linspace(-1, 1, 100, dtype=np.float32)],
    "huge and tiny": [np.float32([1e30, -1e-30]), _normal(18, 1000, 1e-20)],
}
BINS = {"on and next to the edges, 256 bins": 256}


def _histograms(batches, *, compiled: bool, bins: int) -> StreamingHistogram:
    before = histogram.USE_KERNEL
    histogram.USE_KERNEL = compiled
    try:
        h = StreamingHistogram(bins, name="t")
        for batch in batches:
            h.update(batch)
        return h
    finally:
        histogram.USE_KERNEL = before


def _ranges(h: StreamingHistogram) -> list:
    with np.errstate(all="ignore"):  # the MSE search squares errors of values near float32's maximum
        return [(r.lo, r.hi, r.clipped_fraction) for method in RangeMethod for symmetric in (False, True)
                for r in [estimate_range(h, TensorQuant("int8", symmetric=symmetric, range_method=method))]]


def test_numba_is_there_and_compiles():
    assert histogram_kernel.load() is not None, "numba is in requirements.txt: the compiled loop should load"


@pytest.mark.parametrize("case", list(BATCHES))
def test_compiled_histograms_equal_numpys_bit_for_bit(case):
    compiled = _histograms(BATCHES[case], compiled=True, bins=BINS.get(case, 2048))
    reference = _histograms(BATCHES[case], compiled=False, bins=BINS.get(case, 2048))
    for field in ("counts", "edges", "abs_counts", "abs_edges"):
        mine, theirs = getattr(compiled, field), getattr(reference, field)
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs), field
    for field in ("count", "min", "max", "threshold", "abs_min", "max_abs"):
        assert getattr(compiled, field) == getattr(reference, field), field
    assert _ranges(compiled) == _ranges(reference)  # every range method's clipping range


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_the_same_way(bad):
    messages = []
    for compiled in (True, False):
        with pytest.raises(QuantLabError, match="NaN or Inf") as raised:
            _histograms([_normal(0, 10), np.float32([1.0, bad, 2.0])], compiled=compiled, bins=64)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


_GRID = np.histogram(np.empty(0, np.float32), 64, range=(np.float32(-1.5), np.float32(2.5)))[1]
_NEAR_100 = np.float32(100.0) + np.linspace(0, 1e-4, 65, dtype=np.float32)  # repeated edges: float32 cannot tell


@pytest.mark.parametrize("edges, x, equal_bins", [
    # numpy's equal bins: values on every edge, either side of it, and outside the range
    (_GRID, np.concatenate([_GRID, np.nextafter(_GRID, np.float32(9)), np.nextafter(_GRID, np.float32(-9)),
                            _normal(1, 10_000, 2.0)]), True),
    # other edges: repeated ones, guesses far off (as test_histogram's _histogram_on_edges case)
    (_NEAR_100, np.concatenate([np.float32(100.0) + _normal(2, 5000, 3e-5), np.float32([99.0, 101.0])]), False),
], ids=["equal bins", "edges near 100"])
def test_the_loop_counts_like_np_histogram_on_any_grid(edges, x, equal_bins):
    n, first, last = edges.size - 1, edges[0], edges[-1]
    counts, abs_counts = np.zeros(n, np.int64), np.zeros(n, np.int64)
    histogram_kernel.load()(x, np.float32(1), first, last, edges, counts, equal_bins,
                            first, last, edges, abs_counts, equal_bins)
    numpys = (lambda v: np.histogram(v, n, range=(first, last))[0]) if equal_bins else (
        lambda v: np.histogram(v, bins=edges)[0])
    assert np.array_equal(counts, numpys(x)) and np.array_equal(abs_counts, numpys(np.abs(x)))


def _in_a_fresh_python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


SAME_AS_HERE = """
import numpy as np
from quant_core.numerics import histogram_kernel
from quant_core.numerics.histogram import StreamingHistogram
h = StreamingHistogram(256).update(np.linspace(-3, 5, 10001, dtype=np.float32)).update(np.float32([7.5, -0.25]))
print(histogram_kernel.load() is None, h.counts.tolist() == {counts} and h.abs_counts.tolist() == {abs_counts})
"""


@pytest.mark.parametrize("how", ["numba cannot be imported", "QUANTLAB_HISTOGRAM=numpy"])
def test_without_numba_numpy_counts_the_same_histograms(how):
    h = StreamingHistogram(256).update(np.linspace(-3, 5, 10001, dtype=np.float32)).update(np.float32([7.5, -0.25]))
    code = SAME_AS_HERE.format(counts=h.counts.tolist(), abs_counts=h.abs_counts.tolist())
    if how == "numba cannot be imported":
        out = _in_a_fresh_python("import sys; sys.modules['numba'] = None\n" + code)
    else:
        out = _in_a_fresh_python(code, QUANTLAB_HISTOGRAM="numpy")
    assert out == "True True"  # numpy counted, and counted the same

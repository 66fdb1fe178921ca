"""Our histograms and ranges reproduce onnxruntime's calibrators on the same data and bin count.

The oracle is onnxruntime.quantization itself: its MinMax, Percentile and Entropy calibrators run
on a tiny X -> Relu -> Y graph built with onnx.helper, and its HistogramCollector fed batch by
batch. The calibrators print progress; capsys swallows it.
"""
import contextlib
import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator

from quant_core.numerics.formats import RangeMethod
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.numerics.ranges import range_entropy, range_minmax, range_percentile

BINS = 2048
SMALL_BINS = 512  # onnxruntime's entropy loop costs ~bins^2: the many-case tests use fewer bins


def _relu_model(path, features: int) -> str:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, features])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="relu")], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


class _Batches:
    """A CalibrationDataReader over a list of batches for input X."""

    def __init__(self, batches):
        self._iterator = iter(batches)

    def get_next(self):
        return next(({"X": b} for b in self._iterator), None)


def _ort_ranges(tmp_path, batches, method, **extra):
    """Run an onnxruntime calibrator over the batches; return {tensor: (lo, hi)} for X and Y."""
    model = _relu_model(tmp_path / "relu.onnx", batches[0].shape[1])
    calibrator = create_calibrator(model, augmented_model_path=str(tmp_path / "augmented.onnx"),
                                   calibrate_method=method, extra_options=extra)
    calibrator.collect_data(_Batches(batches))
    data = calibrator.compute_data()
    return {name: tuple(float(np.asarray(v).reshape(-1)[0]) for v in data[name].range_value) for name in ("X", "Y")}


def _histograms(batches) -> dict[str, StreamingHistogram]:
    """Our histograms of X and Y = relu(X), the way the calibrator sees them.

    A calibrator's collect_data stacks all the batches it reads into one array per tensor, so
    one update with everything is the same data in the same order.
    """
    x = np.concatenate(batches)
    return {"X": StreamingHistogram.from_array(x, BINS, name="X"),
            "Y": StreamingHistogram.from_array(np.maximum(x, 0), BINS, name="Y")}


@pytest.fixture
def batches():
    rng = np.random.default_rng(7)
    # A skewed, heavy-tailed activation: mostly Laplace around 0.3, a few large outliers.
    data = (rng.laplace(0.3, 1.0, size=(64, 256)) + rng.standard_t(2, size=(64, 256)) * 0.1).astype(np.float32)
    return [data[i:i + 16] for i in range(0, 64, 16)]


def test_minmax_equals_minmax_calibrater_streaming(tmp_path, batches, capsys):
    ours = {"X": StreamingHistogram(BINS, name="X"), "Y": StreamingHistogram(BINS, name="Y")}
    for batch in batches:
        ours["X"].update(batch)
        ours["Y"].update(np.maximum(batch, 0))
    ours = {name: range_minmax(h) for name, h in ours.items()}
    theirs = _ort_ranges(tmp_path, batches, CalibrationMethod.MinMax)
    for name in ("X", "Y"):
        assert (ours[name].lo, ours[name].hi) == theirs[name]
        assert ours[name].clipped_fraction == 0.0


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("percentile", [99.0, 99.99, 99.999])
def test_percentile_equals_percentile_calibrater(tmp_path, batches, capsys, symmetric, percentile):
    ours = {name: range_percentile(h, percentile, symmetric=symmetric) for name, h in _histograms(batches).items()}
    theirs = _ort_ranges(tmp_path, batches, CalibrationMethod.Percentile, num_bins=BINS, percentile=percentile,
                         symmetric=symmetric)
    for name in ("X", "Y"):
        assert (ours[name].lo, ours[name].hi) == theirs[name], name


def test_entropy_equals_entropy_calibrater(tmp_path, batches, capsys):
    histograms = _histograms(batches)
    ours = {name: range_entropy(h, 128) for name, h in histograms.items()}
    theirs = _ort_ranges(tmp_path, batches, CalibrationMethod.Entropy, num_bins=BINS, num_quantized_bins=128)
    for name in ("X", "Y"):
        width = float(histograms[name].edges[1] - histograms[name].edges[0])
        assert abs(ours[name].lo - theirs[name][0]) <= width, name
        assert abs(ours[name].hi - theirs[name][1]) <= width, name
        assert ours[name].method == RangeMethod.ENTROPY


def _collector(method: str, symmetric: bool, bins: int = BINS) -> HistogramCollector:
    return HistogramCollector(method=method, symmetric=symmetric, num_bins=bins, num_quantized_bins=128,
                              percentile=99.99, scenario="same")


def _collect(collector: HistogramCollector, batch) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        collector.collect({"t": batch})


def _widening_batches(seed: int):
    """Batches whose range grows, each containing an exact 0 (so onnxruntime drops no |x| below its first edge)."""
    rng = np.random.default_rng(seed)
    batches = [rng.standard_normal(4000).astype(np.float32) * s for s in (1.0, 1.2, 0.5, 1.3, 1.31)]
    for b in batches:
        b[0] = 0.0
    return batches


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_signed_histogram_equals_collector_batch_by_batch(seed):
    ours, theirs = StreamingHistogram(BINS), _collector("entropy", False)
    for batch in _widening_batches(seed):
        ours.update(batch)
        _collect(theirs, batch)
    hist, edges, lo, hi, threshold = theirs.histogram_dict["t"]
    assert ours.counts.size > BINS  # the range grew, as onnxruntime grows it
    np.testing.assert_array_equal(ours.counts, hist)
    np.testing.assert_array_equal(ours.edges, edges)
    assert (ours.min, ours.max, ours.threshold) == (lo, hi, threshold)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_absolute_histogram_equals_collector_batch_by_batch(seed):
    ours, theirs = StreamingHistogram(BINS), _collector("percentile", True)
    for batch in _widening_batches(seed):
        ours.update(batch)
        _collect(theirs, batch)
    hist, edges, lo, hi = theirs.histogram_dict["t"]
    np.testing.assert_array_equal(ours.abs_counts, hist)
    np.testing.assert_array_equal(ours.abs_edges, edges)


def test_entropy_threshold_equals_collector_on_streamed_histogram():
    ours, theirs = StreamingHistogram(SMALL_BINS), _collector("entropy", False, SMALL_BINS)
    for batch in _widening_batches(3):
        ours.update(batch)
        _collect(theirs, batch)
    expected = theirs.get_entropy_threshold(theirs.histogram_dict["t"], 128)
    result = range_entropy(ours, 128)
    width = float(ours.edges[1] - ours.edges[0])
    assert abs(result.lo - float(expected[0])) <= width
    assert abs(result.hi - float(expected[1])) <= width


def _ort_kl(hist: np.ndarray, i: int, nq: int = 128) -> float:
    """onnxruntime's get_entropy_threshold loop body for one candidate i, with its own helpers."""
    from onnxruntime.quantization.calibrate import entropy
    from onnxruntime.quantization.quant_utils import smooth_distribution

    zero = hist.size // 2
    start, end = zero - i, min(zero + i + 1, hist.size)
    sliced = hist[start:end]
    p = sliced.copy()
    p[0] += hist[:start].sum()
    p[-1] += hist[end:].sum()
    nonzeros = (p != 0).astype(np.int64)
    merged = sliced.size // nq
    quantized = np.array([sliced[j * merged:(j + 1) * merged].sum() for j in range(nq)])
    quantized[-1] += sliced[nq * merged:].sum()
    q = np.zeros(p.size, dtype=np.int64)
    for j in range(nq):
        norm = nonzeros[j * merged:(j + 1) * merged].sum()
        if norm:
            q[j * merged:(j + 1) * merged] = quantized[j] / norm
    p, q = smooth_distribution(p), smooth_distribution(q)
    return float("inf") if p is None or q is None else float(entropy(p, q))


SHAPES = [
    ("normal", lambda rng: rng.standard_normal(50000)),
    ("relu", lambda rng: np.maximum(rng.standard_normal(50000), 0)),
    ("bimodal", lambda rng: np.concatenate([rng.normal(-2, 0.3, 25000), rng.normal(3, 0.5, 25000)])),
    ("student_t2", lambda rng: rng.standard_t(2, 50000)),
    ("few_values", lambda rng: rng.integers(-5, 6, 2000).astype(float)),
]


@pytest.mark.parametrize("name,make", SHAPES)
def test_entropy_range_equals_collector_threshold_exactly(name, make):
    x = make(np.random.default_rng(11)).astype(np.float32)
    ours, theirs = StreamingHistogram.from_array(x, SMALL_BINS), _collector("entropy", False, SMALL_BINS)
    _collect(theirs, x)
    expected = theirs.get_entropy_threshold(theirs.histogram_dict["t"], 128)
    result = range_entropy(ours, 128)
    assert (result.lo, result.hi) == (float(expected[0]), float(expected[1]))


@pytest.mark.parametrize("name,make", SHAPES)
def test_kl_curve_equals_onnxruntime_divergence_at_sampled_candidates(name, make):
    x = make(np.random.default_rng(11)).astype(np.float32)
    hist = StreamingHistogram.from_array(x, BINS)
    result = range_entropy(hist, 128)
    assert result.curve.shape == result.thresholds.shape == (BINS // 2 - 64 + 1,)  # i = 64 .. 1024
    best = int(np.argmin(result.curve))
    for k in sorted({0, 1, best, result.curve.size // 2, result.curve.size - 1}):
        expected = _ort_kl(hist.counts, 64 + k)
        # onnxruntime sums in float32: agree to its precision.
        assert result.curve[k] == pytest.approx(expected, rel=2e-4, abs=2e-6), k

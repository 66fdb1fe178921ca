"""Range estimators: what each returns, on hand-checkable data, and what a chart gets with it."""
import numpy as np
import pytest

from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.formats import INT4, INT8, UINT8, Granularity, RangeMethod, parse_format
from quant_core.numerics.histogram import StreamingHistogram
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import fake_quantize, tensor_range
from quant_core.numerics.ranges import (
    MSE_CANDIDATES,
    estimate_range,
    range_entropy,
    range_minmax,
    range_mse,
    range_percentile,
    weight_ranges,
)


def _heavy_tailed(size: int = 100_000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(2, size).astype(np.float32)


def _data_mse(x: np.ndarray, lo: float, hi: float, fmt, symmetric: bool) -> float:
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    return float(np.mean((fake_quantize(x, scale, zero_point, fmt) - x).astype(np.float64) ** 2))


# -- minmax ------------------------------------------------------------------------------------

def test_minmax_is_the_exact_min_and_max_and_clips_nothing():
    result = range_minmax(StreamingHistogram.from_array(np.float32([-0.5, 2.0, 7.25]), 16))
    assert (result.method, result.lo, result.hi, result.clipped_fraction) == (RangeMethod.MINMAX, -0.5, 7.25, 0.0)
    assert result.thresholds is None and result.curve is None


# -- percentile --------------------------------------------------------------------------------

def _one_value_per_bin() -> StreamingHistogram:
    # 0, 1, ..., 999 on 1000 bins: bin k of |x| holds exactly the value k, its lower edge is k * 0.999.
    return StreamingHistogram.from_array(np.arange(1000, dtype=np.float32), 1000)


def test_symmetric_percentile_takes_the_abs_bin_edge_where_the_cdf_reaches_p_then_clamps_to_the_data():
    h = _one_value_per_bin()
    result = range_percentile(h, 99.05, symmetric=True)
    # cdf[k] = (k + 1) / 1000 first reaches 0.9905 at k = 990; [-t, t] is then clamped to min = 0.
    assert result.hi == float(h.abs_edges[990]) == pytest.approx(990 * 0.999)
    assert result.lo == 0.0
    assert result.method == RangeMethod.PERCENTILE


def test_asymmetric_percentile_cuts_half_of_the_rest_on_each_side():
    x = np.arange(-500, 500, dtype=np.float32)
    h = StreamingHistogram.from_array(x, 1000)
    result = range_percentile(h, 99.0, symmetric=False)
    cdf = np.cumsum(h.counts / h.counts.sum())
    assert result.lo == float(h.edges[np.searchsorted(cdf, 0.005)])
    assert result.hi == float(h.edges[np.searchsorted(cdf, 0.995)])
    assert -500 < result.lo < -490 and 490 < result.hi < 500


def test_percentile_clipped_fraction_is_what_it_leaves_out():
    x = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    result = range_percentile(StreamingHistogram.from_array(x), 99.0, symmetric=True)
    assert result.clipped_fraction == pytest.approx(np.mean((x < result.lo) | (x > result.hi)), abs=2e-4)
    assert result.clipped_fraction == pytest.approx(0.01, abs=5e-4)


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5])
def test_percentile_outside_0_100_is_refused(percentile):
    with pytest.raises(QuantLabError, match="percentile must be in"):
        range_percentile(_one_value_per_bin(), percentile)


# -- MSE ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,symmetric", [(INT8, True), (INT8, False), (UINT8, False), (INT4, True)])
def test_mse_range_has_at_most_minmax_error_on_heavy_tailed_data(fmt, symmetric):
    x = _heavy_tailed()
    h = StreamingHistogram.from_array(x)
    result = range_mse(h, fmt, symmetric=symmetric)
    assert result.hi < h.max  # the tail is clipped...
    # ...and the real error of fake-quantizing the data is lower than with the min-max range.
    assert _data_mse(x, result.lo, result.hi, fmt, symmetric) <= _data_mse(x, h.min, h.max, fmt, symmetric)


def test_mse_curve_is_a_chart_of_the_search():
    h = StreamingHistogram.from_array(_heavy_tailed())
    result = range_mse(h, INT8, symmetric=True)
    assert result.thresholds.shape == result.curve.shape == (MSE_CANDIDATES,)
    assert np.all(np.diff(result.thresholds) > 0)
    assert result.thresholds[-1] == pytest.approx(float(h.max_abs))
    assert result.curve.min() == result.curve[np.argmin(result.curve)]
    best = result.thresholds[np.argmin(result.curve)]
    assert (result.lo, result.hi) == (max(-best, h.min), min(best, h.max))  # [-t, t] clamped to the data
    assert result.curve[-1] > result.curve.min() and "MSE" in result.curve_label


def test_mse_keeps_nearly_the_full_range_of_uniform_data():
    x = np.random.default_rng(2).uniform(-1, 1, 100_000).astype(np.float32)
    result = range_mse(StreamingHistogram.from_array(x), INT8, symmetric=True)
    assert result.hi >= 0.97 and result.clipped_fraction < 0.03


@pytest.mark.parametrize("name", ["fp8_e4m3fn", "fp16", "ternary", "kmeans4"])
def test_mse_falls_back_to_minmax_for_formats_without_an_integer_grid(name):
    h = StreamingHistogram.from_array(_heavy_tailed(1000))
    result = range_mse(h, parse_format(name), symmetric=True)
    assert (result.method, result.lo, result.hi) == (RangeMethod.MINMAX, float(h.min), float(h.max))


# -- entropy -----------------------------------------------------------------------------------

def test_entropy_clips_a_heavy_tail_and_returns_its_kl_curve():
    h = StreamingHistogram.from_array(_heavy_tailed())
    result = range_entropy(h)
    assert h.min < result.lo < 0 < result.hi < h.max
    assert result.curve.shape == result.thresholds.shape == (1024 - 64 + 1,)
    assert result.thresholds[np.argmin(result.curve)] >= result.hi
    assert 0 < result.clipped_fraction < 0.01
    assert result.curve_label.startswith("KL")


@pytest.mark.parametrize("bins", [1, 4096, 129.0])
def test_entropy_needs_a_sensible_number_of_quantized_bins(bins):
    with pytest.raises(QuantLabError, match="num_quantized_bins"):
        range_entropy(StreamingHistogram.from_array(_heavy_tailed(1000)), bins)


# -- dispatch and errors -----------------------------------------------------------------------

@pytest.mark.parametrize("method", list(RangeMethod))
def test_estimate_range_dispatches_on_the_range_method(method):
    h = StreamingHistogram.from_array(_heavy_tailed(20_000))
    tq = TensorQuant(INT8, symmetric=False, range_method=method, percentile=99.9)
    direct = {RangeMethod.MINMAX: lambda: range_minmax(h),
              RangeMethod.PERCENTILE: lambda: range_percentile(h, 99.9, symmetric=False),
              RangeMethod.MSE: lambda: range_mse(h, INT8, symmetric=False),
              RangeMethod.ENTROPY: lambda: range_entropy(h)}[method]()
    result = estimate_range(h, tq)
    assert (result.method, result.lo, result.hi) == (method, direct.lo, direct.hi)


def test_an_empty_histogram_is_refused_naming_the_tensor():
    with pytest.raises(QuantLabError, match="'relu_3'.*empty"):
        range_minmax(StreamingHistogram(64, name="relu_3"))


# -- weights -----------------------------------------------------------------------------------

@pytest.fixture
def weight():
    w = np.random.default_rng(3).standard_normal((8, 3, 5, 5)).astype(np.float32)
    w[2, 0, 0, 0] = 40.0  # one outlier in output channel 2
    return w


@pytest.mark.parametrize("granularity", list(Granularity))
def test_weight_minmax_ranges_are_tensor_range(weight, granularity):
    tq = TensorQuant(INT8, granularity=granularity, block_size=16, axis=1)
    lo, hi = weight_ranges(weight, tq, name="w")
    expected = tensor_range(weight, granularity=granularity, axis=1, block_size=16)
    np.testing.assert_array_equal(lo, expected[0])
    np.testing.assert_array_equal(hi, expected[1])


@pytest.mark.parametrize("method", [RangeMethod.PERCENTILE, RangeMethod.MSE, RangeMethod.ENTROPY])
def test_weight_ranges_per_tensor_use_the_histogram_estimators(weight, method):
    tq = TensorQuant(INT8, range_method=method, percentile=99.5)
    lo, hi = weight_ranges(weight, tq, name="w")
    expected = estimate_range(StreamingHistogram.from_array(weight, 2048), tq)
    assert (float(lo), float(hi)) == (np.float32(expected.lo), np.float32(expected.hi))
    assert lo.dtype == hi.dtype == np.float32


def test_weight_percentile_per_channel_is_the_order_statistic_of_each_channel():
    w = np.stack([np.arange(1, 101), -np.arange(1, 101) * 2.0]).astype(np.float32)  # 2 channels x 100
    tq = TensorQuant(INT8, granularity=Granularity.PER_CHANNEL, range_method=RangeMethod.PERCENTILE,
                     percentile=95.0, symmetric=True)
    lo, hi = weight_ranges(w, tq, name="w")
    # |x| of channel 0 is 1..100: its 95th percentile (inverted CDF) is 95; clamped to min = 1.
    np.testing.assert_array_equal(lo, np.float32([1.0, -190.0]))
    np.testing.assert_array_equal(hi, np.float32([95.0, -2.0]))


def test_weight_mse_per_channel_clips_only_the_channel_with_the_outlier():
    w = np.random.default_rng(5).standard_normal((8, 1024)).astype(np.float32)
    w[2, 0] = 40.0  # one outlier in output channel 2
    tq = TensorQuant(INT4, granularity=Granularity.PER_CHANNEL, range_method=RangeMethod.MSE)
    lo, hi = weight_ranges(w, tq, name="w")
    channel_lo, channel_max = tensor_range(w, granularity=Granularity.PER_CHANNEL)
    assert lo.shape == hi.shape == (8,)
    assert hi[2] < 20.0  # clipping one value of 1024 costs less than a 13x coarser grid
    assert np.all(hi <= channel_max) and np.all(lo >= channel_lo)


def test_weight_entropy_per_channel_is_range_entropy_of_each_channel_histogram():
    w = np.random.default_rng(6).laplace(size=(3, 4000)).astype(np.float32)
    tq = TensorQuant(INT8, granularity=Granularity.PER_CHANNEL, range_method=RangeMethod.ENTROPY)
    lo, hi = weight_ranges(w, tq, name="w")
    for channel in range(3):
        h = StreamingHistogram.from_array(w[channel], 256)
        expected = range_entropy(h)
        width = float(h.edges[1] - h.edges[0])
        assert abs(lo[channel] - expected.lo) <= width and abs(hi[channel] - expected.hi) <= width


def test_weight_mse_per_group_has_the_layout_of_quantize():
    tq = TensorQuant(INT4, granularity=Granularity.PER_GROUP, axis=1, block_size=16, range_method=RangeMethod.MSE)
    x = np.random.default_rng(4).standard_normal((6, 40)).astype(np.float32)  # 40 = 2 full blocks + 8
    lo, hi = weight_ranges(x, tq, name="w")
    assert lo.shape == hi.shape == (6, 3)
    mm_lo, mm_hi = tensor_range(x, granularity=Granularity.PER_GROUP, axis=1, block_size=16)
    assert np.all(mm_lo <= lo) and np.all(hi <= mm_hi)
    scale, zero_point = qparams_from_range(lo, hi, INT4, symmetric=True)
    mm_scale, mm_zero_point = qparams_from_range(mm_lo, mm_hi, INT4, symmetric=True)
    error = np.mean((fake_quantize(x, scale, zero_point, INT4, axis=1, block_size=16) - x) ** 2)
    mm_error = np.mean((fake_quantize(x, mm_scale, mm_zero_point, INT4, axis=1, block_size=16) - x) ** 2)
    assert error <= mm_error


def test_weight_entropy_per_group_is_refused_with_the_alternatives():
    tq = TensorQuant(INT4, granularity=Granularity.PER_GROUP, block_size=32, range_method=RangeMethod.ENTROPY)
    with pytest.raises(ConfigError, match="'fc1.weight'.*minmax, percentile or mse per group"):
        weight_ranges(np.ones((4, 64), np.float32), tq, name="fc1.weight")


def test_weight_with_nan_is_refused_naming_it(weight):
    weight[0, 0, 0, 0] = np.nan
    with pytest.raises(QuantLabError, match="'conv1.weight'"):
        weight_ranges(weight, TensorQuant(INT8, range_method=RangeMethod.MSE), name="conv1.weight")


def test_asymmetric_percentile_of_a_constant_is_that_constant():
    # All values in one bin: onnxruntime's upper edge would fall below lo.
    result = range_percentile(StreamingHistogram.from_array(np.full(50, 3.0, np.float32)), 99.9, symmetric=False)
    assert (result.lo, result.hi, result.clipped_fraction) == (3.0, 3.0, 0.0)


def test_mse_with_a_flat_curve_keeps_the_minmax_range():
    # Values far below any candidate's step all quantize to 0: every range has the same error.
    h = StreamingHistogram.from_array(np.float32([1e-30, 2e-30]))
    result = range_mse(h, INT8, symmetric=False)
    assert np.all(result.curve == result.curve[0])
    assert (result.lo, result.hi, result.clipped_fraction) == (float(h.min), float(h.max), 0.0)


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_weight_ranges_never_invert_on_one_signed_channels(method):
    # Each column of this matrix is a channel; some are all negative. A symmetric threshold that
    # clips such a channel must still give lo <= hi (the grid always holds zero).
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    tq = TensorQuant("int2", granularity="per_channel", axis=1, range_method=method, percentile=90.0)
    lo, hi = weight_ranges(x, tq, name="w")
    assert np.all(lo <= hi)

"""StreamingHistogram: streaming, mergeable, fixed memory, and honest about bad input."""
import numpy as np
import pytest

from quant_core.errors import QuantLabError
from quant_core.numerics.histogram import StreamingHistogram


def _normal(seed: int, size: int, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(size) * scale).astype(np.float32)


def _pinned(x: np.ndarray, bound: float) -> np.ndarray:
    """x with 0, -bound and +bound added, so every batch has the same signed and |x| range."""
    return np.concatenate([x, np.float32([0.0, -bound, bound])])


def test_counts_min_max_and_count_track_every_value():
    batches = [_normal(0, 1000), _normal(1, 500, 2.0), _normal(2, 10, 0.1)]
    h = StreamingHistogram(256)
    for batch in batches:
        h.update(batch)
    everything = np.concatenate(batches)
    assert h.count == everything.size
    assert h.counts.sum() == h.abs_counts.sum() == everything.size
    assert (h.min, h.max) == (everything.min(), everything.max())
    assert h.edges.size == h.counts.size + 1 and h.edges.dtype == np.float32


def test_signed_histogram_is_symmetric_around_zero_over_max_abs():
    h = StreamingHistogram.from_array(np.float32([-1.0, 0.25, 3.0]), 8)
    np.testing.assert_array_equal(h.edges, np.linspace(-3, 3, 9, dtype=np.float32))
    np.testing.assert_array_equal(h.counts, [0, 0, 1, 0, 1, 0, 0, 1])  # -1 in [-1.5, -0.75)
    assert h.threshold == 3.0


def test_absolute_histogram_spans_min_to_max_of_abs_values():
    h = StreamingHistogram.from_array(np.float32([-1.0, 0.5, 3.0]), 4)
    np.testing.assert_array_equal(h.abs_edges, np.float32([0.5, 1.125, 1.75, 2.375, 3.0]))
    np.testing.assert_array_equal(h.abs_counts, [2, 0, 0, 1])


def test_from_array_equals_one_update():
    x = _normal(3, 5000)
    a, b = StreamingHistogram.from_array(x, 512), StreamingHistogram(512).update(x)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.abs_counts, b.abs_counts)


def test_merge_equals_histogram_of_concatenated_data_on_the_same_range():
    first, second = _pinned(_normal(4, 3000), 5.0), _pinned(_normal(5, 2000, 1.5), 5.0)
    merged = StreamingHistogram.from_array(first, 1024).merge(StreamingHistogram.from_array(second, 1024))
    whole = StreamingHistogram.from_array(np.concatenate([first, second]), 1024)
    np.testing.assert_array_equal(merged.edges, whole.edges)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.abs_edges, whole.abs_edges)
    np.testing.assert_array_equal(merged.abs_counts, whole.abs_counts)
    assert (merged.min, merged.max, merged.count) == (whole.min, whole.max, whole.count)


def test_merge_is_symmetric_on_the_same_range():
    a = StreamingHistogram.from_array(_pinned(_normal(6, 1000), 4.0), 256)
    b = StreamingHistogram.from_array(_pinned(_normal(7, 1000, 0.5), 4.0), 256)
    np.testing.assert_array_equal(a.copy().merge(b).counts, b.copy().merge(a).counts)


def test_merge_of_different_ranges_keeps_every_count_and_the_distribution():
    small, large = _normal(8, 20000), _normal(9, 20000, 3.0)
    merged = StreamingHistogram.from_array(small, 2048).merge(StreamingHistogram.from_array(large, 2048))
    assert merged.counts.sum() == merged.abs_counts.sum() == merged.count == 40000
    assert (merged.min, merged.max) == (min(small.min(), large.min()), max(small.max(), large.max()))
    # Each count lands in (or is split across neighbours of) its true bin: the CDFs agree to one bin.
    truth = np.concatenate([[0], np.cumsum(np.histogram(np.concatenate([small, large]), bins=merged.edges)[0])])
    cdf = np.concatenate([[0], np.cumsum(merged.counts)])
    assert np.max(np.abs(cdf - truth)) <= np.max(merged.counts)


def test_merge_into_an_empty_histogram_copies_the_other():
    other = StreamingHistogram.from_array(_normal(10, 100), 64)
    merged = StreamingHistogram(64, name="mine").merge(other)
    np.testing.assert_array_equal(merged.counts, other.counts)
    assert merged.count == 100 and merged.name == "mine"
    other.counts[0] += 1  # no shared buffers
    assert merged.counts[0] != other.counts[0]


def test_merge_refuses_something_else():
    with pytest.raises(QuantLabError, match="StreamingHistogram"):
        StreamingHistogram(64).merge(np.zeros(3))


def test_memory_is_bounded_by_max_bins_whatever_the_growth():
    h = StreamingHistogram(256)
    for step in range(60):
        h.update(_normal(step, 1000, 1.5**step))
    assert h.counts.size <= h.max_bins == 512
    assert h.abs_counts.size <= h.max_bins
    assert h.counts.sum() == h.abs_counts.sum() == h.count == 60_000
    assert h.edges[-1] >= h.max_abs and h.edges[0] <= h.min
    assert h.abs_edges[-1] >= h.max_abs


def test_memory_does_not_depend_on_the_number_of_samples():
    few, many = StreamingHistogram(2048), StreamingHistogram(2048)
    few.update(_pinned(_normal(0, 100), 6.0))
    for step in range(200):
        many.update(_pinned(_normal(step, 1000), 6.0))
    assert many.count == 200 * 1003
    assert many.nbytes == few.nbytes == 2 * (2048 * 8 + 2049 * 4)


def test_coarsening_merges_whole_bins_exactly():
    # A 10x wider second batch cannot fit in max_bins: bins are merged, none is split.
    h = StreamingHistogram(64, max_bins=128)
    first, second = _normal(11, 5000), _normal(12, 5000, 10.0)
    h.update(first).update(second)
    assert h.counts.size == 64
    expected = np.histogram(np.concatenate([first, second]), bins=h.edges.astype(np.float64))[0]
    np.testing.assert_array_equal(h.counts, expected)


def test_all_zero_first_batch_then_real_data():
    h = StreamingHistogram(16).update(np.zeros(10, np.float32)).update(np.float32([-2.0, 1.0]))
    assert h.threshold == 2.0 and h.counts.sum() == 12
    assert h.counts[8] == 10  # the zeros sit in the bin starting at 0
    assert h.counts[0] == 1 and h.counts[12] == 1


def test_empty_batch_changes_nothing():
    h = StreamingHistogram(16).update(np.float32([1.0, -1.0]))
    before = h.counts.copy()
    h.update(np.empty((0, 3), np.float32))
    np.testing.assert_array_equal(h.counts, before)
    assert h.count == 2


def test_integer_and_float64_input_is_histogrammed_as_float32():
    h = StreamingHistogram.from_array(np.arange(-3, 4), 8)
    assert h.count == 7 and h.min == -3 and h.max == 3 and h.edges.dtype == np.float32


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_naming_the_tensor(bad):
    h = StreamingHistogram(16, name="conv1_out").update(np.float32([1.0]))
    with pytest.raises(QuantLabError, match=r"'conv1_out'.*1 NaN or Inf value\(s\) out of 3"):
        h.update(np.float32([0.5, bad, 2.0]))
    assert h.count == 1  # the bad batch left no trace


def test_non_numeric_input_is_refused_naming_the_tensor():
    with pytest.raises(QuantLabError, match="'labels'.*non-numeric"):
        StreamingHistogram(16, name="labels").update(["a", "b"])


@pytest.mark.parametrize("bins", [0, 1, 7, 2.5, True, "64"])
def test_bins_must_be_an_even_integer(bins):
    with pytest.raises(QuantLabError, match="bins must be an even integer"):
        StreamingHistogram(bins)


def test_max_bins_below_bins_is_refused():
    with pytest.raises(QuantLabError, match="max_bins must be >= bins"):
        StreamingHistogram(64, max_bins=32)


def test_values_below_the_first_batch_smallest_abs_value_are_kept():
    # onnxruntime's |x| histogram starts at the first batch's min |x| and drops smaller later values;
    # ours adds bins below instead, so every value is counted.
    h = StreamingHistogram(64).update(np.float32([1.0, 2.0, -3.0])).update(np.float32([0.1, -0.05]))
    assert h.abs_counts.sum() == 5
    assert h.abs_edges[0] <= 0.05


def _arange_extended_edges(first_batch: np.ndarray, bins: int, amax: float) -> np.ndarray:
    """onnxruntime's |x| edges after a batch with a larger max: np.histogram's, extended by np.arange."""
    edges = np.histogram(first_batch, bins)[1].astype(np.float32)
    width = edges[1] - edges[0]
    return np.concatenate([edges, np.arange(edges[-1] + width, amax + width, width)]).astype(np.float32)


@pytest.mark.parametrize("edges, x", [
    # nearly uniform edges (onnxruntime's extension) and 200,000 values, some exactly on edges
    (_arange_extended_edges(np.abs(_normal(0, 1000)), 2048, 6.0),
     np.concatenate([np.abs(_normal(1, 200_000, 1.5)),
                     _arange_extended_edges(np.abs(_normal(0, 1000)), 2048, 6.0)[::7]])),
    # edges coarser than float32 can tell apart near 100: repeated edges, guesses far off
    (np.float32(100.0) + np.linspace(0, 1e-4, 65, dtype=np.float32), np.float32(100.0) + _normal(2, 5000, 3e-5)),
    # values outside the edges on both sides are not counted; edges[-1] itself is, in the last bin
    (np.linspace(-1.0, 1.0, 17, dtype=np.float32), np.float32([-2.0, -1.0, -0.125, 0.0, 0.999, 1.0, 3.0])),
])
def test_histogram_on_given_edges_equals_numpy_on_those_edges_bit_for_bit(edges, x):
    from quant_core.numerics.histogram import _histogram_on_edges
    assert np.array_equal(_histogram_on_edges(x, edges), np.histogram(x, bins=edges)[0])


def test_an_update_on_extended_edges_adds_numpys_counts_on_those_edges():
    h = StreamingHistogram(256).update(_normal(0, 1000, 1.0)).update(_normal(1, 1000, 1.5))
    assert h._abs_range is None  # the |x| grid was extended by np.arange: edges, not a uniform range
    before_signed, before_abs = h.counts.copy(), h.abs_counts.copy()
    batch = _pinned(_normal(2, 100_000, 1.0), min(float(h.threshold), float(h.abs_edges[-1])))
    h.update(batch)
    assert np.array_equal(h.counts - before_signed, np.histogram(batch, bins=h.edges)[0])
    assert np.array_equal(h.abs_counts - before_abs, np.histogram(np.abs(batch), bins=h.abs_edges)[0])


# --- ranges float32 edges cannot span as numpy would (numpy and onnxruntime raise "Too many bins") ---

F32_MAX = float(np.finfo(np.float32).max)
EXTREME_BATCHES = {
    "saturated-sigmoid": np.float32([0.99999994, 1.0, 1.0]),   # two adjacent float32 values
    "narrow-near-one": np.float32([1.0, 1.0001]),
    "subnormal": np.full(10, 1e-42, np.float32),
    "subnormal-spread": np.float32([1e-45, 1e-44]),
    "near-float32-max": np.full(5, 3e38, np.float32),
    "both-float32-limits": np.float32([-F32_MAX, F32_MAX, 0.0]),
    "huge-and-tiny": np.float32([1e30, -1e-30]),
    "zeros": np.zeros(3, np.float32),
    "ordinary": np.linspace(-1, 1, 100, dtype=np.float32),
}


def _assert_sound(h: StreamingHistogram, values: np.ndarray) -> None:
    assert h.counts.sum() == h.abs_counts.sum() == values.size  # no value lost
    for edges in (h.edges, h.abs_edges):
        assert np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0)
    assert h.edges[0] <= values.min() and values.max() <= h.edges[-1]
    assert h.abs_edges[0] <= np.abs(values).min() and np.abs(values).max() <= h.abs_edges[-1]
    assert (h.min, h.max) == (values.min(), values.max())


@pytest.mark.parametrize("case", list(EXTREME_BATCHES))
def test_any_finite_float32_batch_is_histogrammed_with_every_value_inside(case):
    values = EXTREME_BATCHES[case]
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # not even a warning on the way
        h = StreamingHistogram.from_array(values, name="y")
    _assert_sound(h, values)


@pytest.mark.parametrize("first", list(EXTREME_BATCHES))
@pytest.mark.parametrize("second", list(EXTREME_BATCHES))
def test_extreme_batches_follow_each_other_without_losing_a_value(first, second):
    batches = [EXTREME_BATCHES[first], EXTREME_BATCHES[second], EXTREME_BATCHES["ordinary"]]
    h = StreamingHistogram(name="y")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        for batch in batches:
            h.update(batch)
    _assert_sound(h, np.concatenate(batches))


def test_a_range_that_fits_keeps_numpys_bins_bit_for_bit():
    x = _normal(3, 1000)
    h = StreamingHistogram.from_array(x, 2048)
    threshold = np.abs(x).max()
    counts, edges = np.histogram(x, 2048, range=(-threshold, threshold))
    assert np.array_equal(h.counts, counts) and np.array_equal(h.edges, edges)
    abs_counts, abs_edges = np.histogram(np.abs(x), 2048)
    assert np.array_equal(h.abs_counts, abs_counts) and np.array_equal(h.abs_edges, abs_edges.astype(np.float32))


def test_a_too_narrow_range_is_widened_only_as_far_as_needed():
    h = StreamingHistogram.from_array(np.float32([0.99999994, 1.0]), 2048)
    assert h.abs_edges[0] == np.float32(0.99999994)
    assert h.abs_edges[-1] - h.abs_edges[0] <= 2 * 2048 * np.spacing(np.float32(1.0))  # at most a doubling past need

"""Specification of the extreme formats: binary, ternary (TWN) and k-means codebooks."""
import numpy as np
import pytest

from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.extreme import binarize, kmeans_codebook, ternarize
from quant_core.numerics.tensor import quantize_tensor


def test_binary_is_sign_times_mean_absolute_value_per_output_channel():
    w = np.array([[1.0, -3.0, 0.0, 2.0],
                  [-0.5, -0.5, 0.5, 0.5]], dtype=np.float32)
    result = binarize(w, name="w")
    assert result.scale.tolist() == [1.5, 0.5]
    assert result.codes.tolist() == [[1, -1, 1, 1], [-1, -1, 1, 1]]  # sign(0) = +1
    assert result.values.tolist() == [[1.5, -1.5, 1.5, 1.5], [-0.5, -0.5, 0.5, 0.5]]
    assert result.axis == 0


def test_binary_scale_minimises_the_squared_error_for_fixed_signs():
    w = np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32)
    result = binarize(w)
    for c in range(4):
        errors = [np.sum((s * result.codes[c] - w[c]) ** 2) for s in (result.scale[c] * 0.99, result.scale[c] * 1.01)]
        assert np.sum((result.values[c] - w[c]) ** 2) < min(errors)


def test_ternary_follows_ternary_weight_networks():
    w = np.array([[1.0, -1.0, 0.1, -0.2, 2.0]], dtype=np.float32)
    # mean|w| = 0.86, delta = 0.602: kept are 1, -1, 2 -> scale = 4/3
    result = ternarize(w, name="w")
    assert result.codes.tolist() == [[1, -1, 0, 0, 1]]
    assert result.scale[0] == np.float32(4 / 3)
    assert np.allclose(result.values, np.float32(4 / 3) * result.codes)


def test_ternary_values_are_three_levels_per_channel():
    w = np.random.default_rng(1).standard_normal((6, 3, 3, 3)).astype(np.float32)
    result = ternarize(w)
    for c in range(6):
        assert set(np.unique(result.values[c]).tolist()) == {-result.scale[c], 0.0, result.scale[c]}
    fraction_zero = np.mean(result.codes == 0)
    assert 0.3 < fraction_zero < 0.6  # ~0.42 for Gaussian weights with delta = 0.7 mean|w|


def test_all_zero_channels_give_zero_scale_and_zero_values():
    w = np.zeros((2, 5), dtype=np.float32)
    for result in (binarize(w), ternarize(w)):
        assert result.scale.tolist() == [0.0, 0.0] and np.all(result.values == 0)


@pytest.mark.parametrize("quantizer", [binarize, ternarize])
def test_the_output_channels_can_lie_on_any_axis(quantizer):
    # A MatMul weight (K, N) has its output channels on axis 1: one scale per column.
    w = np.random.default_rng(7).standard_normal((5, 3, 4)).astype(np.float32)
    for axis in (0, 1, 2, -1):
        result = quantizer(w, axis=axis)
        moved = quantizer(np.moveaxis(w, axis, 0))
        assert result.axis == axis % 3 and result.scale.shape == (w.shape[axis],)
        assert np.array_equal(result.scale, moved.scale)
        assert np.array_equal(result.codes, np.moveaxis(moved.codes, 0, axis))
        assert np.array_equal(result.values, np.moveaxis(moved.values, 0, axis))


def test_binary_along_axis_1_is_sign_times_mean_absolute_value_per_column():
    w = np.array([[1.0, -0.5],
                  [-3.0, 0.5]], dtype=np.float32)
    result = binarize(w, axis=1)
    assert result.scale.tolist() == [2.0, 0.5]
    assert result.values.tolist() == [[2.0, -0.5], [-2.0, 0.5]]


def test_an_axis_out_of_range_is_refused_naming_the_tensor():
    with pytest.raises(ConfigError, match="axis 2 is out of range for tensor 'fc'"):
        ternarize(np.ones((2, 3), dtype=np.float32), axis=2, name="fc")


def test_a_1d_tensor_is_one_channel():
    b = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    assert binarize(b).scale.tolist() == [2.0]
    assert binarize(b).axis is None


def test_kmeans_codebook_has_2_to_the_bits_sorted_centroids():
    w = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    for bits in (1, 2, 3, 4, 8):
        result = kmeans_codebook(w, bits, name="w")
        assert result.codebook.shape == (2**bits,) and result.codebook.dtype == np.float32
        assert np.all(np.diff(result.codebook) > 0)
        assert np.array_equal(result.values, result.codebook[result.codes])
        assert result.fmt.name == f"kmeans{bits}"


def test_kmeans_assigns_each_value_to_its_nearest_centroid_and_centroids_are_cluster_means():
    w = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
    result = kmeans_codebook(w, 3)
    distances = np.abs(w[:, None] - result.codebook[None, :])
    assert np.array_equal(np.abs(result.values - w), distances.min(axis=1))
    for k, centroid in enumerate(result.codebook):
        assert centroid == pytest.approx(w[result.codes == k].mean(), abs=1e-5)  # Lloyd converged


def test_kmeans_is_deterministic_and_better_with_more_bits():
    w = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    assert np.array_equal(kmeans_codebook(w, 4).codebook, kmeans_codebook(w, 4).codebook)
    errors = [np.mean((kmeans_codebook(w, bits).values - w) ** 2) for bits in (1, 2, 3, 4, 5)]
    assert errors == sorted(errors, reverse=True)


def test_kmeans_represents_few_distinct_values_exactly():
    w = np.array([[0.5, -1.0], [0.5, 2.0]], dtype=np.float32)
    result = kmeans_codebook(w, 3)
    assert np.array_equal(result.values, w)
    assert result.codebook.shape == (8,)
    assert result.codebook[:3].tolist() == [-1.0, 0.5, 2.0]


def test_kmeans_on_a_million_weights_reaches_the_lloyd_max_error():
    # ~0.1 s: sorted 1-D Lloyd costs O(k log n) per iteration after one sort.
    w = np.random.default_rng(5).standard_normal(1_000_000).astype(np.float32)
    result = kmeans_codebook(w, 4)
    assert np.mean((result.values - w) ** 2) < 0.0097  # optimal 16-level quantizer of N(0, 1): 0.0095


@pytest.mark.parametrize("name", ["binary", "ternary", "kmeans2"])
def test_quantize_tensor_dispatches_to_the_extreme_formats(name):
    w = np.random.default_rng(6).standard_normal((8, 16)).astype(np.float32)
    result = quantize_tensor(w, TensorQuant(name), name="w")
    expected = {"binary": binarize, "ternary": ternarize, "kmeans2": lambda x: kmeans_codebook(x, 2)}[name](w)
    assert np.array_equal(result.values, expected.values)


@pytest.mark.parametrize("name", ["binary", "ternary"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
def test_quantize_tensor_scales_binary_and_ternary_along_the_given_axis_whatever_the_granularity(name, granularity):
    w = np.random.default_rng(8).standard_normal((8, 16)).astype(np.float32)
    quantizer = {"binary": binarize, "ternary": ternarize}[name]
    natural = quantize_tensor(w, TensorQuant(name, granularity=granularity))  # bare tensor: axis 0
    columns = quantize_tensor(w, TensorQuant(name, granularity=granularity, axis=1))
    assert natural.axis == 0 and np.array_equal(natural.values, quantizer(w, axis=0).values)
    assert columns.axis == 1 and columns.scale.shape == (16,)
    assert np.array_equal(columns.values, quantizer(w, axis=1).values)


@pytest.mark.parametrize("call", [binarize, ternarize, lambda x, name: kmeans_codebook(x, 2, name=name)])
def test_nan_is_refused_naming_the_tensor(call):
    with pytest.raises(QuantLabError, match="'emb'"):
        call(np.array([[1.0, np.nan]], dtype=np.float32), name="emb")

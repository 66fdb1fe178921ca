"""Group-wise weight-only methods (quant_core/weight_only.py): what each promises, on small weights."""
import numpy as np
import pytest
from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

from quant_core.errors import QuantLabError
from quant_core.numerics.weight_only import (GroupQuantized, WeightOnlyMethod, awq, blockwise_qparams, gptq, hessian, hqq,
                                    lp_error, quantize_weight, rtn)

RNG = np.random.default_rng(0)
W = (RNG.normal(size=(128, 48)) * 0.05).astype(np.float32)


def correlated_inputs(rows: int = 2048, k: int = 128, seed: int = 1) -> np.ndarray:
    """Inputs with correlated channels and a few outlier channels, like a transformer's activations."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(k, k)) / np.sqrt(k) + np.eye(k)
    x = rng.normal(size=(rows, k)) @ mixing
    x[:, :4] *= 20.0
    return x.astype(np.float32)


def output_error(x, w, quantized: GroupQuantized) -> float:
    return float(np.mean(np.square(x @ w - x @ quantized.effective_weight())))


# -- the format ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("method", list(WeightOnlyMethod))
def test_every_method_returns_integers_in_range_and_one_scale_per_group(bits, symmetric, method):
    x = correlated_inputs()
    quantized = quantize_weight(W, method, bits=bits, block_size=32, symmetric=symmetric, inputs=x)
    assert quantized.q.shape == W.shape and quantized.q.dtype == np.uint8
    assert quantized.q.max() <= 2**bits - 1
    assert quantized.scale.shape == quantized.zero_point.shape == (128 // 32, 48)
    if symmetric:
        assert np.all(quantized.zero_point == 2 ** (bits - 1))
    assert quantized.effective_weight().shape == W.shape


def test_rtn_error_is_at_most_half_a_step_inside_each_group():
    quantized = rtn(W, bits=4, block_size=32, symmetric=False)
    step = np.repeat(np.abs(quantized.scale), 32, axis=0)
    assert np.all(np.abs(W - quantized.dequantize()) <= step / 2 + 1e-7)


def test_symmetric_rtn_puts_the_largest_magnitude_exactly_on_the_grid():
    group = np.array([[0.1], [-0.8], [0.5], [0.3]], dtype=np.float32)
    scale, zero_point = blockwise_qparams(group[None], 4, symmetric=True)
    assert scale[0, 0] == pytest.approx(0.1) and zero_point[0, 0] == 8          # -0.8 / -8
    quantized = rtn(group, bits=4, block_size=4)
    assert quantized.q[1, 0] == 0 and quantized.dequantize()[1, 0] == pytest.approx(-0.8)


def test_an_all_zero_group_has_scale_zero_and_dequantizes_to_zero():
    w = np.zeros((32, 2), dtype=np.float32)
    for symmetric in (True, False):
        quantized = rtn(w, bits=4, block_size=32, symmetric=symmetric)
        assert np.all(quantized.scale == 0) and np.all(quantized.dequantize() == 0)


def test_k_not_a_multiple_of_the_group_size_pads_the_last_group():
    w = W[:100]
    quantized = rtn(w, bits=4, block_size=32, symmetric=False)
    assert quantized.q.shape == (100, 48) and quantized.scale.shape == (4, 48)
    assert np.all(np.abs(w - quantized.dequantize()) <= np.repeat(np.abs(quantized.scale), 32, axis=0)[:100] / 2 + 1e-7)


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(QuantLabError, match=r"2-D MatMul weight \[K, N\]"):
        rtn(np.zeros(8, dtype=np.float32))
    with pytest.raises(QuantLabError, match="block_size must be a power of two"):
        rtn(W, block_size=48)
    with pytest.raises(QuantLabError, match="NaN or infinite"):
        rtn(np.full((32, 2), np.nan, dtype=np.float32))
    with pytest.raises(QuantLabError, match="GPTQ needs calibration inputs"):
        quantize_weight(W, "gptq")
    with pytest.raises(QuantLabError, match=r"the Hessian must be \[K, K\]"):
        gptq(W, np.eye(3))


# -- RTN is onnxruntime's --------------------------------------------------------------------------

@pytest.mark.parametrize("bits, kernel", [(4, quantize_matmul_4bits), (8, quantize_matmul_8bits)])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_size", [32, 64, 128])
def test_rtn_equals_onnxruntimes_matmul_nbits_quantizer(bits, kernel, symmetric, block_size):
    w = (np.random.default_rng(bits + block_size).normal(size=(256, 40)) * 0.1).astype(np.float32)
    k, n = w.shape
    blocks, per_byte = k // block_size, 8 // bits
    packed = np.zeros((n, blocks, block_size // per_byte), dtype=np.uint8)
    zero_points = np.zeros((n, -(-blocks // per_byte)), dtype=np.uint8)
    scales = np.zeros((n, blocks), dtype=np.float32)
    kernel(packed, w, scales, zero_points, block_size, n, k, symmetric)
    ours = rtn(w, bits=bits, block_size=block_size, symmetric=symmetric)
    if bits == 4:
        q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(n, k)
        zp = np.stack([zero_points & 15, zero_points >> 4], axis=-1).reshape(n, -1)[:, :blocks]
    else:
        q, zp = packed.reshape(n, k), zero_points[:, :blocks]
    np.testing.assert_array_equal(ours.scale, scales.T)
    np.testing.assert_array_equal(ours.q, q.T)
    if not symmetric:  # symmetric: onnxruntime leaves zero points to the operator's default 2**(bits-1)
        np.testing.assert_array_equal(ours.zero_point, zp.T)


# -- what each method promises ---------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_hqq_is_never_worse_than_rtn_on_its_objective_per_group(symmetric, bits):
    for seed in range(3):
        w = (np.random.default_rng(seed).standard_t(3, size=(128, 32)) * 0.05).astype(np.float32)
        ours = lp_error(w, hqq(w, bits=bits, block_size=32, symmetric=symmetric))
        baseline = lp_error(w, rtn(w, bits=bits, block_size=32, symmetric=symmetric))
        assert np.all(ours <= baseline + 1e-9)
        assert ours.sum() < baseline.sum()                   # and it does improve somewhere


def test_gptq_beats_rtn_on_the_layer_output_with_correlated_inputs():
    x = correlated_inputs()
    for bits in (3, 4):
        ours = gptq(W, hessian(x), bits=bits, block_size=32)
        assert output_error(x, W, ours) < 0.8 * output_error(x, W, rtn(W, bits=bits, block_size=32))


def test_gptq_with_an_identity_hessian_is_rtn():
    # No correlation between inputs: nothing to compensate, every row rounds as RTN rounds it.
    ours = gptq(W, np.eye(128), bits=4, block_size=32, damp=0.0)
    np.testing.assert_array_equal(ours.q, rtn(W, bits=4, block_size=32).q)


def test_gptq_zeroes_the_rows_of_inputs_never_seen():
    h = hessian(correlated_inputs())
    h[5, :] = h[:, 5] = 0.0
    assert np.all(gptq(W, h, bits=4, block_size=32).effective_weight()[5] == 0)


def test_awq_is_never_worse_than_rtn_on_the_output_error_and_protects_outlier_channels():
    x = correlated_inputs()
    ours = awq(W, x, bits=4, block_size=32)
    baseline = rtn(W, bits=4, block_size=32)
    assert output_error(x, W, ours) < output_error(x, W, baseline)
    # The outlier input channels (0-3) are scaled up before rounding: their weights get finer steps.
    assert ours.input_scale is not None and ours.input_scale[:4].min() > ours.input_scale[4:].max()


def test_awq_with_uniform_inputs_keeps_rtn():
    x = np.ones((64, 128), dtype=np.float32)
    ours = awq(W, x, bits=4, block_size=32)
    assert ours.input_scale is None
    np.testing.assert_array_equal(ours.q, rtn(W, bits=4, block_size=32).q)


def test_storage_counts_packed_integers_scales_and_zero_points():
    sym = rtn(W, bits=4, block_size=32)
    asym = rtn(W, bits=4, block_size=32, symmetric=False)
    assert sym.storage_bytes() == 128 * 48 // 2 + 4 * 4 * 48
    assert asym.storage_bytes() == sym.storage_bytes() + 48 * 2          # 4 groups of 4 bits per column


def test_weight_sqnr_table_grows_with_bits_and_with_smaller_groups():
    from quant_core.numerics.weight_only import weight_sqnr_table

    rows = {(method, bits, block): sqnr for method, bits, block, sqnr in weight_sqnr_table(W)}
    assert len(rows) == 2 * 3 * 3
    for method in ("rtn", "hqq"):
        assert rows[(method, 3, 32)] < rows[(method, 4, 32)] < rows[(method, 8, 32)]
        assert rows[(method, 4, 32)] > rows[(method, 4, 128)]

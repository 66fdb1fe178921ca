"""Specification of the float formats: FP16, BF16, FP8 E4M3FN and E5M2, round to nearest even, saturating."""
import ml_dtypes
import numpy as np
import pytest

from quant_core.config import TensorQuant
from quant_core.errors import QuantLabError
from quant_core.numerics.floats import FLOAT_SPECS, fp8_scale, round_to_float_format
from quant_core.numerics.formats import parse_format
from quant_core.numerics.tensor import quantize_tensor

NUMPY_TYPE = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16, "fp8_e4m3fn": ml_dtypes.float8_e4m3fn,
              "fp8_e5m2": ml_dtypes.float8_e5m2}


def rounded(values, name, **kwargs):
    return round_to_float_format(np.array(values, dtype=np.float32), parse_format(name), **kwargs).tolist()


# name, x, expected
EXACT = [
    ("fp8_e4m3fn", [1.0, 1.0625, 1.125, 1.1875], [1.0, 1.0, 1.125, 1.25]),  # ties go to the even mantissa
    ("fp8_e4m3fn", [17.0, 19.0, 15.5], [16.0, 20.0, 16.0]),  # 15.5 carries into the next binade
    ("fp8_e4m3fn", [448.0, 464.0, 1e6, -1e6], [448.0, 448.0, 448.0, -448.0]),  # saturation
    ("fp8_e4m3fn", [2.0**-9, 2.0**-10, 3 * 2.0**-10, 2.0**-11], [2.0**-9, 0.0, 2.0**-8, 0.0]),  # subnormals
    ("fp8_e5m2", [1.125, 1.375, 57344.0, 61440.0, 1e9], [1.0, 1.5, 57344.0, 57344.0, 57344.0]),
    ("fp8_e5m2", [2.0**-16, 2.0**-17, 3 * 2.0**-17], [2.0**-16, 0.0, 2.0**-15]),
    ("fp16", [1 + 2.0**-11, 1 + 3 * 2.0**-11, 65504.0, 65520.0], [1.0, 1 + 2.0**-9, 65504.0, 65504.0]),
    ("fp16", [2.0**-24, 2.0**-25, 3 * 2.0**-25], [2.0**-24, 0.0, 2.0**-23]),
    ("bf16", [1 + 2.0**-8, 1 + 3 * 2.0**-8, 0.1], [1.0, 1 + 2.0**-6, 0.10009765625]),
]


@pytest.mark.parametrize("name, x, expected", EXACT)
def test_exact_values(name, x, expected):
    assert rounded(x, name) == expected


@pytest.mark.parametrize("name", list(NUMPY_TYPE))
def test_every_representable_value_is_kept_and_midpoints_round_to_even(name):
    fmt = parse_format(name)
    dtype = NUMPY_TYPE[name]
    width = 8 if name.startswith("fp8") else 16
    codes = np.arange(2**width, dtype=np.uint32).astype(np.uint8 if width == 8 else np.uint16)
    grid = codes.view(dtype).astype(np.float32)
    keep = np.isfinite(grid)
    grid, codes = grid[keep], codes[keep]
    assert np.array_equal(round_to_float_format(grid, fmt).view(np.uint32), grid.view(np.uint32))
    order = np.argsort(grid, kind="stable")
    grid, codes = grid[order], codes[order]
    distinct = np.concatenate([[True], grid[1:] != grid[:-1]])  # +0 and -0
    grid, codes = grid[distinct], codes[distinct]
    ties = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)
    exact = ties.astype(np.float64) == (grid[:-1].astype(np.float64) + grid[1:]) / 2
    lower_is_even = (codes[:-1] & 1) == 0
    # A tie between a negative and a positive neighbour is zero itself; skip it.
    same_sign = np.sign(grid[:-1]) == np.sign(grid[1:])
    check = exact & same_sign
    expected = np.where(lower_is_even, grid[:-1], grid[1:])
    got = round_to_float_format(ties, fmt)
    assert check.sum() > 100
    assert np.array_equal(got[check], expected[check])


@pytest.mark.parametrize("name", list(NUMPY_TYPE))
def test_equals_ml_dtypes_conversion_on_all_magnitudes(name):
    fmt = parse_format(name)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = x[np.isfinite(x)]
    x = np.concatenate([x, (x * np.float32(2.0**-100)).astype(np.float32)])  # many in each format's range
    top = np.float32(FLOAT_SPECS[fmt.kind].max_finite)
    expected = np.clip(x, -top, top).astype(NUMPY_TYPE[name]).astype(np.float32)
    assert np.array_equal(round_to_float_format(x, fmt).view(np.uint32), expected.view(np.uint32))


def test_fp16_equals_numpy_float16_cast_without_saturation():
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32) * np.float32(3e4)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
        got = round_to_float_format(x, parse_format("fp16"), saturate=False)
    assert np.isinf(expected).any()
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_without_saturation_e4m3fn_overflows_to_nan_and_e5m2_to_inf():
    assert np.isnan(rounded([1000.0], "fp8_e4m3fn", saturate=False)[0])
    assert rounded([1e6, -1e6], "fp8_e5m2", saturate=False) == [np.inf, -np.inf]


def test_sign_of_zero_is_kept():
    out = round_to_float_format(np.array([-0.0, -1e-30, 1e-30], dtype=np.float32), parse_format("fp8_e4m3fn"))
    assert np.signbit(out).tolist() == [True, True, False] and np.all(out == 0)


def test_nan_and_inf_are_refused_naming_the_tensor():
    with pytest.raises(QuantLabError, match="'attn.q'"):
        round_to_float_format(np.array([1.0, np.nan]), parse_format("fp16"), name="attn.q")
    with pytest.raises(QuantLabError, match="'attn.q'"):
        round_to_float_format(np.array([np.inf]), parse_format("bf16"), name="attn.q")


def test_an_integer_format_is_refused():
    with pytest.raises(QuantLabError, match="not a float format"):
        round_to_float_format(np.ones(3), parse_format("int8"))


# --- scaled FP8 --------------------------------------------------------------------------------------

def test_fp8_scale_maps_amax_to_the_largest_finite_value():
    assert fp8_scale(448.0, parse_format("fp8_e4m3fn")) == 1.0
    assert fp8_scale(57344.0 * 2, parse_format("fp8_e5m2")) == 2.0
    assert fp8_scale([0.0, 1e-45], parse_format("fp8_e4m3fn")).tolist() == [1.0, 1.0]  # degenerate


@pytest.mark.parametrize("name", ["fp8_e4m3fn", "fp8_e5m2"])
def test_scaled_fp8_per_tensor_uses_the_whole_range(name):
    fmt = parse_format(name)
    w = np.random.default_rng(2).standard_normal((32, 16)).astype(np.float32) * np.float32(1e-3)
    result = quantize_tensor(w, TensorQuant(name), name="w")
    amax = np.abs(w).max()
    assert result.scale == fp8_scale(amax, fmt)
    assert np.abs(result.values).max() == pytest.approx(amax, rel=0.07)
    expected = round_to_float_format(w / result.scale, fmt) * result.scale
    assert np.array_equal(result.values, expected)


def test_scaled_fp8_per_channel_equals_per_tensor_on_each_channel():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((8, 24)) * rng.uniform(1e-4, 100, (8, 1))).astype(np.float32)
    per_channel = quantize_tensor(w, TensorQuant("fp8_e4m3fn", granularity="per_channel"), name="w")
    assert per_channel.scale.shape == (8,) and per_channel.axis == 0
    for c in range(8):
        alone = quantize_tensor(w[c], TensorQuant("fp8_e4m3fn"), name="w")
        assert np.array_equal(per_channel.values[c], alone.values)


def test_scaled_fp8_is_much_better_than_unscaled_on_small_weights():
    w = np.random.default_rng(4).standard_normal(4096).astype(np.float32) * np.float32(1e-4)
    scaled = quantize_tensor(w, TensorQuant("fp8_e4m3fn"), name="w").values
    unscaled = round_to_float_format(w, parse_format("fp8_e4m3fn"))  # mostly flushed below 2^-9
    assert np.mean((scaled - w) ** 2) < np.mean((unscaled - w) ** 2) / 100

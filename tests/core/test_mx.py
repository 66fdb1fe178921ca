"""MX (OCP Microscaling v1.0) and NVFP4 block formats: element rounding bit-exact against ml_dtypes, the
shared E8M0 exponent rule and its range edges, saturation, and the size accounting."""
import ml_dtypes
import numpy as np
import pytest

from quant_core.numerics.mx import BLOCK_FORMATS, bits_per_value, quantize_blocks, round_to_element, shared_exponent

ORACLE = {"mxfp8_e4m3": ml_dtypes.float8_e4m3fn, "mxfp8_e5m2": ml_dtypes.float8_e5m2,
          "mxfp6_e3m2": ml_dtypes.float6_e3m2fn, "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
          "mxfp4": ml_dtypes.float4_e2m1fn, "nvfp4": ml_dtypes.float4_e2m1fn}


def _oracle(x: np.ndarray, name: str) -> np.ndarray:
    """ml_dtypes' cast (round half to even) after clamping to the largest finite value (the MX spec clamps)."""
    dtype = ORACLE[name]
    top = float(ml_dtypes.finfo(dtype).max)
    return np.clip(x, -top, top).astype(dtype).astype(np.float32)


def _probe_values(name: str) -> np.ndarray:
    """Every representable value, every midpoint between neighbours (the ties), random values, overflow."""
    dtype = ORACLE[name]
    bits = 8 if name.startswith("mxfp8") else 8  # ml_dtypes stores fp6/fp4 in a byte too
    grid = np.arange(2**bits, dtype=np.uint8).view(dtype).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    midpoints = (grid[:-1] + grid[1:]) / 2
    rng = np.random.default_rng(0)
    top = float(ml_dtypes.finfo(dtype).max)
    random = rng.uniform(-1.2 * top, 1.2 * top, 20_000).astype(np.float32)
    small = rng.normal(scale=float(ml_dtypes.finfo(dtype).tiny), size=5_000).astype(np.float32)
    return np.concatenate([grid, midpoints, -midpoints, random, small, [top * 4, -top * 4, 0.0]]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_element_rounding_is_bit_exact_against_ml_dtypes(name):
    x = _probe_values(name)
    assert np.array_equal(round_to_element(x, BLOCK_FORMATS[name]), _oracle(x, name))


def test_mxint8_elements_are_int8_times_2_to_the_minus_6():
    x = np.array([0.0, 1 / 64, 1 / 128, 3 / 128, 1.984375, 2.5, -2.0, -3.0], np.float32)
    assert round_to_element(x, BLOCK_FORMATS["mxint8"]).tolist() == [0.0, 1 / 64, 0.0, 2 / 64, 1.984375,
                                                                      1.984375, -2.0, -2.0]


@pytest.mark.parametrize("name, emax, max_element", [
    ("mxfp8_e4m3", 8, 448.0), ("mxfp8_e5m2", 15, 57344.0), ("mxfp6_e3m2", 4, 28.0), ("mxfp6_e2m3", 2, 7.5),
    ("mxfp4", 2, 6.0), ("mxint8", 0, 127 / 64),
])
def test_emax_is_the_exponent_of_the_largest_element(name, emax, max_element):
    fmt = BLOCK_FORMATS[name]
    assert fmt.emax == emax and fmt.max_element == max_element
    assert 2.0**emax <= max_element < 2.0 ** (emax + 1)


@pytest.mark.parametrize("amax, spec, up", [
    (6.0, 0, 0), (7.9, 0, 1), (8.0, 1, 1), (1.0, -2, -2), (0.75, -3, -3), (12.0, 1, 1), (12.5, 1, 2),
])
def test_mxfp4_shared_exponent_spec_rule_and_round_up(amax, spec, up):
    fmt = BLOCK_FORMATS["mxfp4"]
    assert int(shared_exponent(amax, fmt)) == spec  # floor(log2 amax) - 2
    assert int(shared_exponent(amax, fmt, round_up=True)) == up  # smallest e with amax / 2^e <= 6


def test_spec_rule_clips_the_block_maximum_and_round_up_does_not():
    block = np.full(32, 0.5, np.float32)
    block[0] = 7.9  # floor(log2 7.9) - 2 = 0: 7.9 / 1 rounds past 6 and clamps to 6
    spec = quantize_blocks(block, "mxfp4")
    up = quantize_blocks(block, "mxfp4", round_up=True)
    assert spec.values[0] == 6.0 and int(spec.exponents[0]) == 0
    assert up.values[0] == 8.0 and int(up.exponents[0]) == 1  # 7.9 / 2 = 3.95 -> 4 (E2M1 has 3 and 4)
    # The price of the larger scale: 0.5 / 2 = 0.25 is the tie between E2M1's 0 and 0.5, and goes to 0.
    assert spec.values[1] == 0.5 and up.values[1] == 0.0


def test_e8m0_range_edges():
    fmt = BLOCK_FORMATS["mxfp8_e4m3"]
    assert int(shared_exponent(0.0, fmt)) == -127  # an all-zero block
    assert int(shared_exponent(2.0**-140, fmt)) == -127  # below the range: clamped
    assert int(shared_exponent(3.4e38, fmt)) == 127 - 8  # floor(log2 3.4e38) = 127
    assert int(shared_exponent(3.4e38, BLOCK_FORMATS["mxint8"])) == 127  # the top of E8M0
    scales = np.ldexp(np.float32(1), np.arange(-127, 128)).astype(np.float32)
    assert np.array_equal(scales.astype(ml_dtypes.float8_e8m0fnu).astype(np.float32), scales)


def test_every_block_scale_is_an_e8m0_value_and_blocks_run_along_the_axis():
    x = np.random.default_rng(1).normal(size=(8, 70)).astype(np.float32)
    result = quantize_blocks(x, "mxfp6_e2m3", axis=1)
    assert result.block_scales.shape == (8, 3)  # 70 = 32 + 32 + 6 (a partial last block)
    scales = result.block_scales
    assert np.array_equal(scales.astype(ml_dtypes.float8_e8m0fnu).astype(np.float32), scales)
    oracle = np.concatenate([
        _oracle(x[:, s:s + 32] / np.repeat(scales[:, [i]], min(32, 70 - s), axis=1), "mxfp6_e2m3")
        * scales[:, [i]] for i, s in enumerate(range(0, 70, 32))], axis=1)
    assert np.array_equal(result.values, oracle)
    transposed = quantize_blocks(x.T, "mxfp6_e2m3", axis=0)
    assert np.array_equal(transposed.values, result.values.T)


def test_nvfp4_scales_and_elements():
    x = np.random.default_rng(2).normal(size=(4, 64)).astype(np.float32)
    result = quantize_blocks(x, "nvfp4", axis=1)
    tensor_scale = np.float32(np.abs(x).max() / (448 * 6))
    assert result.tensor_scale == pytest.approx(float(tensor_scale))
    assert result.block_scales.shape == (4, 4)
    blocks = np.abs(x).reshape(4, 4, 16).max(axis=2)
    expected_scales = (blocks / 6 / tensor_scale).astype(np.float32).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    assert np.array_equal(result.block_scales, expected_scales)
    divisor = np.repeat(expected_scales, 16, axis=1) * tensor_scale
    assert np.array_equal(result.elements, _oracle(x / divisor, "nvfp4"))
    assert np.array_equal(result.values, result.elements * divisor)
    assert np.max(np.abs(result.elements)) == 6.0  # the tensor's largest block reaches the top of E2M1


@pytest.mark.parametrize("name, bits", [("mxfp8_e4m3", 8.25), ("mxfp8_e5m2", 8.25), ("mxfp6_e3m2", 6.25),
                                        ("mxfp6_e2m3", 6.25), ("mxfp4", 4.25), ("mxint8", 8.25), ("nvfp4", 4.5)])
def test_bits_per_value_include_the_shared_scales(name, bits):
    assert bits_per_value(name) == bits
    assert bits_per_value("nvfp4", parameters=1024) == 4.5 + 32 / 1024


def test_finer_elements_have_smaller_error():
    x = np.random.default_rng(3).standard_t(4, size=(64, 256)).astype(np.float32)
    error = {name: float(np.mean((quantize_blocks(x, name).values - x) ** 2)) for name in BLOCK_FORMATS}
    assert error["mxint8"] < error["mxfp6_e2m3"] < error["mxfp4"]
    assert error["mxfp8_e4m3"] < error["mxfp8_e5m2"] < error["mxfp4"]
    assert error["nvfp4"] < error["mxfp4"]  # blocks of 16 with a finer FP8 scale


# -- wired into the lab's formats, configs, sizes and export plan ---------------------------------------

from quant_core.config import LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.numerics.formats import Granularity, parse_format  # noqa: E402
from quant_core.numerics.tensor import quantize_tensor  # noqa: E402
from quant_core.numerics.size import bits_per_parameter  # noqa: E402


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4",
                                  "mxfp4_up", "mxint8_up"])
def test_block_format_names_round_trip(name):
    fmt = parse_format(name)
    assert fmt.is_block and fmt.name == name and parse_format(fmt.to_dict()) == fmt
    assert fmt.scale_round_up == name.endswith("_up")


def test_round_up_is_refused_for_other_formats():
    with pytest.raises(ValueError, match="only MX formats round"):
        parse_format("nvfp4_up")
    with pytest.raises(ValueError, match="unknown number format"):
        parse_format("int8_up")


def test_a_block_format_fixes_its_blocks_in_the_config():
    tq = TensorQuant(parse_format("mxfp4"), granularity="per_channel", block_size=128)
    assert tq.granularity == Granularity.PER_GROUP and tq.block_size == 32
    assert TensorQuant(parse_format("nvfp4")).block_size == 16
    assert TensorQuant.from_dict(tq.to_dict()) == tq


@pytest.mark.parametrize("name, bits", [("mxfp4", 4.25), ("mxfp6_e2m3", 6.25), ("mxfp8_e5m2", 8.25), ("mxint8", 8.25),
                                        ("nvfp4", 4.5 + 32 / (64 * 128))])
def test_size_counts_the_shared_scales(name, bits):
    assert bits_per_parameter((64, 128), TensorQuant(parse_format(name))) == bits


def test_quantize_tensor_blocks_run_along_the_reduction_of_a_bare_weight():
    w = np.random.default_rng(4).normal(size=(16, 96)).astype(np.float32)
    result = quantize_tensor(w, TensorQuant(parse_format("mxfp4")))
    assert result.axis == 1 and result.block_size == 32 and result.scale.shape == (16, 3)
    assert np.array_equal(result.values, quantize_blocks(w, "mxfp4", axis=1).values)
    up = quantize_tensor(w, TensorQuant(parse_format("mxfp4_up")))
    assert np.array_equal(up.values, quantize_blocks(w, "mxfp4", axis=1, round_up=True).values)


def test_block_formats_are_simulated_only_in_the_export_plan():
    from quant_core.model.demo import load_demo
    from quant_core.model.model_io import load_model, prepare_model
    from quant_core.export.overrides import ExportKind, plan_export

    prepared = prepare_model(load_model(load_demo("mlp")[0]))
    plan = plan_export(prepared, QuantConfig(LayerQuant(TensorQuant(parse_format("mxfp4")))))
    assert {entry.kind for entry in plan} == {ExportKind.SIMULATED_ONLY}
    assert all("block format" in entry.reason for entry in plan)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_element_grid_is_every_finite_value_of_the_ml_dtypes_type(name):
    from quant_core.numerics.mx import element_grid
    dtype = ORACLE[name]
    every = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    assert np.array_equal(element_grid(name), np.unique(every[np.isfinite(every)]))

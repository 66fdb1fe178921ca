"""Specification of integer quantize / dequantize / fake_quantize, tensor_range and quantize_tensor."""
import numpy as np
import pytest

from quant_core.numerics import quantize as quantize_module
from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.floats import round_to_float_format
from quant_core.numerics.formats import parse_format
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import QuantizedTensor, dequantize, fake_quantize, quantize, tensor_range
from quant_core.numerics.tensor import fake_quantize_tensor, quantize_tensor

INTEGER_FORMATS = ["int2", "int3", "int4", "int8", "int8_narrow", "int16", "uint2", "uint4", "uint8",
                   "uint8_narrow", "uint16"]


def reference_fake_quantize(x, scale, zero_point, fmt):
    """The definition, written the plain way: dequantize(quantize(x)) with ONNX's formulas."""
    q = np.clip(np.rint(np.float32(x) / np.float32(scale)) + zero_point, fmt.qmin, fmt.qmax).astype(np.int32)
    return (q - np.int32(zero_point)).astype(np.float32) * np.float32(scale)


def half_step_bound(x, scale):
    """scale / 2, plus the float32 rounding of x / scale and of (q - zero_point) * scale (an ulp of x)."""
    return np.float64(scale) / 2 + 2 * np.spacing(np.abs(x)).astype(np.float64)


def same_bits(a, b):
    return a.dtype == b.dtype == np.float32 and a.shape == b.shape and np.array_equal(a.view(np.uint32),
                                                                                        b.view(np.uint32))


def params_for(x, name, symmetric, granularity="per_tensor", axis=0, block_size=128):
    fmt = parse_format(name)
    lo, hi = tensor_range(x, granularity=granularity, axis=axis, block_size=block_size)
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=symmetric)
    return fmt, scale, zero_point


# --- properties of the integer grid ------------------------------------------------------------------

@pytest.mark.parametrize("name", INTEGER_FORMATS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_codes_stay_in_qmin_qmax_even_for_values_far_outside_the_range(name, symmetric):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4000).astype(np.float32) * 10
    fmt = parse_format(name)
    scale, zero_point = qparams_from_range(-1.0, 0.5, fmt, symmetric=symmetric)  # far narrower than x
    q = quantize(x, scale, zero_point, fmt)
    assert q.dtype == np.int32
    assert q.min() == fmt.qmin and q.max() == fmt.qmax


@pytest.mark.parametrize("name", INTEGER_FORMATS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_error_is_at_most_half_a_step_inside_the_range(name, symmetric):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(5000) * 3 + 0.5).astype(np.float32)
    fmt, scale, zero_point = params_for(x, name, symmetric)
    low, high = (fmt.qmin - zero_point) * scale, (fmt.qmax - zero_point) * scale
    inside = (x >= low) & (x <= high)
    assert inside.mean() > 0.5  # symmetric int2 covers only [-1.33, 0.67] x absmax: the rest clips
    error = np.abs(fake_quantize(x, scale, zero_point, fmt) - x)
    assert np.all(error[inside] <= half_step_bound(x, scale)[inside])


@pytest.mark.parametrize("name", INTEGER_FORMATS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_is_exactly_representable(name, symmetric):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-0.3, 5.0, 999), [0.0]]).astype(np.float32)
    fmt, scale, zero_point = params_for(x, name, symmetric)
    out = fake_quantize(x, scale, zero_point, fmt)
    assert out[-1] == 0.0 and not np.signbit(out[-1])


@pytest.mark.parametrize("name", INTEGER_FORMATS)
def test_every_representable_integer_round_trips(name):
    fmt = parse_format(name)
    codes = np.arange(fmt.qmin, fmt.qmax + 1, dtype=np.int32)
    for scale, zero_point in [(np.float32(0.0173), (fmt.qmin + fmt.qmax) // 2), (np.float32(3.0), fmt.qmin),
                              (np.float32(1e-3), fmt.qmax)]:
        values = dequantize(codes, scale, zero_point)
        assert np.array_equal(quantize(values, scale, zero_point, fmt), codes)
        assert same_bits(fake_quantize(values, scale, zero_point, fmt), values)


def test_ties_round_half_to_even():
    fmt = parse_format("int8")
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5], dtype=np.float32)
    assert quantize(x, 1.0, 0, fmt).tolist() == [0, 2, 2, 0, -2, -2, 126, 127, -128]


def test_zero_results_are_positive_zero_like_dequantize_linear():
    fmt = parse_format("int8")
    x = np.array([-0.4, -0.5, -0.0, 0.3, -1e-30], dtype=np.float32)
    out = fake_quantize(x, 1.0, 0, fmt)
    assert np.all(out == 0) and not np.any(np.signbit(out))


# --- fake_quantize is dequantize(quantize()) bit for bit ----------------------------------------------

LAYOUTS = [  # shape, granularity, axis, block_size
    ((300,), "per_tensor", 0, None),
    ((16, 3, 5, 5), "per_channel", 0, None),
    ((16, 3, 5, 5), "per_channel", 1, None),
    ((40, 24), "per_channel", -1, None),
    ((100, 24), "per_group", 0, 32),  # last block partial (100 = 3 * 32 + 4)
    ((8, 70), "per_group", 1, 16),
    ((4, 6, 50), "per_group", 1, 16),
]


@pytest.mark.parametrize("shape, granularity, axis, block_size", LAYOUTS)
@pytest.mark.parametrize("name, symmetric", [("int8", True), ("uint8", False), ("int4", False), ("uint16", True)])
def test_fake_quantize_equals_dequantize_of_quantize(shape, granularity, axis, block_size, name, symmetric):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 5, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)))
    x = x.astype(np.float32)
    fmt, scale, zero_point = params_for(x, name, symmetric, granularity, axis, block_size or 128)
    kwargs = {"axis": None if granularity == "per_tensor" else axis, "block_size": block_size}
    q = quantize(x, scale, zero_point, fmt, **kwargs)
    assert same_bits(fake_quantize(x, scale, zero_point, fmt, **kwargs), dequantize(q, scale, zero_point, **kwargs))


FAST_PATHS = {"numpy chunks on two threads": {"_ORT_MIN": 1 << 40},
              "onnxruntime session": {"_ORT_MIN": 0, "_ORT_MIN_ROW": 0}}


@pytest.mark.parametrize("path", list(FAST_PATHS))
@pytest.mark.parametrize("shape, axis", [((1 << 21,), None), ((1024, 2050), 0), ((2050, 1024), 1),
                                         ((32, 300, 220), 1)])
@pytest.mark.parametrize("name", ["uint8", "int8", "int16"])
@pytest.mark.parametrize("into", ["a new array", "out="])
def test_large_tensors_take_a_fast_path_and_stay_bit_exact(path, shape, axis, name, into, monkeypatch):
    for constant, value in FAST_PATHS[path].items():
        monkeypatch.setattr(quantize_module, constant, value)
    assert np.prod(shape) >= quantize_module._THREAD_MIN  # big enough for the threads too
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape, dtype=np.float32)
    fmt = parse_format(name)
    if axis is None:
        scale, zero_point = qparams_from_range(-2.0, 2.5, fmt, symmetric=False)  # values beyond the range clip
        expected = reference_fake_quantize(x, scale, zero_point, fmt)
    else:
        channels = shape[axis]
        scale = rng.uniform(0.005, 0.03, channels).astype(np.float32) * np.float32(256 / 2**fmt.bits)
        zero_point = rng.integers(fmt.qmin, fmt.qmax + 1, channels).astype(np.int32)
        view = (-1,) + (1,) * (len(shape) - axis - 1)
        expected = reference_fake_quantize(x, scale.reshape(view), zero_point.reshape(view), fmt)
    out = np.full_like(x, np.nan) if into == "out=" else None  # chunked runs must fill all of it
    assert same_bits(fake_quantize(x, scale, zero_point, fmt, axis=axis, out=out), expected)
    if into == "a new array":
        q = quantize(x, scale, zero_point, fmt, axis=axis)
        assert same_bits(dequantize(q, scale, zero_point, axis=axis), expected)


@pytest.mark.parametrize("path", list(FAST_PATHS))
def test_a_nan_or_inf_deep_inside_a_large_tensor_is_found_on_every_path(path, monkeypatch):
    for constant, value in FAST_PATHS[path].items():
        monkeypatch.setattr(quantize_module, constant, value)
    x = np.zeros(quantize_module._THREAD_MIN + 12345, dtype=np.float32)
    for bad, word in ((np.nan, "NaN"), (-np.inf, "Inf")):
        x[-7] = bad
        for out in (None, np.empty_like(x)):
            with pytest.raises(QuantLabError, match=f"'big' contains 1 {word}"):
                fake_quantize(x, 0.1, 0, parse_format("int8"), name="big", out=out)


def test_formats_onnxruntime_cannot_run_take_the_numpy_path_on_large_tensors():
    x = np.random.default_rng(13).standard_normal(quantize_module._ORT_MIN + 1).astype(np.float32)
    for name in ("int8_narrow", "int4", "uint7"):
        fmt = parse_format(name)
        assert not quantize_module._use_onnxruntime(x, fmt, None, None)
        scale, zero_point = qparams_from_range(-2.0, 2.0, fmt, symmetric=False)
        assert same_bits(fake_quantize(x, scale, zero_point, fmt), reference_fake_quantize(x, scale, zero_point, fmt))


@pytest.mark.parametrize("path", list(FAST_PATHS))
def test_out_receives_the_result_and_may_be_x_itself(path, monkeypatch):
    for constant, value in FAST_PATHS[path].items():
        monkeypatch.setattr(quantize_module, constant, value)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1024, 2048)).astype(np.float32)
    fmt = parse_format("int8")
    scale, zero_point = rng.uniform(0.01, 0.02, 1024).astype(np.float32), np.zeros(1024, np.int32)
    expected = reference_fake_quantize(x, scale[:, None], zero_point[:, None], fmt)
    out = np.empty_like(x)
    assert fake_quantize(x, scale, zero_point, fmt, axis=0, out=out) is out and same_bits(out, expected)
    assert fake_quantize(x, scale, zero_point, fmt, axis=0, out=x) is x and same_bits(x, expected)


def test_a_bad_out_is_refused():
    x = np.zeros((4, 4), dtype=np.float32)
    fmt = parse_format("int8")
    with pytest.raises(QuantLabError, match="float32 array of shape \\(4, 4\\)"):
        fake_quantize(x, 1.0, 0, fmt, out=np.zeros((4, 4)))
    with pytest.raises(QuantLabError, match="overlaps"):
        fake_quantize(x, 1.0, 0, fmt, out=x.reshape(4, 4))  # another view of x


def test_per_channel_equals_per_tensor_applied_channel_by_channel():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 5, 7)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None, None]
    for axis in (0, 1, 2):
        fmt, scale, zero_point = params_for(x, "uint8", False, "per_channel", axis)
        out = fake_quantize(x, scale, zero_point, fmt, axis=axis)
        for c in range(x.shape[axis]):
            channel = np.take(x, c, axis=axis)
            expected = fake_quantize(channel, scale[c], zero_point[c], fmt)
            assert same_bits(np.take(out, c, axis=axis), expected)


def test_per_group_equals_per_tensor_applied_block_by_block():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 70)).astype(np.float32)
    fmt, scale, zero_point = params_for(x, "int4", False, "per_group", axis=1, block_size=32)
    assert scale.shape == (3, 3)  # ceil(70 / 32) blocks, the last with 6 values
    out = fake_quantize(x, scale, zero_point, fmt, axis=1, block_size=32)
    for row in range(3):
        for block, start in enumerate(range(0, 70, 32)):
            part = slice(start, start + 32)
            expected = fake_quantize(x[row, part], scale[row, block], zero_point[row, block], fmt)
            assert same_bits(out[row, part], expected)


# --- tensor_range ------------------------------------------------------------------------------------

def test_tensor_range_per_tensor_channel_and_group():
    x = np.arange(24, dtype=np.float32).reshape(4, 6) - 10
    lo, hi = tensor_range(x, granularity="per_tensor")
    assert (lo, hi) == (-10, 13) and lo.shape == ()
    lo, hi = tensor_range(x, granularity="per_channel", axis=0)
    assert lo.tolist() == [-10, -4, 2, 8] and hi.tolist() == [-5, 1, 7, 13]
    lo, hi = tensor_range(x, granularity="per_channel", axis=-1)
    assert lo.tolist() == [-10, -9, -8, -7, -6, -5] and hi.tolist() == [8, 9, 10, 11, 12, 13]
    lo, hi = tensor_range(x, granularity="per_group", axis=1, block_size=4)  # blocks [0:4], [4:6]
    assert lo.shape == (4, 2)
    assert lo[:, 0].tolist() == [-10, -4, 2, 8] and hi[:, 1].tolist() == [-5, 1, 7, 13]


def test_tensor_range_without_an_axis_takes_the_bare_shape_natural_axes():
    pytest.importorskip("quant_core.numerics.axes")  # the natural-axis rules (quant_core/axes.py)
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert tensor_range(x, granularity="per_channel", axis=None)[0].tolist() == [0, 6, 12, 18]
    lo, _ = tensor_range(x, granularity="per_group", axis=None, block_size=4)  # along the last axis
    assert lo.tolist() == [[0, 4], [6, 10], [12, 16], [18, 22]]
    with pytest.raises(ConfigError, match="'conv.w'.*viewed as \\(2, 27\\)"):
        tensor_range(np.ones((2, 3, 3, 3)), granularity="per_group", axis=None, name="conv.w")


def test_per_channel_of_a_1d_tensor_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="'fc.bias'.*2 dimensions"):
        tensor_range(np.ones(5), granularity="per_channel", name="fc.bias")
    with pytest.raises(ConfigError, match="'fc.bias'"):
        quantize_tensor(np.ones(5), TensorQuant("int8", granularity="per_channel"), name="fc.bias")


def test_axis_out_of_range_is_a_config_error_naming_the_tensor():
    with pytest.raises(ConfigError, match="axis 2 is out of range for tensor 'conv.w'"):
        tensor_range(np.ones((3, 4)), granularity="per_channel", axis=2, name="conv.w")
    with pytest.raises(ConfigError, match="'conv.w'"):
        quantize_tensor(np.ones((3, 4)), TensorQuant("int4", granularity="per_group", axis=3), name="conv.w",
                        lo=np.zeros(1), hi=np.ones(1))


# --- NaN and Inf are refused, naming the tensor ------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_by_every_entry(bad):
    x = np.linspace(-1, 1, 50, dtype=np.float32).reshape(5, 10)
    x[3, 7] = bad
    fmt = parse_format("int8")
    calls = [
        lambda: tensor_range(x, granularity="per_tensor", name="layer3.weight"),
        lambda: tensor_range(x, granularity="per_channel", name="layer3.weight"),
        lambda: quantize(x, 0.01, 0, fmt, name="layer3.weight"),
        lambda: fake_quantize(x, 0.01, 0, fmt, name="layer3.weight"),
        lambda: fake_quantize(x, np.full(5, 0.01), np.zeros(5), fmt, axis=0, name="layer3.weight"),
    ]
    calls += [lambda f=f: quantize_tensor(x, TensorQuant(f), name="layer3.weight")
              for f in ["int8", "uint4", "fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "binary", "ternary",
                        "kmeans3"]]
    for call in calls:
        with pytest.raises(QuantLabError, match="'layer3.weight'"):
            call()


def test_huge_finite_values_are_clipped_not_refused():
    # x / scale overflows float32 to Inf here, yet x is finite: it saturates like QuantizeLinear.
    x = np.array([3e38, -3e38, 1.0], dtype=np.float32)
    fmt = parse_format("int8")
    assert quantize(x, 1e-3, 0, fmt).tolist() == [127, -128, 127]


def test_bad_parameters_get_a_clear_message():
    fmt = parse_format("int8")
    x = np.ones((4, 3), dtype=np.float32)
    with pytest.raises(QuantLabError, match="shape \\(4,\\)"):
        quantize(x, np.ones(3), np.zeros(3), fmt, axis=0)
    with pytest.raises(QuantLabError, match="> 0"):
        fake_quantize(x, 0.0, 0, fmt)
    with pytest.raises(QuantLabError, match="one scale"):
        fake_quantize(x, np.ones(4), np.zeros(4), fmt)
    with pytest.raises(QuantLabError, match="int/uint"):
        quantize(x, 1.0, 0, parse_format("fp16"))
    with pytest.raises(QuantLabError, match="empty"):
        quantize(np.zeros((0, 3)), 1.0, 0, fmt)


# --- degenerate ranges -------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [np.zeros((4, 8)), np.full((4, 8), 2.5), np.full((4, 8), -7.0),
                               np.full((4, 8), 1e-41), np.array([[1e-42, -3e-43] * 4] * 4)])
@pytest.mark.parametrize("name, symmetric", [("int8", True), ("uint8", False), ("int4", True), ("uint16", False)])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
def test_degenerate_ranges_give_valid_parameters_and_small_error(x, name, symmetric, granularity):
    x = x.astype(np.float32)
    tq = TensorQuant(name, symmetric=symmetric, granularity=granularity, axis=1, block_size=16)
    result = quantize_tensor(x, tq, name="constant")
    assert np.all(result.scale > 0) and np.all(np.isfinite(result.scale))
    assert np.all(np.isfinite(result.values))
    assert np.all(np.abs(result.values - x) <= half_step_bound(x, np.max(result.scale)))


# --- quantize_tensor: the one entry for every format -------------------------------------------------

def test_quantize_tensor_integer_records_its_parameters_and_codes():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    result = quantize_tensor(w, TensorQuant("int4", symmetric=True, granularity="per_channel"), name="w")
    assert isinstance(result, QuantizedTensor)
    assert result.scale.shape == result.zero_point.shape == (8,) and result.axis == 0
    assert result.codes.min() >= -8 and result.codes.max() <= 7
    assert same_bits(result.values, dequantize(result.codes, result.scale, result.zero_point, axis=0))
    assert same_bits(result.values, fake_quantize(w, result.scale, result.zero_point, result.fmt, axis=0))


def test_quantize_tensor_per_group_layout():
    w = np.random.default_rng(9).standard_normal((100, 6)).astype(np.float32)
    result = quantize_tensor(w, TensorQuant("int4", granularity="per_group", axis=0, block_size=32), name="w")
    assert result.scale.shape == (4, 6) and (result.axis, result.block_size) == (0, 32)


def test_quantize_tensor_without_an_axis_takes_the_bare_shape_natural_axes():
    # TensorQuant.axis=None is "the layer's natural axis"; knowing only the shape: output channels on
    # axis 0, groups along the rest of the weight flattened (a conv's I x kh x kw).
    pytest.importorskip("quant_core.numerics.axes")  # the natural-axis rules (quant_core/axes.py)
    w = np.random.default_rng(10).standard_normal((8, 3, 5, 5)).astype(np.float32)
    per_channel = quantize_tensor(w, TensorQuant("int8", granularity="per_channel", axis=None), name="conv.w")
    assert per_channel.scale.shape == (8,) and per_channel.axis == 0
    per_group = quantize_tensor(w, TensorQuant("int4", granularity="per_group", axis=None, block_size=32),
                                name="conv.w")
    assert per_group.values.shape == per_group.codes.shape == w.shape
    assert per_group.scale.shape == (8, 3) and (per_group.axis, per_group.block_size) == (1, 32)  # 75 = 32+32+11
    view = w.reshape(8, 75)
    explicit = quantize_tensor(view, TensorQuant("int4", granularity="per_group", axis=1, block_size=32), name="v")
    assert same_bits(per_group.values, explicit.values.reshape(w.shape))


def test_quantize_tensor_uses_the_callers_range():
    x = np.linspace(-4, 4, 81, dtype=np.float32)
    result = quantize_tensor(x, TensorQuant("int8", symmetric=True), name="x", lo=np.float32(-1), hi=np.float32(1))
    assert result.scale == np.float32(2 / 255)
    assert result.values.max() == np.float32(2 / 255) * 127  # everything above ~1 is clipped


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_quantize_tensor_half_formats_are_plain_casts(name):
    x = np.random.default_rng(10).standard_normal(1000).astype(np.float32)
    result = quantize_tensor(x, TensorQuant(name), name="x")
    assert same_bits(result.values, round_to_float_format(x, parse_format(name)))
    assert result.scale is None and result.codes is None


def test_quantize_tensor_fp32_is_the_identity():
    x = np.random.default_rng(11).standard_normal((3, 4)).astype(np.float32)
    result = quantize_tensor(x, TensorQuant("fp32"), name="x")
    assert same_bits(result.values, x) and result.values is not x


@pytest.mark.parametrize("name", ["int8", "uint4", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "binary", "ternary",
                                  "kmeans2", "fp32"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel", "per_group"])
def test_quantize_tensor_returns_float32_of_the_same_shape_for_every_format(name, granularity):
    w = np.random.default_rng(12).standard_normal((32, 20)).astype(np.float64)
    result = quantize_tensor(w, TensorQuant(name, granularity=granularity, block_size=16), name="w")
    assert result.values.dtype == np.float32 and result.values.shape == w.shape
    assert result.fmt == parse_format(name)
    assert np.all(np.isfinite(result.values))


@pytest.mark.parametrize("tq", [
    TensorQuant("int4", granularity="per_channel", axis=0),
    TensorQuant("uint8", symmetric=False),
    TensorQuant("int3", symmetric=False, granularity="per_channel", axis=1),
    TensorQuant("int8", granularity="per_group", axis=1, block_size=16),
    TensorQuant("int4", granularity="per_channel"),  # axis=None: the bare-shape natural axis
    TensorQuant("fp8_e4m3fn"), TensorQuant("ternary"), TensorQuant("bf16"),
])
def test_fake_quantize_tensor_gives_quantize_tensor_values_bit_for_bit(tq):
    x = np.random.default_rng(5).standard_normal((24, 40)).astype(np.float32)
    expected = quantize_tensor(x, tq).values
    got = fake_quantize_tensor(x, tq)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_fake_quantize_tensor_takes_the_callers_range():
    x = np.random.default_rng(6).standard_normal((8, 32)).astype(np.float32)
    tq = TensorQuant("int8", granularity="per_channel", axis=0)
    lo, hi = np.full(8, -0.5, np.float32), np.full(8, 0.5, np.float32)
    assert np.array_equal(fake_quantize_tensor(x, tq, lo=lo, hi=hi), quantize_tensor(x, tq, lo=lo, hi=hi).values)

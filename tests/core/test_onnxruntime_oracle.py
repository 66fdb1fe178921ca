"""Oracle: our quantize / dequantize / fake_quantize equal onnxruntime's QuantizeLinear / DequantizeLinear
bit for bit, on tiny onnx.helper graphs run in onnxruntime (CPUExecutionProvider), and our FP8 / FP16 /
BF16 rounding equals onnxruntime's and ONNX's own Cast."""
import zlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from quant_core.config import TensorQuant
from quant_core.numerics.floats import round_to_float_format
from quant_core.numerics.formats import parse_format
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import dequantize, fake_quantize, quantize, tensor_range
from quant_core.numerics.tensor import quantize_tensor

OPSET = 21  # int4 / uint4 and blocked (block_size) QuantizeLinear
IR_VERSION = 10
ELEMENT_TYPE = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int4": TensorProto.INT4,
                "uint4": TensorProto.UINT4, "int16": TensorProto.INT16, "uint16": TensorProto.UINT16}


def _session(model):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the ops as written
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnxruntime_qdq(x, scale, zero_point, name, axis=None, block_size=None):
    """Run QuantizeLinear -> DequantizeLinear in onnxruntime; return (codes as int32, dequantized float32)."""
    model = _qdq_model(name, axis, block_size, scale, zero_point)
    codes, y = _session(model).run(None, {"x": np.asarray(x, dtype=np.float32)})
    return codes, y


def _qdq_model(name, axis=None, block_size=None, scale=None, zero_point=None):
    attributes = {} if axis is None else {"axis": axis}
    if block_size is not None:
        attributes["block_size"] = block_size
    element = ELEMENT_TYPE[name]
    zero_point = np.asarray(zero_point)
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **attributes),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **attributes),
             helper.make_node("Cast", ["q"], ["codes"], to=TensorProto.INT32)]  # int4 has no numpy type
    initializers = [numpy_helper.from_array(np.asarray(scale, dtype=np.float32), "scale"),
                    helper.make_tensor("zero_point", element, list(zero_point.shape),
                                       zero_point.astype(np.int64).ravel().tolist())]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("codes", TensorProto.INT32, None),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a, np.float32).view(np.uint32),
                                                 np.asarray(b, np.float32).view(np.uint32))


def adversarial(scale, zero_point, fmt, size):
    """Ties at .5, values at and just beyond the range edges, huge and tiny magnitudes, signed zeros."""
    s, z = np.float32(scale), int(zero_point)
    steps = np.arange(fmt.qmin - z - 2, fmt.qmax - z + 3, dtype=np.float32)
    steps = np.resize(steps, size // 4)
    ties = (steps + np.float32(0.5)) * s
    near = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    edges = np.array([(fmt.qmin - z) * s, (fmt.qmax - z) * s, (fmt.qmin - z - 0.5) * s, (fmt.qmax - z + 0.5) * s],
                     dtype=np.float32)
    specials = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1e-30, -1e-30, 3e38, -3e38, 1e20, -1e20,
                         s / 2, -s / 2, s * 0.4999999, -s * 0.4999999], dtype=np.float32)
    out = np.concatenate([near, edges, np.nextafter(edges, np.float32(np.inf)),
                          np.nextafter(edges, np.float32(-np.inf)), specials])
    return np.resize(out, size).astype(np.float32)


CASES = [  # shape, axis (None = per-tensor), block_size
    ((4096,), None, None),
    ((24, 64), 0, None),
    ((24, 64), 1, None),
    ((6, 10, 8), 1, None),
    ((70, 12), 0, 32),  # blocked, the last block partial
    ((12, 70), 1, 16),
]


@pytest.mark.parametrize("name", list(ELEMENT_TYPE))
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("shape, axis, block_size", CASES)
def test_random_tensors_equal_onnxruntime(name, symmetric, shape, axis, block_size):
    fmt = parse_format(name)
    rng = np.random.default_rng(zlib.crc32(repr((name, symmetric, shape, axis)).encode()))
    x = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 4)).astype(np.float32)
    granularity = "per_tensor" if axis is None else ("per_channel" if block_size is None else "per_group")
    lo, hi = tensor_range(x, granularity=granularity, axis=axis or 0, block_size=block_size or 128)
    # A range a bit narrower than the data, so that clipping is exercised too.
    scale, zero_point = qparams_from_range(lo * 0.8, hi * 0.9, fmt, symmetric=symmetric)
    codes, y = onnxruntime_qdq(x, scale, zero_point, name, axis, block_size)
    q = quantize(x, scale, zero_point, fmt, axis=axis, block_size=block_size)
    assert np.array_equal(q, codes)
    assert same_bits(dequantize(q, scale, zero_point, axis=axis, block_size=block_size), y)
    assert same_bits(fake_quantize(x, scale, zero_point, fmt, axis=axis, block_size=block_size), y)


@pytest.mark.parametrize("name", list(ELEMENT_TYPE))
@pytest.mark.parametrize("scale", [0.1, 1 / 3, 0.0173, 2.0**-10, 7.3e-8, 123.456])
def test_adversarial_tensors_equal_onnxruntime_per_tensor(name, scale):
    fmt = parse_format(name)
    for zero_point in {fmt.qmin, (fmt.qmin + fmt.qmax + 1) // 2, fmt.qmax}:
        x = adversarial(scale, zero_point, fmt, 4000)
        codes, y = onnxruntime_qdq(x, np.float32(scale), np.asarray(zero_point), name)
        assert np.array_equal(quantize(x, scale, zero_point, fmt), codes)
        assert same_bits(fake_quantize(x, scale, zero_point, fmt), y)


@pytest.mark.parametrize("name", list(ELEMENT_TYPE))
def test_adversarial_tensors_equal_onnxruntime_per_channel(name):
    fmt = parse_format(name)
    scales = np.array([0.1, 1 / 3, 0.0173, 2.0**-10, 123.456], dtype=np.float32)
    zero_points = np.array([fmt.qmin, fmt.qmax, (fmt.qmin + fmt.qmax) // 2, fmt.qmin + 1, fmt.qmax - 1])
    x = np.stack([adversarial(s, z, fmt, 2000) for s, z in zip(scales, zero_points)])
    codes, y = onnxruntime_qdq(x, scales, zero_points, name, axis=0)
    assert np.array_equal(quantize(x, scales, zero_points, fmt, axis=0), codes)
    assert same_bits(fake_quantize(x, scales, zero_points, fmt, axis=0), y)
    x_t = x.T.copy()
    if fmt.bits == 4:  # see test_onnxruntime_4bit_scalar_tail_wraps_huge_values_and_we_saturate
        x_t = np.where(np.abs(x_t) < 2.0**31 * scales, x_t, np.float32(0))
    codes, y = onnxruntime_qdq(x_t, scales, zero_points, name, axis=1)
    assert np.array_equal(quantize(x_t, scales, zero_points, fmt, axis=1), codes)
    assert same_bits(fake_quantize(x_t, scales, zero_points, fmt, axis=1), y)


@pytest.mark.parametrize("name", ["int4", "uint4"])
def test_onnxruntime_4bit_scalar_tail_wraps_huge_values_and_we_saturate(name):
    # Known onnxruntime (1.31) discrepancy, and the one place we do not follow it: its 4-bit
    # QuantizeLinear quantizes an unpaired element (the last one of an odd-length run, e.g. every
    # element when the per-axis inner size is 1) with a float -> int32 conversion before clamping, so
    # |x / scale| >= 2^31 wraps to qmin instead of saturating. The ONNX spec says saturate, and
    # onnxruntime does on paired elements and for 8/16-bit types; so do we.
    fmt = parse_format(name)
    x = np.array([1e20, 1e20, 1e20], dtype=np.float32)
    ours = quantize(x, 0.1, 0 if fmt.qmin < 0 else 8, fmt)
    assert ours.tolist() == [fmt.qmax] * 3
    codes, _ = onnxruntime_qdq(x, np.float32(0.1), np.asarray(0 if fmt.qmin < 0 else 8), name)
    assert codes.tolist() == [fmt.qmax, fmt.qmax, fmt.qmin]


def test_onnxruntime_divides_by_the_scale_rather_than_multiplying_by_its_reciprocal():
    # For these x, next to ties, rint(x / scale) and rint(x * (1 / scale)) differ: ORT divides, and so do we.
    scale = np.float32(0.1)
    ties = ((np.arange(-3000, 3000, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.float32)
    candidates = np.concatenate([np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))])
    by_division = np.rint(candidates / scale)
    by_reciprocal = np.rint(candidates * (np.float32(1) / scale))
    x = candidates[by_division != by_reciprocal]
    assert x.size > 10
    codes, _ = onnxruntime_qdq(x, scale, np.asarray(0), "int16")
    assert np.array_equal(codes, by_division[by_division != by_reciprocal])
    assert np.array_equal(quantize(x, scale, 0, parse_format("int16")), codes)


# --- float formats -----------------------------------------------------------------------------------

CAST_TARGET = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16,
               "fp8_e4m3fn": TensorProto.FLOAT8E4M3FN, "fp8_e5m2": TensorProto.FLOAT8E5M2}


def cast_round_trip_model(name, saturate=True):
    attributes = {"saturate": int(saturate)} if name.startswith("fp8") else {}
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=CAST_TARGET[name], **attributes),
             helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def float_probe(name):
    """Every value of the format, the midpoints between neighbours (ties) and their float32 neighbours,
    plus values beyond the largest finite one and random float32 values of all magnitudes."""
    if name == "fp16":
        grid = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    elif name == "bf16":
        grid = (np.arange(2**16, dtype=np.uint32) << 16).view(np.float32)
    else:
        import ml_dtypes
        dtype = ml_dtypes.float8_e4m3fn if name == "fp8_e4m3fn" else ml_dtypes.float8_e5m2
        grid = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    grid = np.unique(grid[np.isfinite(grid)])
    ties = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32)
    top = np.float64(grid[-1])
    beyond = np.minimum(np.array([top * 1.01, top * 1.5, top * 2.0, 3e38]), np.finfo(np.float32).max).astype(np.float32)
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([grid, ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(0)),
                             beyond, -beyond, random_bits[np.isfinite(random_bits)]])
    return values.astype(np.float32)


@pytest.mark.parametrize("name", list(CAST_TARGET))
def test_float_rounding_equals_onnxruntime_cast_with_saturation(name):
    x = float_probe(name)
    fmt = parse_format(name)
    if name.startswith("fp8"):
        expected = _session(cast_round_trip_model(name)).run(None, {"x": x})[0]
        assert same_bits(round_to_float_format(x, fmt), expected)
    else:  # FP16 / BF16 casts overflow to Inf: compare with saturate=False
        expected = _session(cast_round_trip_model(name)).run(None, {"x": x})[0]
        with np.errstate(over="ignore"):
            assert same_bits(round_to_float_format(x, fmt, saturate=False), expected)


@pytest.mark.parametrize("name", list(CAST_TARGET))
def test_float_rounding_equals_the_onnx_reference_implementation(name):
    x = float_probe(name)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = ReferenceEvaluator(cast_round_trip_model(name)).run(None, {"x": x})[0]
        ours = round_to_float_format(x, parse_format(name), saturate=name.startswith("fp8"))
    assert same_bits(ours, expected.astype(np.float32))


@pytest.mark.parametrize("name", ["fp8_e4m3fn", "fp8_e5m2"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_scaled_fp8_equals_onnxruntime_quantize_dequantize_linear(name, granularity):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((16, 40)) * rng.uniform(1e-3, 10, (16, 1))).astype(np.float32)
    result = quantize_tensor(w, TensorQuant(name, granularity=granularity), name="w")
    axis = None if granularity == "per_tensor" else 0
    attributes = {} if axis is None else {"axis": axis}
    channels = 1 if axis is None else 16
    zero_point = helper.make_tensor("zero_point", CAST_TARGET[name], [] if axis is None else [channels],
                                    [0.0] * channels)
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **attributes),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **attributes)]
    graph = helper.make_graph(nodes, "fp8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(result.scale.astype(np.float32), "scale"),
                                           zero_point])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    expected = _session(model).run(None, {"x": w})[0]
    assert same_bits(result.values, expected)

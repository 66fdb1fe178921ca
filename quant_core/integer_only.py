"""Integer-only inference: which nodes of an exported model still compute in float, and fixed-point
requantization (an integer multiplier and a right shift, Jacob et al. 2018) in place of float scales.

A proof system (zkML) can prove integer arithmetic at a sensible cost, not float arithmetic. The check
runs onnxruntime's own graph optimizations (level EXTENDED: the QDQ fusions into QLinearConv / QGemm /
QLinearMatMul, hardware-independent) on the exported model, reads the optimized graph back, gives every
tensor an element type and sorts each node into one of:

| kind | meaning |
|---|---|
| integer | computes on integer tensors (its float inputs are constant scales: a fixed-point multiplier can replace them) |
| data movement | only moves values (Reshape, Flatten, Transpose, MaxPool...: exact in any type) |
| boundary | quantizes a model input or dequantizes into a model output: done outside the proof |
| float | computes in float: the model is not integer-only |

`run_integer_only` then executes a model made of QuantizeLinear, QLinearConv, QLinearMatMul, QGemm,
MaxPool and reshapes in numpy with int64 accumulators and fixed-point requantization only, so its
accuracy can be compared with onnxruntime's float-scaled requantization.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
# Ops that only move or select values: exact in any element type, no arithmetic to prove.
DATA_MOVEMENT = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat",
                           "Slice", "Gather", "Split", "Expand", "Tile", "Shape", "Size", "MaxPool",
                           "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Pad", "ReorderInput",
                           "ReorderOutput"})
# Integer ops whose float inputs are constant scales (the requantization a fixed-point multiplier replaces).
SCALED_INTEGER_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
                                "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                                "QLinearLeakyRelu", "QLinearSigmoid", "QLinearReduceMean", "MatMulInteger",
                                "ConvInteger", "QuantizeLinear", "DequantizeLinear"})
_INT32_OUTPUT = frozenset({"MatMulInteger", "ConvInteger"})


class NodeKind(StrEnum):
    INTEGER = "integer"
    DATA_MOVEMENT = "data movement"
    BOUNDARY = "boundary"
    FLOAT = "float"


@dataclass(frozen=True)
class NodeVerdict:
    """One node of the optimized graph: its op, name and what kind of arithmetic it does."""

    name: str
    op_type: str
    kind: NodeKind
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.name, "op_type": self.op_type, "kind": self.kind.value, "reason": self.reason}


@dataclass(frozen=True)
class IntegerOnlyReport:
    """The verdict on a model: integer-only when no node computes in float."""

    nodes: tuple[NodeVerdict, ...]

    @property
    def float_nodes(self) -> tuple[NodeVerdict, ...]:
        return tuple(node for node in self.nodes if node.kind == NodeKind.FLOAT)

    @property
    def integer_only(self) -> bool:
        return not self.float_nodes

    def to_dict(self) -> dict:
        return {"integer_only": self.integer_only, "float_nodes": [n.to_dict() for n in self.float_nodes],
                "nodes": [n.to_dict() for n in self.nodes]}


def optimized_model(model: onnx.ModelProto | bytes) -> onnx.ModelProto:
    """Return the graph onnxruntime runs after its hardware-independent optimizations (level EXTENDED).

    Written by onnxruntime to a temporary file (SessionOptions.optimized_model_filepath), read back,
    and removed.
    """
    data = model if isinstance(model, bytes) else model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="quantlab-optimized-") as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type: graph inputs, initializers, inferred value infos, then op rules."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        for name, value in zip(node.output, _output_types(node, types)):
            if name and value:
                types.setdefault(name, value)
    return types


def _output_types(node: onnx.NodeProto, types: Mapping[str, int]) -> list[int]:
    first = types.get(node.input[0], 0) if node.input else 0
    if node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"):
        zero_point = types.get(node.input[2], TensorProto.UINT8) if len(node.input) > 2 else TensorProto.UINT8
        return [zero_point, TensorProto.FLOAT, zero_point]
    if node.op_type == "DequantizeLinear":
        return [types.get(node.input[1], TensorProto.FLOAT)]
    if node.op_type == "QGemm":  # no output scale: the node writes float
        return [types.get(node.input[8], first) if len(node.input) > 8 and node.input[8] else TensorProto.FLOAT]
    if node.op_type in _INT32_OUTPUT:
        return [TensorProto.INT32]
    if node.op_type == "Cast":
        return [helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))]
    if node.op_type in ("Shape", "Size", "ArgMax", "ArgMin", "NonZero"):
        return [TensorProto.INT64]
    return [first] * len(node.output)


def check_integer_only(model: onnx.ModelProto | bytes, *, optimize: bool = True) -> IntegerOnlyReport:
    """Sort every node of the (optimized) model into integer / data movement / boundary / float."""
    graph = optimized_model(model) if optimize else (model if isinstance(model, onnx.ModelProto)
                                                     else onnx.load_from_string(model))
    types = element_types(graph)
    constants = {init.name for init in graph.graph.initializer}
    inputs = _moved_inputs(graph.graph)
    outputs = {v.name for v in graph.graph.output}
    verdicts = []
    for index, node in enumerate(graph.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        dynamic_in = [n for n in node.input if n and n not in constants]
        float_in = [n for n in dynamic_in if types.get(n) in _FLOAT_TYPES]
        float_out = [n for n in node.output if n and types.get(n) in _FLOAT_TYPES]
        verdicts.append(NodeVerdict(name, node.op_type, *_classify(node, float_in, float_out, inputs, outputs)))
    return IntegerOnlyReport(tuple(verdicts))


def _moved_inputs(graph: onnx.GraphProto) -> set[str]:
    """The model inputs and the tensors made from them by data movement only (a Flatten of the image...)."""
    found = {v.name for v in graph.input}
    for node in graph.node:
        if node.op_type in DATA_MOVEMENT and node.input and node.input[0] in found:
            found.update(node.output)
    return found


def _classify(node, float_in, float_out, inputs, outputs) -> tuple[NodeKind, str]:
    if node.op_type in DATA_MOVEMENT:
        return NodeKind.DATA_MOVEMENT, "moves values only"
    if not float_in and not float_out:
        scaled = node.op_type in SCALED_INTEGER_OPS
        return NodeKind.INTEGER, "integer tensors" + (" (constant scales: fixed-point multiplier)" if scaled else "")
    if node.op_type in ("QuantizeLinear",) and not float_out and set(float_in) <= inputs:
        return NodeKind.BOUNDARY, "quantizes a model input"
    if not float_in and float_out and set(float_out) <= outputs and node.op_type in SCALED_INTEGER_OPS:
        return NodeKind.BOUNDARY, "dequantizes its integer result into a model output"
    tensors = ", ".join(float_in + [n for n in float_out if n not in float_in])
    return NodeKind.FLOAT, f"float tensor(s): {tensors}"


# -- fixed-point requantization (gemmlowp / TFLite) --------------------------------------------------------

def fixed_point_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Return `(multiplier, shift)` with real ≈ multiplier · 2^(-31 - shift), multiplier in [2^30, 2^31).

    real = f · 2^e with f in [0.5, 1): multiplier = round(f · 2^31), shift = -e (a right shift when the
    real multiplier is below 0.5). A real of 0 gives (0, 0).
    """
    real = np.asarray(real, dtype=np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError("requantization multipliers must be finite and non-negative")
    fraction, exponent = np.frexp(real)
    multiplier = np.rint(fraction * 2.0**31).astype(np.int64)
    carry = multiplier == 2**31  # f rounded up to 1.0
    multiplier = np.where(carry, multiplier // 2, multiplier)
    exponent = np.where(carry, exponent + 1, exponent)
    zero = real == 0
    return np.where(zero, 0, multiplier), np.where(zero, 0, -exponent).astype(np.int64)


def _divide_toward_zero(x: np.ndarray, divisor: int) -> np.ndarray:
    return np.where(x >= 0, x // divisor, -((-x) // divisor))


def requantize(accumulator: np.ndarray, multiplier, shift, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Integer-only requantization: q = clip(zero_point + RDBPOT(SRDHM(acc, multiplier), shift), qmin, qmax).

    SRDHM is gemmlowp's SaturatingRoundingDoublingHighMul ((acc · multiplier + nudge) / 2^31 truncated:
    ties round up); RDBPOT its RoundingDivideByPOT (a right shift rounding ties away from zero).
    A negative shift (real multiplier ≥ 1) is a left shift first. Integers only, int64 intermediates.
    """
    acc = np.asarray(accumulator, dtype=np.int64)
    multiplier, shift = np.asarray(multiplier, dtype=np.int64), np.asarray(shift, dtype=np.int64)
    acc = acc << np.maximum(-shift, 0)
    product = acc * multiplier
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = _divide_toward_zero(product + nudge, 1 << 31)
    right = np.maximum(shift, 0)
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    scaled = (high >> right) + (remainder > threshold)
    return np.clip(scaled + np.asarray(zero_point, dtype=np.int64), qmin, qmax)


def requantize_float(accumulator: np.ndarray, real, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """onnxruntime's requantization: round-half-even of acc · real in float32, plus the zero point, clipped."""
    scaled = np.rint(np.asarray(accumulator, dtype=np.float32) * np.asarray(real, dtype=np.float32))
    return np.clip(scaled.astype(np.int64) + np.asarray(zero_point, dtype=np.int64), qmin, qmax)


# -- integer-only execution ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerRequantization:
    """One integer layer: its fixed-point multipliers and what they change against float scales."""

    layer: str
    op_type: str
    max_multiplier_error: float  # max |M_fixed - M| / M over output channels
    changed_fraction: float  # share of output codes that differ from the float-scaled requantization
    max_code_change: int
    sqnr_db: float  # fixed-point codes against float-scaled codes (inf: identical)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "op_type": self.op_type, "max_multiplier_error": self.max_multiplier_error,
                "changed_fraction": self.changed_fraction, "max_code_change": self.max_code_change,
                "sqnr_db": self.sqnr_db}


@dataclass(frozen=True)
class IntegerRun:
    """The outputs of an integer-only execution and each layer's requantization error."""

    outputs: dict[str, np.ndarray]
    layers: tuple[LayerRequantization, ...]


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def run_integer_only(model: onnx.ModelProto | bytes, feeds: Mapping[str, np.ndarray], *, fixed_point: bool = True,
                     optimize: bool = True) -> IntegerRun:
    """Execute an exported model's optimized graph in numpy, integers only inside (fixed_point=True).

    Supported: QuantizeLinear of a model input, QLinearConv (group 1), QLinearMatMul, QGemm (a QGemm
    without output scale dequantizes into a model output), MaxPool without padding, Flatten, Reshape,
    DequantizeLinear into an output. Anything else is refused with the op named. fixed_point=False uses
    float-scaled requantization (onnxruntime's), for comparison.
    """
    graph = (optimized_model(model) if optimize else model).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    values: dict[str, np.ndarray] = {**constants, **{k: np.asarray(v) for k, v in feeds.items()}}
    layers = []
    for node in graph.node:
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            raise ModelError(f"integer-only execution does not support {node.op_type} (node {node.name})")
        result = handler(node, values, fixed_point)
        if isinstance(result, tuple):
            result, layer = result
            if layer is not None:
                layers.append(layer)
        values[node.output[0]] = result
    return IntegerRun({v.name: values[v.name] for v in graph.output}, tuple(layers))


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _quantize_linear(node, values, fixed_point):
    x, scale = values[node.input[0]], values[node.input[1]]
    zero_point = values[node.input[2]] if len(node.input) > 2 else np.uint8(0)
    q = np.rint(x.astype(np.float32) / scale) + zero_point.astype(np.float32)  # the boundary: input encoding
    return np.clip(q, *_limits(zero_point.dtype)).astype(zero_point.dtype)


def _dequantize_linear(node, values, fixed_point):
    q, scale = values[node.input[0]], values[node.input[1]]
    zero_point = values[node.input[2]] if len(node.input) > 2 else np.zeros((), q.dtype)
    axis = _attributes(node).get("axis", 1)
    if np.ndim(scale) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q.astype(np.int64) - zero_point.astype(np.int64)) * scale).astype(np.float32)


def _requantize_layer(node, accumulator, real, out_zero_point, fixed_point, channel_axis):
    qmin, qmax = _limits(out_zero_point.dtype)
    shape = [1] * accumulator.ndim
    shape[channel_axis] = -1
    real = np.broadcast_to(np.asarray(real, dtype=np.float64), (accumulator.shape[channel_axis],)).reshape(shape)
    multiplier, shift = fixed_point_multiplier(real)
    fixed = requantize(accumulator, multiplier, shift, out_zero_point, qmin, qmax)
    floated = requantize_float(accumulator, real, out_zero_point, qmin, qmax)
    approx = multiplier.astype(np.float64) * 2.0 ** (-31 - shift.astype(np.float64))
    error = float(np.max(np.abs(approx - real) / np.where(real > 0, real, 1)))
    diff = fixed - floated
    signal = float(np.sum((floated - out_zero_point.astype(np.int64)).astype(np.float64) ** 2))
    noise = float(np.sum(diff.astype(np.float64) ** 2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
    layer = LayerRequantization(node.name, node.op_type, error, float(np.mean(diff != 0)),
                                int(np.max(np.abs(diff))) if diff.size else 0, sqnr)
    return (fixed if fixed_point else floated).astype(out_zero_point.dtype), layer


def _centered(values, name_q, name_zp, axis_shape=None):
    q = values[name_q].astype(np.int64)
    zero_point = values[name_zp].astype(np.int64) if name_zp else np.zeros((), np.int64)
    if axis_shape is not None and zero_point.ndim == 1:
        zero_point = zero_point.reshape(axis_shape)
    return q - zero_point


def _qgemm(node, values, fixed_point):
    attrs = _attributes(node)
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
        raise ModelError(f"integer-only execution supports QGemm with transA=0 and alpha=1 (node {node.name})")
    a = _centered(values, node.input[0], node.input[2])
    b_q, b_zp = values[node.input[3]].astype(np.int64), values[node.input[5]].astype(np.int64)
    trans_b = attrs.get("transB", 0)
    b = b_q - (b_zp.reshape(-1, 1) if trans_b and b_zp.ndim == 1 else b_zp)
    b = b.T if trans_b else b
    accumulator = a @ b
    if len(node.input) > 6 and node.input[6]:
        accumulator = accumulator + values[node.input[6]].astype(np.int64)
    real_in = values[node.input[1]].astype(np.float64) * values[node.input[4]].astype(np.float64)
    if len(node.input) > 7 and node.input[7]:
        real = values[node.input[1]] * values[node.input[4]] / values[node.input[7]]  # float32
        return _requantize_layer(node, accumulator, real, values[node.input[8]], fixed_point, 1)
    # No output scale: the integer accumulator is dequantized into a model output (the boundary).
    return (accumulator * real_in).astype(np.float32), None


def _qlinear_matmul(node, values, fixed_point):
    a = _centered(values, node.input[0], node.input[2])
    b_zp = values[node.input[5]].astype(np.int64)
    b = values[node.input[3]].astype(np.int64) - (b_zp if b_zp.ndim == 0 else b_zp.reshape(1, -1))
    real = values[node.input[1]] * values[node.input[4]] / values[node.input[6]]  # float32, as onnxruntime
    return _requantize_layer(node, a @ b, real, values[node.input[7]], fixed_point, -1)


def _qlinear_conv(node, values, fixed_point):
    attrs = _attributes(node)
    if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise ModelError(f"integer-only execution supports QLinearConv with group 1, no dilation (node {node.name})")
    x_q, x_zp = values[node.input[0]], values[node.input[2]]
    w = _centered(values, node.input[3], node.input[5], (-1, 1, 1, 1))
    kh, kw = w.shape[2:]
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    padded = np.pad(x_q.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)),
                    constant_values=int(x_zp)) - int(x_zp)
    sh, sw = attrs.get("strides", [1, 1])
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    accumulator = np.einsum("nchwij,ocij->nohw", windows, w, optimize=True)
    if len(node.input) > 8 and node.input[8]:
        accumulator = accumulator + values[node.input[8]].astype(np.int64).reshape(1, -1, 1, 1)
    real = values[node.input[1]] * values[node.input[4]] / values[node.input[6]]  # float32, as onnxruntime
    return _requantize_layer(node, accumulator, real, values[node.input[7]], fixed_point, 1)


def _max_pool(node, values, fixed_point):
    attrs = _attributes(node)
    if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("ceil_mode", 0):
        raise ModelError(f"integer-only execution supports MaxPool without padding (node {node.name})")
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", [1, 1])
    x = values[node.input[0]]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return windows.max(axis=(-2, -1))


def _flatten(node, values, fixed_point):
    x = values[node.input[0]]
    axis = _attributes(node).get("axis", 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(node, values, fixed_point):
    x, shape = values[node.input[0]], values[node.input[1]].astype(np.int64)
    shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
    return x.reshape(shape)


_HANDLERS = {"QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear, "QGemm": _qgemm,
             "QLinearMatMul": _qlinear_matmul, "QLinearConv": _qlinear_conv, "MaxPool": _max_pool,
             "Flatten": _flatten, "Reshape": _reshape}

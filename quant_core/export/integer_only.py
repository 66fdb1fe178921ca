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

from quant_core.errors import ModelError

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

def fixed_point_multiplier(real: np.ndarray | float, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Return `(multiplier, shift)` with real ≈ multiplier · 2^(-bits - shift), multiplier in [2^(bits-1), 2^bits).

    real = f · 2^e with f in [0.5, 1): multiplier = round(f · 2^bits), shift = -e (a right shift when the
    real multiplier is below 0.5). A real of 0 gives (0, 0). With bits = 31 (int32 multipliers) a float32
    scale (24-bit mantissa) is represented exactly; fewer bits (a proof system's narrower field
    elements) round it, relative error ≤ 2^-bits.
    """
    if not 2 <= bits <= 31:
        raise ValueError(f"multiplier bits must be between 2 and 31, got {bits}")
    real = np.asarray(real, dtype=np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError("requantization multipliers must be finite and non-negative")
    fraction, exponent = np.frexp(real)
    multiplier = np.rint(fraction * 2.0**bits).astype(np.int64)
    carry = multiplier == 2**bits  # f rounded up to 1.0
    multiplier = np.where(carry, multiplier // 2, multiplier)
    exponent = np.where(carry, exponent + 1, exponent)
    zero = real == 0
    return np.where(zero, 0, multiplier), np.where(zero, 0, -exponent).astype(np.int64)


def _divide_toward_zero(x: np.ndarray, divisor: int) -> np.ndarray:
    return np.where(x >= 0, x // divisor, -((-x) // divisor))


class Rounding(StrEnum):
    SINGLE = "single"  # one rounding: (acc · multiplier + 2^(t-1)) >> t, t = 31 + shift (TFLite's single rounding)
    GEMMLOWP = "gemmlowp"  # gemmlowp's two roundings: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT


def requantize(accumulator: np.ndarray, multiplier, shift, zero_point, qmin: int, qmax: int, *,
               rounding: Rounding | str = Rounding.SINGLE, bits: int = 31) -> np.ndarray:
    """Integer-only requantization of int32 accumulators to `[qmin, qmax]` codes, int64 intermediates.

    single:   q = clip(zero_point + ((acc · multiplier + 2^(t-1)) >> t), qmin, qmax), t = bits + shift:
              acc · real rounded once, ties up (toward +inf).
    gemmlowp: SRDHM(acc, multiplier) = (acc · multiplier + nudge) / 2^31 truncated (ties up), then
              RDBPOT by `shift` (ties away from zero); 31-bit multipliers only. Two roundings: a value just under a tie after
              the first can round up after the second (64.498 -> 129 / 2 = 64.5 -> 65).
    A negative shift (real multiplier ≥ 1) multiplies by 2^-shift first.
    """
    acc = np.asarray(accumulator, dtype=np.int64)
    multiplier, shift = np.asarray(multiplier, dtype=np.int64), np.asarray(shift, dtype=np.int64)
    if Rounding(rounding) == Rounding.SINGLE:
        total = bits + shift
        scaled = (acc * multiplier + (np.int64(1) << (total - 1))) >> total
        return np.clip(scaled + np.asarray(zero_point, dtype=np.int64), qmin, qmax)
    if bits != 31:
        raise ValueError("gemmlowp rounding needs 31-bit multipliers")
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
    gemmlowp_changed_fraction: float = 0.0  # the same with gemmlowp's two roundings

    def to_dict(self) -> dict:
        return {"layer": self.layer, "op_type": self.op_type, "max_multiplier_error": self.max_multiplier_error,
                "changed_fraction": self.changed_fraction, "max_code_change": self.max_code_change,
                "sqnr_db": self.sqnr_db, "gemmlowp_changed_fraction": self.gemmlowp_changed_fraction}


@dataclass(frozen=True)
class IntegerRun:
    """The outputs of an integer-only execution and each layer's requantization error."""

    outputs: dict[str, np.ndarray]
    layers: tuple[LayerRequantization, ...]


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def run_integer_only(model: onnx.ModelProto | bytes, feeds: Mapping[str, np.ndarray], *, fixed_point: bool = True,
                     multiplier_bits: int = 31, optimize: bool = True) -> IntegerRun:
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
        result = handler(node, values, multiplier_bits if fixed_point else 0)
        if isinstance(result, tuple):
            result, layer = result
            if layer is not None:
                layers.append(layer)
        values[node.output[0]] = result
    return IntegerRun({v.name: values[v.name] for v in graph.output}, tuple(layers))


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _quantize_linear(node, values, bits):
    x, scale = values[node.input[0]], values[node.input[1]]
    zero_point = values[node.input[2]] if len(node.input) > 2 else np.uint8(0)
    q = np.rint(x.astype(np.float32) / scale) + zero_point.astype(np.float32)  # the boundary: input encoding
    return np.clip(q, *_limits(zero_point.dtype)).astype(zero_point.dtype)


def _dequantize_linear(node, values, bits):
    q, scale = values[node.input[0]], values[node.input[1]]
    zero_point = values[node.input[2]] if len(node.input) > 2 else np.zeros((), q.dtype)
    axis = _attributes(node).get("axis", 1)
    if np.ndim(scale) == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((q.astype(np.int64) - zero_point.astype(np.int64)) * scale).astype(np.float32)


def _requantize_layer(node, accumulator, real, out_zero_point, bits, channel_axis):
    """Requantize with a `bits`-bit fixed-point multiplier (0: float scales, onnxruntime's way) and measure
    what the fixed-point form changes against float scales."""
    qmin, qmax = _limits(out_zero_point.dtype)
    shape = [1] * accumulator.ndim
    shape[channel_axis] = -1
    real = np.broadcast_to(np.asarray(real, dtype=np.float64), (accumulator.shape[channel_axis],)).reshape(shape)
    multiplier, shift = fixed_point_multiplier(real, bits or 31)
    fixed = requantize(accumulator, multiplier, shift, out_zero_point, qmin, qmax, bits=bits or 31)
    multiplier31, shift31 = fixed_point_multiplier(real)
    double = requantize(accumulator, multiplier31, shift31, out_zero_point, qmin, qmax, rounding=Rounding.GEMMLOWP)
    floated = requantize_float(accumulator, real, out_zero_point, qmin, qmax)
    approx = multiplier.astype(np.float64) * 2.0 ** (-(bits or 31) - shift.astype(np.float64))
    error = float(np.max(np.abs(approx - real) / np.where(real > 0, real, 1)))
    diff = fixed - floated
    signal = float(np.sum((floated - out_zero_point.astype(np.int64)).astype(np.float64) ** 2))
    noise = float(np.sum(diff.astype(np.float64) ** 2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)
    layer = LayerRequantization(node.name, node.op_type, error, float(np.mean(diff != 0)),
                                int(np.max(np.abs(diff))) if diff.size else 0, sqnr,
                                float(np.mean(double != floated)))
    return (fixed if bits else floated).astype(out_zero_point.dtype), layer


def _centered(values, name_q, name_zp, axis_shape=None):
    q = values[name_q].astype(np.int64)
    zero_point = values[name_zp].astype(np.int64) if name_zp else np.zeros((), np.int64)
    if axis_shape is not None and zero_point.ndim == 1:
        zero_point = zero_point.reshape(axis_shape)
    return q - zero_point


def _qgemm(node, values, bits):
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
        return _requantize_layer(node, accumulator, real, values[node.input[8]], bits, 1)
    # No output scale: the integer accumulator is dequantized into a model output (the boundary).
    return (accumulator * real_in).astype(np.float32), None


def _qlinear_matmul(node, values, bits):
    a = _centered(values, node.input[0], node.input[2])
    b_zp = values[node.input[5]].astype(np.int64)
    b = values[node.input[3]].astype(np.int64) - (b_zp if b_zp.ndim == 0 else b_zp.reshape(1, -1))
    real = values[node.input[1]] * values[node.input[4]] / values[node.input[6]]  # float32, as onnxruntime
    return _requantize_layer(node, a @ b, real, values[node.input[7]], bits, -1)


def _qlinear_conv(node, values, bits):
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
    return _requantize_layer(node, accumulator, real, values[node.input[7]], bits, 1)


def _max_pool(node, values, bits):
    attrs = _attributes(node)
    if any(attrs.get("pads", [0, 0, 0, 0])) or attrs.get("ceil_mode", 0):
        raise ModelError(f"integer-only execution supports MaxPool without padding (node {node.name})")
    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", [1, 1])
    x = values[node.input[0]]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    return windows.max(axis=(-2, -1))


def _flatten(node, values, bits):
    x = values[node.input[0]]
    axis = _attributes(node).get("axis", 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(node, values, bits):
    x, shape = values[node.input[0]], values[node.input[1]].astype(np.int64)
    shape = [x.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
    return x.reshape(shape)


_HANDLERS = {"QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear, "QGemm": _qgemm,
             "QLinearMatMul": _qlinear_matmul, "QLinearConv": _qlinear_conv, "MaxPool": _max_pool,
             "Flatten": _flatten, "Reshape": _reshape}


# -- integer-only export ------------------------------------------------------------------------------

class _Builder:
    """Collects the nodes and initializers of the integer-only graph, with unique names."""

    def __init__(self, graph: onnx.GraphProto, bits: int = 31):
        self.bits = bits
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = list(graph.initializer)
        self.values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self._count = 0

    def constant(self, prefix: str, array: np.ndarray) -> str:
        self._count += 1
        name = f"{prefix}/c{self._count}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], prefix: str, output: str | None = None, **attributes) -> str:
        self._count += 1
        name = output or f"{prefix}/{op_type}_{self._count}_output"
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=f"{prefix}/{op_type}_{self._count}",
                                           **attributes))
        return name


def _requantize_nodes(b: _Builder, prefix: str, accumulator: str, real: np.ndarray, zero_point: np.ndarray,
                      output: str, shape: tuple[int, ...]) -> None:
    """acc int32 -> the single-rounding requantization (`requantize`) in ONNX integer ops -> `output`."""
    multiplier, shift = fixed_point_multiplier(np.asarray(real, dtype=np.float64).reshape(-1), b.bits)
    if np.any(b.bits + shift < 1):
        raise ModelError(f"{prefix}: a requantization multiplier of 2^{b.bits - 1} or more has no right shift")
    # (acc · multiplier + 2^(t-1)) >> t, t = bits + shift: a floor division, written y - Mod(y, 2^t) over 2^t
    # (ONNX integer Div truncates toward zero; Mod with fmod=0 takes the divisor's sign).
    total = b.bits + shift
    x = b.node("Cast", [accumulator], prefix, to=TensorProto.INT64)
    product = b.node("Mul", [x, b.constant(prefix, multiplier.astype(np.int64).reshape(shape))], prefix)
    y = b.node("Add", [product, b.constant(prefix, (np.int64(1) << (total - 1)).reshape(shape))], prefix)
    divisor = b.constant(prefix, (np.int64(1) << total).reshape(shape))
    scaled = b.node("Div", [b.node("Sub", [y, b.node("Mod", [y, divisor], prefix)], prefix), divisor], prefix)
    qmin, qmax = _limits(zero_point.dtype)
    shifted = b.node("Add", [scaled, b.constant(prefix, zero_point.astype(np.int64))], prefix)
    clipped = b.node("Min", [b.node("Max", [shifted, b.constant(prefix, np.int64(qmin))], prefix),
                             b.constant(prefix, np.int64(qmax))], prefix)
    to = helper.np_dtype_to_tensor_dtype(zero_point.dtype)
    b.node("Cast", [clipped], prefix, output=output, to=to)


def _scalar_zero_point(b: _Builder, name: str, node) -> str:
    values = b.values[name]
    if values.ndim and not np.all(values == values.reshape(-1)[0]):
        raise ModelError(f"integer-only export needs one weight zero point per tensor (node {node.name})")
    return b.constant(node.name, values.reshape(-1)[0]) if values.ndim else name


def _export_qgemm(b: _Builder, node) -> None:
    attrs = _attributes(node)
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
        raise ModelError(f"integer-only export supports QGemm with transA=0 and alpha=1 (node {node.name})")
    weight = b.values[node.input[3]]
    weight = weight.T if attrs.get("transB", 0) else weight
    accumulator = b.node("MatMulInteger", [node.input[0], b.constant(node.name, np.ascontiguousarray(weight)),
                                           node.input[2], _scalar_zero_point(b, node.input[5], node)], node.name)
    if len(node.input) > 6 and node.input[6]:
        accumulator = b.node("Add", [accumulator, node.input[6]], node.name)
    real_in = b.values[node.input[1]] * b.values[node.input[4]]
    if len(node.input) > 7 and node.input[7]:
        real = real_in / b.values[node.input[7]]
        _requantize_nodes(b, node.name, accumulator, real, b.values[node.input[8]], node.output[0], (1, -1))
    else:  # the boundary: the integer accumulator dequantized into the model output
        scale = np.broadcast_to(real_in.astype(np.float32), (weight.shape[1],))
        b.node("DequantizeLinear", [accumulator, b.constant(node.name, np.ascontiguousarray(scale))], node.name,
               output=node.output[0], axis=1)


def _export_qlinear_matmul(b: _Builder, node) -> None:
    accumulator = b.node("MatMulInteger", [node.input[0], node.input[3], node.input[2],
                                           _scalar_zero_point(b, node.input[5], node)], node.name)
    real = b.values[node.input[1]] * b.values[node.input[4]] / b.values[node.input[6]]
    _requantize_nodes(b, node.name, accumulator, real, b.values[node.input[7]], node.output[0], (1, -1))


def _export_qlinear_conv(b: _Builder, node) -> None:
    attrs = {k: v for k, v in _attributes(node).items() if k in ("dilations", "group", "kernel_shape", "pads", "strides")}
    accumulator = b.node("ConvInteger", [node.input[0], node.input[3], node.input[2],
                                         _scalar_zero_point(b, node.input[5], node)], node.name, **attrs)
    if len(node.input) > 8 and node.input[8]:
        bias = b.values[node.input[8]].reshape(1, -1, 1, 1)
        accumulator = b.node("Add", [accumulator, b.constant(node.name, bias)], node.name)
    real = b.values[node.input[1]] * b.values[node.input[4]] / b.values[node.input[6]]
    _requantize_nodes(b, node.name, accumulator, real, b.values[node.input[7]], node.output[0], (1, -1, 1, 1))


_EXPORTERS = {"QGemm": _export_qgemm, "QLinearMatMul": _export_qlinear_matmul, "QLinearConv": _export_qlinear_conv}
_KEPT = frozenset({"QuantizeLinear", "DequantizeLinear", "MaxPool", "Flatten", "Reshape"})


def integer_only_model(model: onnx.ModelProto | bytes, *, multiplier_bits: int = 31) -> onnx.ModelProto:
    """Rewrite an exported model's optimized graph in standard ONNX integer ops (opset 17).

    QLinearConv / QLinearMatMul / QGemm become ConvInteger / MatMulInteger, an int32 bias Add and the
    fixed-point requantization (`requantize`, single rounding) in Mul / Add / Mod / Sub / Div / Min / Max on int64;
    QuantizeLinear of the input, MaxPool, Flatten, Reshape and the final DequantizeLinear are kept. Its
    outputs equal `run_integer_only`'s. Other ops are refused with the node named.
    """
    graph = optimized_model(model).graph
    b = _Builder(graph, multiplier_bits)
    for node in graph.node:
        if node.op_type in _EXPORTERS:
            _EXPORTERS[node.op_type](b, node)
        elif node.op_type in _KEPT:
            b.nodes.append(node)
        else:
            raise ModelError(f"integer-only export does not support {node.op_type} (node {node.name})")
    used = {name for node in b.nodes for name in node.input}
    out = helper.make_graph(b.nodes, graph.name + "_integer_only", list(graph.input), list(graph.output),
                            [init for init in b.initializers if init.name in used])
    result = helper.make_model(out, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                               producer_name="quantization-lab integer-only")
    onnx.checker.check_model(result)
    return result


@dataclass(frozen=True)
class IntegerOnlyComparison:
    """An exported model against its integer-only form on the same data."""

    check: IntegerOnlyReport  # the exported model as onnxruntime optimizes it
    layers: tuple[LayerRequantization, ...]  # each layer's fixed-point requantization error
    exported_accuracy: float | None  # onnxruntime running the exported model (float-scaled requantization)
    integer_accuracy: float | None  # the integer-only ONNX model (fixed-point requantization)
    agreement: float  # share of samples whose argmax agrees between the two
    model: onnx.ModelProto | None  # the integer-only model, None when the ops do not allow it
    refused: str = ""  # why there is no integer-only model
    multiplier_bits: int = 31

    def to_dict(self) -> dict:
        return {"integer_only": self.check.integer_only, **self.check.to_dict(),
                "layers": [layer.to_dict() for layer in self.layers], "exported_accuracy": self.exported_accuracy,
                "integer_accuracy": self.integer_accuracy, "agreement": self.agreement,
                "integer_only_export": self.model is not None, "refused": self.refused,
                "multiplier_bits": self.multiplier_bits}


def compare_integer_only(exported: bytes, feeds: Mapping[str, np.ndarray], labels: np.ndarray | None = None, *,
                         multiplier_bits: int = 31) -> IntegerOnlyComparison:
    """Check `exported`, build its integer-only form when its ops allow, and score both on `feeds`
    (accuracy = argmax along the last axis of the first output against `labels`)."""
    check = check_integer_only(exported)
    if not check.integer_only:  # nothing to compare: the export is not run (a real model's split in one run
        # would hold every activation of every sample at once: 700 MiB for a text recogniser's 16 samples)
        return IntegerOnlyComparison(check, (), None, None, 0.0, None,
                                     f"{len(check.float_nodes)} nodes compute in float", multiplier_bits)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(exported, options, providers=["CPUExecutionProvider"]).run(None, dict(feeds))[0]
    try:
        model = integer_only_model(exported, multiplier_bits=multiplier_bits)
        layers = run_integer_only(exported, feeds, multiplier_bits=multiplier_bits).layers
    except ModelError as err:
        return IntegerOnlyComparison(check, (), _accuracy(reference, labels), None, 0.0, None, str(err),
                                     multiplier_bits)
    integer = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"]).run(None, dict(feeds))[0]
    agreement = float(np.mean(np.argmax(integer, axis=-1) == np.argmax(reference, axis=-1)))
    return IntegerOnlyComparison(check, layers, _accuracy(reference, labels), _accuracy(integer, labels),
                                 agreement, model, multiplier_bits=multiplier_bits)


def _accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float(np.mean(np.argmax(outputs, axis=-1) == np.asarray(labels)))

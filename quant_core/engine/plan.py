"""A config's plan: for every layer, what is computed. The one home of the rules that decide it.

`Planner.plan(config)` resolves, once per config, each layer's weight (its layout: concrete axis and
the shape it is quantized in, with binary / ternary per output channel), its input activation's
fake-quant parameters (from the calibrated range), and how the export carries the layer (an
onnxruntime kernel, or simulated only and why). `weight_range` is the one rule for the range a
weight is quantized with. The simulators (`reference.simulate_reference`, the Evaluator's fast
paths), the scoring and the export read plans; none of them re-decides these things.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
import onnx

from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.lru import LRUCache
from quant_core.engine.simulate import ActivationQuant
from quant_core.errors import ConfigError
from quant_core.model.layers import layer_specs
from quant_core.numerics.axes import WeightLayout, layer_axes, natural_axes, output_channel_axis, resolve, shape_axes
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, RangeMethod
from quant_core.numerics.quantize import tensor_range
from quant_core.numerics.tensor import fake_quantize_tensor
from quant_core.numerics.ranges import weight_ranges

# Formats with one scale per output channel whatever the granularity (numerics/extreme.py).
_PER_OUTPUT_CHANNEL = (FormatKind.BINARY, FormatKind.TERNARY)
MAX_PLANS = 256     # plans kept by a Planner (least recently used evicted first)
MAX_SMALL = 4096    # resolved weight layouts and activation parameters (a few bytes each)




# ---------------------------------------------------------------------------------------------
# Weights: the layout and the range rule
# ---------------------------------------------------------------------------------------------

def weight_key(tq: TensorQuant) -> TensorQuant:
    """`tq` with the fields that cannot change a weight's quantization reset, so equal weights share a cache entry.

    percentile matters only to the percentile method, axis only beyond per-tensor, block_size only per group.
    Give it a resolved TensorQuant (`axes.resolve`) so that axis=None and the explicit natural axis agree.
    """
    default = TensorQuant(tq.format)
    return replace(tq, percentile=tq.percentile if tq.range_method == RangeMethod.PERCENTILE else default.percentile,
                   axis=default.axis if tq.granularity == Granularity.PER_TENSOR else tq.axis,
                   block_size=tq.block_size if tq.granularity == Granularity.PER_GROUP else default.block_size)


def weight_layout(tq: TensorQuant, axes) -> WeightLayout:
    """`tq` resolved for a weight of natural `axes` (`axes.resolve`), binary / ternary per output channel."""
    if tq.format.kind in _PER_OUTPUT_CHANNEL and len(axes.shape) >= 2:
        tq = replace(tq, granularity=Granularity.PER_CHANNEL)
    layout = resolve(tq, axes)
    return WeightLayout(weight_key(layout.tq), layout.shape)


def weight_range(view: np.ndarray, tq: TensorQuant, *, name: str, minmax=None):
    """Return the (lo, hi) a weight (`view`: shaped as its layout) is quantized with, or (None, None).

    Integer formats: tq.range_method's estimate (`ranges.weight_ranges`); for min-max, `minmax` when the
    caller has it (the same for every bit width and scheme at one granularity) or `quantize.tensor_range`.
    Other formats have their own statistics (amax, per-channel means, codebooks): (None, None).
    """
    if not tq.format.is_integer:
        return None, None
    if tq.range_method != RangeMethod.MINMAX:
        return weight_ranges(view, tq, name=name)
    if minmax is not None:
        return minmax
    return tensor_range(view, granularity=tq.granularity, axis=tq.axis, block_size=tq.block_size, name=name)


def fake_quantized_weight(weight: np.ndarray, layout: WeightLayout, *, name: str, minmax=None) -> np.ndarray:
    """The weight as the simulation feeds it: quantized and dequantized as `layout` says (float32, weight's shape)."""
    view = weight.reshape(layout.shape)
    lo, hi = weight_range(view, layout.tq, name=name, minmax=minmax)
    values = fake_quantize_tensor(view, layout.tq, name=name, lo=lo, hi=hi)
    return np.ascontiguousarray(values.reshape(weight.shape), dtype=np.float32)


def activation_quant(calibration, tensor: str, tq: TensorQuant) -> ActivationQuant:
    """The fake-quant parameters of an activation: its calibrated range by tq's method, one range per tensor."""
    if calibration is None:
        raise ConfigError(f"activation {tensor!r}: quantizing activations needs calibration data; "
                          "this evaluation was set up for weights only")
    try:
        found = calibration.range_for(tensor, tq)
    except KeyError:
        raise ConfigError(f"the calibration has no range for tensor {tensor!r}; recalibrate on this model") from None
    return ActivationQuant.from_range(float(np.min(found.lo)), float(np.max(found.hi)), tq)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

# One layer's choice as the simulation sees it: the resolved weight layout (None: FP32 weight) and the
# activation's fake-quant parameters (None: FP32 input). Equal feeds give equal numbers: the key of caches.
LayerFeed = tuple[str, WeightLayout | None, ActivationQuant | None]


@dataclass(frozen=True)
class LayerPlan:
    """What one layer computes under a config."""

    layer: str
    weight_tensor: str | None           # the weight initializer
    weight: WeightLayout | None         # None: the FP32 weight
    activation_tensor: str | None       # the float activation input
    activation: ActivationQuant | None  # None: the FP32 input
    export: LayerExport

    @property
    def feed(self) -> LayerFeed:
        return self.layer, self.weight, self.activation

    @property
    def changed(self) -> bool:
        """True when the simulation computes something other than FP32 for this layer."""
        return self.weight is not None or self.activation is not None


@dataclass(frozen=True)
class Plan:
    """A config resolved against one model and calibration: every layer in model order."""

    config: QuantConfig
    layers: tuple[LayerPlan, ...]

    @property
    def feeds(self) -> tuple[LayerFeed, ...]:
        """The feeds of the layers that differ from FP32, in model order (a hashable key of the simulation).

        `config.target` changes nothing here: a saturating target changes only the type the export
        stores int8 weights in, not their grid (`cpu_target.kernel_weight_storage`).
        """
        return tuple(entry.feed for entry in self.layers if entry.changed)

    @property
    def simulated_only(self) -> tuple[str, ...]:
        """Layers whose configured formats the export keeps FP32 for lack of an onnxruntime kernel."""
        return tuple(entry.layer for entry in self.layers if entry.export.kind == ExportKind.SIMULATED_ONLY)


class Planner:
    """Plans configs of one model and calibration (None: weights only); what it resolves is cached, bounded."""

    def __init__(self, prepared, calibration=None):
        self.prepared, self.calibration = prepared, calibration
        self._specs = {spec.name: spec for spec in layer_specs(prepared)}
        self.layers = tuple(self._specs)
        self._axes = layer_axes(prepared)
        initializers = {init.name: init for init in prepared.model.graph.initializer}
        self._weight_shapes = {name: tuple(int(d) for d in initializers[spec.weight].dims)
                               for name, spec in self._specs.items() if spec.weight in initializers}
        self.export = ExportPlanner(prepared)
        self._plans = LRUCache(MAX_PLANS)        # QuantConfig -> Plan
        self._layouts = LRUCache(MAX_SMALL)      # (layer, TensorQuant) -> WeightLayout
        self._activations = LRUCache(MAX_SMALL)  # (tensor, TensorQuant) -> ActivationQuant

    def weight_layout(self, layer: str, tq: TensorQuant) -> WeightLayout:
        """`tq` resolved for the layer's weight: concrete axis, the shape to quantize in (`weight_layout`)."""
        key = (layer, tq)
        found = self._layouts.get(key)
        if found is None:
            axes = self._axes.get(layer) or shape_axes(self._weight_shapes[layer])
            found = self._layouts.put(key, weight_layout(tq, axes))
        return found

    def activation_quant(self, tensor: str, tq: TensorQuant) -> ActivationQuant:
        key = (tensor, tq)
        found = self._activations.get(key)
        if found is None:
            found = self._activations.put(key, activation_quant(self.calibration, tensor, tq))
        return found

    def layer_feed(self, layer: str, choice: LayerQuant) -> LayerFeed:
        """What the simulation computes for `choice` on `layer`: (layer, weight layout or None, activation or None).

        An identity format (fp32) is no quantization; a weight needs an initializer and an activation a float
        input, else that part stays FP32.
        """
        spec = self._specs[layer]
        w, a = choice.weights, choice.activations
        has_weight = spec.weight is not None and layer in self._weight_shapes
        layout = self.weight_layout(layer, w) if w is not None and not w.format.is_identity and has_weight else None
        quantized = a is not None and not a.format.is_identity and spec.activation_input is not None
        return layer, layout, self.activation_quant(spec.activation_input, a) if quantized else None

    def plan(self, config: QuantConfig) -> Plan:
        """Return the plan of `config` (cached per config)."""
        found = self._plans.get(config)
        if found is None:
            exports = {entry.layer: entry for entry in self.export.plan(config)}
            entries = []
            for layer in self.layers:
                _, layout, activation = self.layer_feed(layer, config.for_layer(layer))
                spec = self._specs[layer]
                entries.append(LayerPlan(layer, spec.weight, layout, spec.activation_input, activation, exports[layer]))
            found = self._plans.put(config, Plan(config, tuple(entries)))
        return found


# ---------------------------------------------------------------------------------------------
# How the export carries a layer (the one source of "simulated only")
# ---------------------------------------------------------------------------------------------

# Formats onnxruntime's CPU provider runs with integer kernels (QLinearConv, QGemm, QLinearMatMul...).
_ORT_INTEGER_TYPES = {(FormatKind.INT, 8): "QInt8", (FormatKind.UINT, 8): "QUInt8"}


# Layer op types onnxruntime's QDQ quantizer quantizes (weight = input 1).
INTEGER_OP_TYPES = ("Conv", "Gemm", "MatMul")


class ExportKind(StrEnum):
    """How one layer appears in the exported model."""

    FP32 = "fp32"                    # unchanged
    INTEGER = "integer"              # QDQ int8 weight + 8-bit activation -> integer kernel
    WEIGHT_INT8 = "weight_int8"      # int8 weight + DequantizeLinear, float kernel (weight-only)
    WEIGHT_FP16 = "weight_fp16"      # float16 weight + Cast, float kernel (weight-only)
    WEIGHT_NBITS = "weight_nbits"    # per-group 2/4/8-bit MatMul weight -> MatMulNBits (weight-only, our grid)
    SIMULATED_ONLY = "simulated_only"  # no onnxruntime kernel: kept FP32 in the export


@dataclass(frozen=True)
class LayerExport:
    """The export decision for one layer and, when it is not exported as configured, why."""

    layer: str
    op_type: str
    kind: ExportKind
    reason: str = ""


def _nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in model.graph.node}


def _layer_names(prepared, model: onnx.ModelProto) -> list[tuple[str, str]]:
    info = getattr(prepared, "info", None)
    if info is not None:
        return [(layer.name, layer.op_type) for layer in info.layers]
    return [(node.name, node.op_type) for node in model.graph.node if node.op_type in INTEGER_OP_TYPES]


def ort_integer_type(fmt: NumberFormat) -> str | None:
    """onnxruntime's quant_type of an integer format with CPU kernels ("QInt8", "QUInt8"), else None."""
    return _ORT_INTEGER_TYPES.get((fmt.kind, fmt.bits))


def _weight_reason(tq: TensorQuant) -> str:
    fmt = tq.format
    if fmt.is_integer and ort_integer_type(fmt) is None:
        return f"{fmt.name} weights have no onnxruntime integer kernel (only 8-bit)"
    if tq.granularity == Granularity.PER_GROUP:
        return "per-group int8 weights have no onnxruntime integer kernel"
    if fmt.narrow_range and not tq.symmetric:
        return f"{fmt.name} asymmetric is not a onnxruntime QuantizeLinear range"
    return ""


def resolved_weights(tq: TensorQuant, node: onnx.NodeProto, weight: onnx.TensorProto) -> TensorQuant:
    """Return a layer's weight TensorQuant with its natural axis filled in (`axes.resolve`), for a node
    whose weight is its second input. Only per-tensor / per-channel are exported, on the weight's own shape."""
    dims = tuple(int(d) for d in weight.dims)
    return resolve(tq, natural_axes(node.op_type, node, rank=len(dims), shape=dims)).tq


MATMUL_NBITS_BITS = (2, 4, 8)   # the bit widths onnxruntime's CPU MatMulNBits kernel runs


def _matmul_nbits_weight(op_type: str, node: onnx.NodeProto, tq: TensorQuant, weight: onnx.TensorProto) -> bool:
    """True for a MatMul's 2-D weight [K, N] in an integer 2/4/8-bit min-max format per group along K, a
    power-of-two group of at least 16: onnxruntime's MatMulNBits runs exactly that grid
    (`quant_core.export.nbits.export_config_nbits`)."""
    if op_type != "MatMul" or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
        return False
    if not tq.format.is_integer or tq.format.bits not in MATMUL_NBITS_BITS or tq.granularity != Granularity.PER_GROUP:
        return False
    block = tq.block_size
    resolved = resolve(tq, natural_axes(op_type, node, rank=2, shape=tuple(int(d) for d in weight.dims))).tq
    return resolved.axis % 2 == 0 and block >= 16 and block & (block - 1) == 0


def classify_layer(name: str, op_type: str, choice: LayerQuant, node: onnx.NodeProto | None,
                   initializers: dict[str, onnx.TensorProto]) -> LayerExport:
    """Decide how a layer's configured quantization can appear in a real onnxruntime model."""
    if choice.is_fp32:
        return LayerExport(name, op_type, ExportKind.FP32)
    weights, activations = choice.weights, choice.activations
    if op_type not in INTEGER_OP_TYPES:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           f"{op_type} layers are not exported (only {', '.join(INTEGER_OP_TYPES)} have an "
                           "onnxruntime QDQ export here)")
    if node is None or len(node.input) < 2 or node.input[1] not in initializers:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           f"{op_type} with a non-constant weight has no onnxruntime QDQ export")
    if weights is None:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           "activation-only quantization has no onnxruntime integer kernel")
    if weights.format.kind == FormatKind.FP16 and activations is None:
        return LayerExport(name, op_type, ExportKind.WEIGHT_FP16)
    if weights.format.is_block:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           f"{weights.format.name} is a block format (MX / NVFP4): simulated here, no onnxruntime "
                           "CPU kernel")
    if not weights.format.is_integer:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           f"{weights.format.name} weights have no onnxruntime CPU kernel")
    if activations is None and _matmul_nbits_weight(op_type, node, weights, initializers[node.input[1]]):
        return LayerExport(name, op_type, ExportKind.WEIGHT_NBITS)
    reason = _weight_reason(weights)
    rank = len(initializers[node.input[1]].dims)
    weights = resolved_weights(weights, node, initializers[node.input[1]])
    if not reason and activations is not None and weights.granularity == Granularity.PER_CHANNEL and rank >= 2:
        wanted = output_channel_axis(op_type, node, rank=rank)
        if weights.axis % rank != wanted:
            reason = (f"per-channel along weight axis {weights.axis}, not the output-channel axis {wanted} "
                      "that onnxruntime's integer kernels and bias quantization need")
    if reason:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY, reason)
    if activations is None:
        return LayerExport(name, op_type, ExportKind.WEIGHT_INT8)
    fmt = activations.format
    if not fmt.is_integer or ort_integer_type(fmt) is None:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                           f"{fmt.name} activations have no onnxruntime integer kernel (only int8/uint8)")
    if activations.granularity != Granularity.PER_TENSOR:
        return LayerExport(name, op_type, ExportKind.SIMULATED_ONLY, "activations must be per-tensor")
    return LayerExport(name, op_type, ExportKind.INTEGER)


_MAX_DECISIONS = 4096  # an ExportPlanner's remembered (layer, choice) classifications


class ExportPlanner:
    """Plans configs of one model: the nodes, weights and layers it reads are indexed once.

    Read-only: it keeps a reference to the model (no copy), so planning a config costs only the
    classification of its layers (the what-if engine plans every config it evaluates).
    """

    def __init__(self, prepared):
        model = getattr(prepared, "model", prepared)
        self._model = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(bytes(model))
        self._nodes = _nodes_by_name(self._model)
        self._initializers = {init.name: init for init in self._model.graph.initializer}
        self._layers = _layer_names(prepared, self._model)
        self._decisions: dict[tuple[str, LayerQuant], LayerExport] = {}  # (layer, choice) -> classify_layer

    def _classify(self, name: str, op_type: str, choice: LayerQuant) -> LayerExport:
        key = (name, choice)
        found = self._decisions.get(key)
        if found is None:
            found = classify_layer(name, op_type, choice, self._nodes.get(name), self._initializers)
            if len(self._decisions) >= _MAX_DECISIONS:
                self._decisions.clear()  # bounded; a search revisits few choices per layer
            self._decisions[key] = found
        return found

    def plan(self, config: QuantConfig) -> tuple[LayerExport, ...]:
        """Return, for every quantizable layer in model order, how `config` can be exported."""
        plan = []
        activation_owner: dict[str, tuple[str, TensorQuant]] = {}
        for name, op_type in self._layers:
            node = self._nodes.get(name)
            choice = config.for_layer(name)
            decision = self._classify(name, op_type, choice)
            if decision.kind == ExportKind.INTEGER:
                # onnxruntime puts one QuantizeLinear on a tensor, shared by all its readers.
                tensor, tq = node.input[0], choice.activations
                owner = activation_owner.setdefault(tensor, (name, tq))
                if owner[1] != tq:
                    decision = LayerExport(name, op_type, ExportKind.SIMULATED_ONLY,
                                           f"reads {tensor!r} like layer {owner[0]!r} but with other activation "
                                           "settings; onnxruntime quantizes a tensor once")
            plan.append(decision)
        return tuple(plan)


def plan_export(prepared, config: QuantConfig) -> tuple[LayerExport, ...]:
    """Return, for every quantizable layer in model order, how `config` can be exported
    (`ExportPlanner(prepared).plan(config)`: keep a planner when planning several configs)."""
    return ExportPlanner(prepared).plan(config)

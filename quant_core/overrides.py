"""A config's per-layer choices as onnxruntime `TensorQuantOverrides`, and which layers can be exported.

`tensor_quant_overrides` returns plain JSON data (tensor name -> list of dicts); `ort_overrides`
turns it into what `onnxruntime.quantization.quantize_static(extra_options={"TensorQuantOverrides": ...})`
accepts. Every quantized tensor gets an explicit `scale` and `zero_point` computed by our one formula
(`qparams_from_range`) from our ranges, so the exported model quantizes exactly as the simulation does.

Shape (see docs/export.md):
    {"<activation tensor>": [{"quant_type": "QUInt8", "scale": 0.0123, "zero_point": 0}],
     "<weight initializer>": [{"quant_type": "QInt8", "axis": 0, "scale": s0, "zero_point": 0},  # channel 0
                              {"quant_type": "QInt8", "axis": 0, "scale": s1, "zero_point": 0}, ...]}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import onnx
from onnx import numpy_helper

from .axes import natural_axes, output_channel_axis, resolve
from .config import LayerQuant, QuantConfig, TensorQuant
from .cpu_target import kernel_weight_storage, saturates
from .errors import ConfigError, ModelError
from .formats import FormatKind, Granularity, NumberFormat
from .qparams import qparams_from_range

# Formats onnxruntime's CPU provider runs with integer kernels (QLinearConv, QGemm, QLinearMatMul...).
_ORT_INTEGER_TYPES = {(FormatKind.INT, 8): "QInt8", (FormatKind.UINT, 8): "QUInt8"}
_NUMPY_TYPES = {"QInt8": np.int8, "QUInt8": np.uint8}
# Layer op types onnxruntime's QDQ quantizer quantizes (weight = input 1).
INTEGER_OP_TYPES = ("Conv", "Gemm", "MatMul")
# Ops between a Conv output and the next layer's input through which one quantization grid passes
# unchanged: elementwise monotone or pure data movement, so Q(op(x)) == op(Q(x)) for the same grid.
GRID_PRESERVING_OPS = {"Relu", "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


class ExportKind(StrEnum):
    """How one layer appears in the exported model."""

    FP32 = "fp32"                    # unchanged
    INTEGER = "integer"              # QDQ int8 weight + 8-bit activation -> integer kernel
    WEIGHT_INT8 = "weight_int8"      # int8 weight + DequantizeLinear, float kernel (weight-only)
    WEIGHT_FP16 = "weight_fp16"      # float16 weight + Cast, float kernel (weight-only)
    SIMULATED_ONLY = "simulated_only"  # no onnxruntime kernel: kept FP32 in the export


@dataclass(frozen=True)
class LayerExport:
    """The export decision for one layer and, when it is not exported as configured, why."""

    layer: str
    op_type: str
    kind: ExportKind
    reason: str = ""


def model_proto(prepared) -> onnx.ModelProto:
    """Return a private copy of the prepared model (onnxruntime's quantizer mutates what it is given)."""
    model = prepared.model if hasattr(prepared, "model") else prepared
    copy = onnx.ModelProto()
    if isinstance(model, (bytes, bytearray)):
        copy.ParseFromString(bytes(model))
    elif isinstance(model, onnx.ModelProto):
        copy.CopyFrom(model)
    else:
        raise ModelError(f"expected a prepared model, ONNX bytes or a ModelProto, got {type(model).__name__}")
    return copy


def _nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.name: node for node in model.graph.node}


def _layer_names(prepared, model: onnx.ModelProto) -> list[tuple[str, str]]:
    info = getattr(prepared, "info", None)
    if info is not None:
        return [(layer.name, layer.op_type) for layer in info.layers]
    return [(node.name, node.op_type) for node in model.graph.node if node.op_type in INTEGER_OP_TYPES]


def _format_type(fmt: NumberFormat) -> str | None:
    return _ORT_INTEGER_TYPES.get((fmt.kind, fmt.bits))


def _weight_reason(tq: TensorQuant) -> str:
    fmt = tq.format
    if fmt.is_integer and _format_type(fmt) is None:
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
    if not fmt.is_integer or _format_type(fmt) is None:
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
        self._model = model if isinstance(model, onnx.ModelProto) else model_proto(prepared)
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


# ---------------------------------------------------------------------------------------------
# Quantization parameters
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Grid:
    quant_type: str
    scale: np.ndarray       # float32, scalar or per channel
    zero_point: np.ndarray  # int32, same shape
    axis: int | None = None

    def entries(self) -> list[dict]:
        if self.axis is None:
            return [{"quant_type": self.quant_type, "scale": float(self.scale),
                     "zero_point": int(self.zero_point)}]
        return [{"quant_type": self.quant_type, "axis": int(self.axis), "scale": float(s), "zero_point": int(z)}
                for s, z in zip(self.scale.reshape(-1), self.zero_point.reshape(-1))]

    def stored_as(self, fmt: NumberFormat) -> _Grid:
        """The same grid with its codes stored in `fmt` (int8 -> uint8: codes and zero point + 128)."""
        quant_type = _format_type(fmt)
        if quant_type == self.quant_type:
            return self
        if (self.quant_type, quant_type) != ("QInt8", "QUInt8"):
            raise ValueError(f"cannot store a {self.quant_type} grid as {quant_type}")
        return _Grid(quant_type, self.scale, (self.zero_point + 128).astype(np.int32), self.axis)

    @property
    def zero_is_lowest(self) -> bool:
        """True when the grid's lowest value is 0: quantizing then clips negatives like Relu."""
        qmin = np.iinfo(_NUMPY_TYPES[self.quant_type]).min
        return bool(np.all(self.zero_point == qmin))


def activation_grid(calibration, tensor: str, tq: TensorQuant) -> _Grid:
    """Return the grid of an activation: our range estimator, then our one qparams formula."""
    try:
        result = calibration.range_for(tensor, tq)
    except KeyError:
        raise ConfigError(f"the calibration has no range for tensor {tensor!r}; recalibrate on this model") from None
    # As the simulation (evaluate.py): one per-tensor range even if the estimator returned arrays.
    lo, hi = float(np.min(result.lo)), float(np.max(result.hi))
    scale, zero_point = qparams_from_range(lo, hi, tq.format, symmetric=tq.symmetric)
    return _Grid(_format_type(tq.format), scale, zero_point)


def weight_grid(weight: np.ndarray, tq: TensorQuant, *, name: str) -> _Grid:
    """Return the grid of a weight exactly as the simulation quantizes it (`quantize_tensor`; `tq` resolved)."""
    from .formats import RangeMethod
    from .quantize import quantize_tensor
    from .ranges import weight_ranges
    lo = hi = None
    if tq.range_method != RangeMethod.MINMAX:  # as Evaluator.quantized_weight
        lo, hi = weight_ranges(weight, tq, name=name)
    quantized = quantize_tensor(weight, tq, name=name, lo=lo, hi=hi)
    axis = quantized.axis
    return _Grid(_format_type(tq.format), np.asarray(quantized.scale, np.float32),
                 np.asarray(quantized.zero_point, np.int32), None if axis is None else int(axis))


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    return readers


def grid_preserving_chain(model: onnx.ModelProto, tensor: str, targets: set[str]) -> list[str] | None:
    """Follow single-reader grid-preserving ops from `tensor`; return the tensors up to a target, else None."""
    readers = _consumers(model)
    outputs = {out.name for out in model.graph.output}
    chain = [tensor]
    while chain[-1] not in targets:
        current = chain[-1]
        nodes = readers.get(current, [])
        if current in outputs or len(nodes) != 1 or nodes[0].op_type not in GRID_PRESERVING_OPS:
            return None
        if nodes[0].input[0] != current:
            return None
        chain.append(nodes[0].output[0])
    return chain


@dataclass(frozen=True)
class OverridePlan:
    """What `quantize_static` needs to reproduce a config: overrides, nodes and notes."""

    overrides: dict                 # JSON data, tensor -> list of dicts
    nodes_to_quantize: tuple[str, ...]
    layers: tuple[LayerExport, ...]
    notes: tuple[str, ...]


def build_override_plan(prepared, config: QuantConfig, calibration) -> OverridePlan:
    """Compute the TensorQuantOverrides of every tensor onnxruntime will quantize for `config`."""
    model = model_proto(prepared)
    layers = plan_export(prepared, config)
    saturating = saturates(config.target)
    stored_unsigned = []
    nodes = _nodes_by_name(model)
    initializers = {init.name: init for init in model.graph.initializer}
    integer = [entry for entry in layers if entry.kind == ExportKind.INTEGER]
    grids: dict[str, _Grid] = {}
    for entry in integer:
        node, choice = nodes[entry.layer], config.for_layer(entry.layer)
        grids.setdefault(node.input[0], activation_grid(calibration, node.input[0], choice.activations))
        weight_name = node.input[1]
        weight = numpy_helper.to_array(initializers[weight_name])
        tq = resolved_weights(choice.weights, node, initializers[weight_name])
        storage = kernel_weight_storage(tq.format, saturating=saturating)
        grids[weight_name] = weight_grid(weight, tq, name=weight_name).stored_as(storage)
        if storage != tq.format:
            stored_unsigned.append(entry.layer)
    inputs_of_integer_layers = {nodes[entry.layer].input[0] for entry in integer}
    nodes_to_quantize = [entry.layer for entry in integer]
    notes = []
    if stored_unsigned:
        notes.append(f"{len(stored_unsigned)} layer(s) store their int8 weights as uint8 (zero point + 128, the same "
                     f"grid) for the saturating x86 target (target {config.target.value}): onnxruntime then runs u8×u8 "
                     "kernels, which do not saturate where u8×s8 pairs would overflow int16")
    readers = _consumers(model)
    for entry in integer:
        node = nodes[entry.layer]
        if node.op_type != "Conv":
            continue  # Gemm / MatMul outputs stay float (OpTypesToExcludeOutputQuantization)
        # QLinearConv needs a quantized output. Use the grid of the next layer's input when only
        # grid-preserving ops lie between: then this extra quantization changes nothing.
        output = node.output[0]
        chain = grid_preserving_chain(model, output, inputs_of_integer_layers)
        if chain is not None:
            grid = grids[chain[-1]]
        else:
            grid = activation_grid(calibration, output, config.for_layer(entry.layer).activations)
            notes.append(f"{entry.layer}: onnxruntime's QLinearConv also quantizes its output {output!r} "
                         "(not a layer input in the simulation); this adds rounding the simulation does not model")
            chain = [output]
        for tensor in chain[:-1] if chain[-1] in inputs_of_integer_layers else chain:
            grids.setdefault(tensor, grid)
        relu = readers.get(output, [])
        if len(relu) == 1 and relu[0].op_type == "Relu" and grid.zero_is_lowest:
            nodes_to_quantize.append(relu[0].name)  # onnxruntime folds it into the output's clipping
            grids.setdefault(relu[0].output[0], grid)
    overrides = {tensor: grid.entries() for tensor, grid in grids.items()}
    return OverridePlan(overrides, tuple(nodes_to_quantize), layers, tuple(notes))


def tensor_quant_overrides(prepared, config: QuantConfig, calibration) -> dict:
    """Return the config as onnxruntime TensorQuantOverrides JSON data (tensor -> list of dicts).

    Per-tensor entries hold `quant_type`, `scale`, `zero_point`; per-channel weights hold one dict
    per channel with `quant_type`, `axis`, `scale`, `zero_point`. Only layers exported with
    integer kernels appear; see `plan_export` for the others.
    """
    return build_override_plan(prepared, config, calibration).overrides


def ort_overrides(overrides: dict) -> dict:
    """Convert JSON overrides to the objects onnxruntime's quantizer expects (QuantType, numpy scalars)."""
    from onnxruntime.quantization import QuantType
    if not isinstance(overrides, dict):
        raise ConfigError("TensorQuantOverrides must be a JSON object mapping tensor names to lists")
    converted = {}
    for tensor, entries in overrides.items():
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ConfigError(f"TensorQuantOverrides[{tensor!r}] must be a list of objects")
        converted[tensor] = []
        for entry in entries:
            item = dict(entry)
            if "quant_type" in item:
                name = str(item["quant_type"])
                if name not in _NUMPY_TYPES:
                    raise ConfigError(f"TensorQuantOverrides[{tensor!r}]: quant_type {name!r} is not one of "
                                      f"{sorted(_NUMPY_TYPES)}")
                item["quant_type"] = QuantType[name]
                if "zero_point" in item:
                    item["zero_point"] = np.array(item["zero_point"], dtype=_NUMPY_TYPES[name])
            if "scale" in item:
                # float32, as the simulation divides in float32.
                item["scale"] = np.array(item["scale"], dtype=np.float32)
            converted[tensor].append(item)
    return converted


def overrides_to_json(overrides: dict) -> str:
    """Serialize overrides (JSON data) with stable key order."""
    return json.dumps(overrides, indent=2, sort_keys=True)


def overrides_from_json(text: str | bytes) -> dict:
    """Parse overrides saved by `overrides_to_json`; raise ConfigError on anything else."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"the overrides file is not valid JSON: {err}") from None
    ort_overrides(data)  # validates
    return data

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

import numpy as np
import onnx
from onnx import numpy_helper

from quant_core.config import QuantConfig, TensorQuant
from quant_core.engine.plan import (ExportKind, LayerExport, activation_quant, ort_integer_type, plan_export,
                                    resolved_weights, weight_range)
from quant_core.errors import ConfigError, ModelError
from quant_core.numerics.cpu_target import kernel_weight_storage, saturates
from quant_core.numerics.formats import NumberFormat
from quant_core.numerics.tensor import quantize_tensor

_NUMPY_TYPES = {"QInt8": np.int8, "QUInt8": np.uint8}
# Ops between a Conv output and the next layer's input through which one quantization grid passes
# unchanged: elementwise monotone or pure data movement, so Q(op(x)) == op(Q(x)) for the same grid.
GRID_PRESERVING_OPS = {"Relu", "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


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
        quant_type = ort_integer_type(fmt)
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
    """Return the grid of an activation: the plan's activation quantizer (`plan.activation_quant`)."""
    quant = activation_quant(calibration, tensor, tq)
    return _Grid(ort_integer_type(tq.format), np.float32(quant.scale), np.int32(quant.zero_point))


def weight_grid(weight: np.ndarray, tq: TensorQuant, *, name: str) -> _Grid:
    """Return the grid of a weight exactly as the simulation quantizes it (`plan.weight_range`; `tq` resolved)."""
    lo, hi = weight_range(weight, tq, name=name)
    quantized = quantize_tensor(weight, tq, name=name, lo=lo, hi=hi)
    axis = quantized.axis
    return _Grid(ort_integer_type(tq.format), np.asarray(quantized.scale, np.float32),
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


def separate_shared_weights(model: onnx.ModelProto, config: QuantConfig, layers: list[str]) -> list[str]:
    """Give an integer layer its own copy of a weight that an earlier one of `layers` reads with another grid;
    return the layers given one (`model` is changed in place).

    onnxruntime's quantizer keys a weight's grid by the initializer's name, so two layers reading one
    initializer would share the grid of the last (a per-tensor layer computing on a per-channel grid). A config
    quantizes a layer's weight for that layer (docs/engine.md, "A weight other nodes read too"), as the
    simulation does. Layers whose weight grids are the same keep sharing it: the weight is stored once.
    """
    nodes = {node.name: node for node in model.graph.node}
    initializers = {init.name: init for init in model.graph.initializer}
    first: dict[str, TensorQuant] = {}
    separated = []
    for layer in layers:
        node = nodes[layer]
        name = node.input[1]
        if name not in initializers:
            continue
        tq = resolved_weights(config.for_layer(layer).weights, node, initializers[name])
        if first.setdefault(name, tq) == tq:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(initializers[name])
        copy.name = f"{name}.{layer}"
        while copy.name in initializers:
            copy.name += "_"
        model.graph.initializer.append(copy)
        initializers[copy.name] = copy
        node.input[1] = copy.name
        separated.append(layer)
    return separated


def build_override_plan(prepared, config: QuantConfig, calibration) -> OverridePlan:
    """Compute the TensorQuantOverrides of every tensor onnxruntime will quantize for `config`."""
    model = model_proto(prepared)
    layers = plan_export(prepared, config)
    separate_shared_weights(model, config, [entry.layer for entry in layers if entry.kind == ExportKind.INTEGER])
    saturating = saturates(config.target)
    stored_unsigned = []
    nodes = {node.name: node for node in model.graph.node}
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

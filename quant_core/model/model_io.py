"""Safe loading of untrusted ONNX models, their canonical prepared form, and the quantizable-layer inventory.

Layers are named by their ONNX node names. A layer is quantizable when its weight is static: an initializer or
a Constant node. The inventory reads only tensor headers (names, dims, dtypes), never the weight data, so
listing the layers of a large model costs no extra memory.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper, shape_inference, version_converter

from quant_core.model import onnx_file
from quant_core.model.onnx_graph import subgraph_nodes
from quant_core.errors import ModelError
from quant_core.model.onnx_checks import (check_structure, model_skeleton, one_line, refuse_external_data, refuse_external_tensor,
                          refuse_lying_headers, refuse_non_finite, refuse_non_finite_weights)

MAX_MODEL_BYTES = 200 * 2**20
MIN_PREPARED_OPSET = 13  # per-channel QuantizeLinear / DequantizeLinear (axis attribute) need opset 13
# The newest IR version onnxruntime 1.31 reads (its error message says so; the Python API does not tell).
# onnx 1.23 writes IR 14 by default, so models saved with onnx.helper would not open without lowering.
MAX_RUNTIME_IR_VERSION = 13
MAX_RUNTIME_OPSET = 26  # the newest default-domain opset onnxruntime 1.31 runs (onnx 1.23 knows up to 28)

# (op_type, input positions of quantizable weights, position of an optional bias)
_WEIGHT_INPUTS = {
    "Conv": ((1,), 2),
    "ConvTranspose": ((1,), 2),
    "Gemm": ((1,), 2),
    "LSTM": ((1, 2), 3),
    "GRU": ((1, 2), 3),
    "RNN": ((1, 2), 3),
}
_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
    "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulNBits", "MatMulBnb4", "QGemm", "QAttention",
    "QOrderedMatMul", "GatherBlockQuantized",
})
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_LAYER_OPS = frozenset({*_WEIGHT_INPUTS, "MatMul", "Gather"})
_RUNTIME_WEIGHT_NOTE = "no static weights (computed at run time)"
_QUANTIZED_WEIGHT_NOTE = "weight already quantized (comes from DequantizeLinear)"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: shape dims are ints (fixed), strings (named dynamic) or None (unknown)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str


@dataclass(frozen=True)
class WeightRef:
    """A static tensor a layer reads: where it is stored, its shape and dtype (not its values)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str  # "initializer" or "constant"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layer:
    """One quantizable node, named by its ONNX node name.

    `weights` holds the quantizable weights, main weight first (Conv/Gemm/MatMul: W; LSTM/GRU/RNN: W, R;
    Gather: the embedding table). `bias` is kept apart because biases are not quantized like weights.
    `params` counts the elements of the weights and the bias.
    """

    name: str
    op_type: str
    weights: tuple[WeightRef, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: int
    note: str = ""
    bias: WeightRef | None = None

    @property
    def weight(self) -> WeightRef | None:
        """The main weight, or None when the layer has no static weight."""
        return self.weights[0] if self.weights else None

    @property
    def activation_input(self) -> str | None:
        """The activation tensor the layer reads: its first input that is neither a weight nor the bias."""
        static = {ref.name for ref in self.weights}
        if self.bias is not None:
            static.add(self.bias.name)
        return next((name for name in self.inputs if name and name not in static), None)


@dataclass(frozen=True)
class ModelInfo:
    """What a model takes and gives, and its quantizable layers in graph order."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int
    producer: str
    ir_version: int
    already_quantized: bool
    quantized_ops: tuple[str, ...]
    layers: tuple[Layer, ...]
    total_params: int
    notes: tuple[str, ...]

    def layer(self, name: str) -> Layer:
        """Return the layer named `name` (an ONNX node name)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ModelError(f"the model has no quantizable layer named '{name}'")

    @property
    def quantizable_layers(self) -> tuple[Layer, ...]:
        """The layers with static weights (those a config can quantize)."""
        return tuple(layer for layer in self.layers if layer.weights)


@dataclass(frozen=True)
class PreparedModel:
    """A model in canonical form (see `prepare_model`), its inventory, and what preparing changed."""

    model: onnx.ModelProto
    info: ModelInfo
    notes: tuple[str, ...]


def load_model(source: bytes | str | os.PathLike, *, max_bytes: int = MAX_MODEL_BYTES) -> onnx.ModelProto:
    """Parse an untrusted ONNX model from bytes or a path, refusing anything that is not a self-contained model.

    Notes
    -----
    External data is refused without opening the file it names: an uploaded model could point at any path on
    the server; the graph, its subgraphs, model-local functions and training graphs are all searched.
    Corrupt, truncated and oversize input, an empty graph (no nodes or no outputs) and a tensor whose
    stored data does not hold what its dims declare raise a one-line `ModelError` naming the problem.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, size = "the uploaded model", len(source)
    else:
        path = Path(source)
        label = f"'{path.name}'"
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        size = path.stat().st_size
    _check_size(size, max_bytes, label)
    if size == 0:
        raise ModelError(f"{label} is empty: expected an ONNX model (.onnx)")
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            model = onnx.ModelProto()
            model.ParseFromString(bytes(source))
        else:
            model = onnx_file.parse_model_file(path)
    except (DecodeError, RuntimeError, ValueError, EOFError) as err:
        raise ModelError(f"{label} is not a valid ONNX model (corrupt or truncated file: {one_line(err)})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelError(f"{label} is not an ONNX model (it has no ir_version, graph or opset): "
                         "expected a file saved with onnx.save or exported by a framework")
    if len(model.graph.node) == 0 or len(model.graph.output) == 0:
        missing = " and no ".join(part for part, count in (("nodes", len(model.graph.node)),
                                                           ("outputs", len(model.graph.output))) if count == 0)
        raise ModelError(f"{label} has an empty graph (no {missing}): expected a model with at least one node "
                         "and one output")
    refuse_external_data(model)
    refuse_lying_headers(model)
    check_structure(model, label)
    return model


def prepare_model(model: onnx.ModelProto) -> PreparedModel:
    """Return the canonical form the rest of the core works on; the input model is not changed.

    Canonical form: opset from 13 to the newest onnxruntime runs (onnx.version_converter), an IR version
    onnxruntime reads, initializers not among the graph inputs, weights of quantizable layers in initializers
    (Constant nodes moved, names kept), every node named (unnamed ones get "{op_type}_{index}"), and shape
    inference run so intermediate tensors carry value_info. A quantizable layer's weight or bias holding NaN or
    Inf is refused here, named (calibration would otherwise only see NaN activations downstream).
    """
    refuse_external_data(model)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    notes: list[str] = []
    prepared = _convert_opset(prepared, notes)
    if prepared.ir_version > MAX_RUNTIME_IR_VERSION:
        notes.append(f"IR version lowered from {prepared.ir_version} to {MAX_RUNTIME_IR_VERSION} "
                     "(the newest onnxruntime reads)")
        prepared.ir_version = MAX_RUNTIME_IR_VERSION
    initializer_names = {tensor.name for tensor in prepared.graph.initializer}
    as_inputs = [value for value in prepared.graph.input if value.name in initializer_names]
    if as_inputs:
        kept = [value for value in prepared.graph.input if value.name not in initializer_names]
        del prepared.graph.input[:]
        prepared.graph.input.extend(kept)
        prepared.ir_version = max(prepared.ir_version, 4)  # IR >= 4 lets initializers stay out of the inputs
        notes.append(f"removed {len(as_inputs)} initializer(s) from the graph inputs (they are weights, "
                     "not inputs to feed)")
    moved = _constant_weights_to_initializers(prepared.graph)
    if moved:
        notes.append(f"moved {len(moved)} Constant-node weight(s) into initializers: {', '.join(moved)}")
    named = _name_nodes(prepared.graph)
    if named:
        notes.append(f"named {len(named)} unnamed node(s) after their op type and position in the graph: "
                     f"{', '.join(named)}")
    refuse_non_finite_weights(prepared.graph, _LAYER_OPS)
    inference_note = _infer_shapes(prepared)
    if inference_note:
        notes.append(inference_note)
    return PreparedModel(model=prepared, info=inspect_model(prepared), notes=tuple(notes))


def inspect_model(model: onnx.ModelProto) -> ModelInfo:
    """List a model's inputs, outputs and quantizable layers, reading tensor headers only."""
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    views = _node_views(graph)
    constants = {view.outputs[0]: node for view, node in zip(views, graph.node)
                 if view.op_type == "Constant" and view.outputs and _constant_tensor(node) is not None}
    nested = [inner for view, node in zip(views, graph.node) if view.has_subgraph for inner in subgraph_nodes(node)]
    quantized = sorted({op for op in (*(view.op_type for view in views), *(node.op_type for node in nested))
                        if _is_quantized_op(op)})
    dynamic = _input_dependent_tensors(graph, views, initializers)
    dequantized = {output for view in views if view.op_type == "DequantizeLinear" for output in view.outputs}

    def ref(name: str) -> WeightRef | None:
        if name in initializers:
            tensor, source = initializers[name], "initializer"
        elif name in constants:
            tensor, source = _constant_tensor(constants[name]), "constant"
        else:
            return None
        return WeightRef(name, tuple(int(d) for d in tensor.dims), _dtype_name(tensor.data_type), source)

    layers = [layer for layer in (_layer(view, ref, dynamic, dequantized) for view in views if view.op_type in
                                  _LAYER_OPS) if layer is not None]

    notes = []
    if quantized:
        notes.append(f"the model is already quantized ({', '.join(quantized)}): its quantized ops are not "
                     "offered for quantization")
    runtime = [layer.name for layer in layers if layer.note == _RUNTIME_WEIGHT_NOTE]
    if runtime:
        notes.append(f"{len(runtime)} layer(s) compute their weights at run time and cannot be quantized "
                     f"as static weights: {', '.join(runtime)}")
    if nested:
        notes.append(f"{len(nested)} node(s) inside If/Loop/Scan subgraphs are not listed as layers "
                     "(only top-level layers are)")
    if not any(layer.weights for layer in layers):
        notes.append("no quantizable layers found (Conv, ConvTranspose, Gemm, MatMul with a constant operand, "
                     "Gather over an embedding table, LSTM/GRU/RNN)")
    constant_params = sum(ref.size for layer in layers for ref in (*layer.weights, layer.bias)
                          if ref is not None and ref.source == "constant")
    total_params = sum(math.prod(tensor.dims) for tensor in graph.initializer) + constant_params
    return ModelInfo(
        inputs=tuple(_tensor_info(value) for value in graph.input if value.name not in initializers),
        outputs=tuple(_tensor_info(value) for value in graph.output),
        opset=_default_opset(model),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        ir_version=int(model.ir_version),
        already_quantized=bool(quantized),
        quantized_ops=tuple(quantized),
        layers=tuple(layers),
        total_params=int(total_params),
        notes=tuple(notes),
    )


def weight_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Return the value of the initializer or Constant-node output `name` as a numpy array."""
    tensor = next((tensor for tensor in model.graph.initializer if tensor.name == name), None)
    if tensor is None:
        tensor = next((_constant_tensor(node) for node in model.graph.node
                       if node.op_type == "Constant" and node.output and node.output[0] == name), None)
    if tensor is None:
        raise ModelError(f"the model has no initializer or Constant named '{name}'")
    refuse_external_tensor(tensor, name)
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError) as err:  # e.g. raw_data shorter than its dims say
        raise ModelError(f"tensor '{name}' is corrupt: its data does not match its shape "
                         f"{tuple(tensor.dims)} ({one_line(err)})") from None
    refuse_non_finite(array, f"weight '{name}'")
    return array


def node_names(graph: onnx.GraphProto) -> tuple[str, ...]:
    """Return a unique name for each top-level node: its own, or "{op_type}_{index}" when it has none.

    A repeated name gets a "_{k}" suffix so that layers can be told apart; `prepare_model` writes these names
    into the graph, so the prepared model and this inventory agree.
    """
    return tuple(view.name for view in _node_views(graph))


class _NodeView(NamedTuple):
    """What the inventory reads of a node, copied once out of the protobuf (whose field access is slow)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    has_subgraph: bool


def _node_views(graph: onnx.GraphProto) -> list[_NodeView]:
    raw = [(node.name, node.op_type, node.domain) for node in graph.node]
    taken = {name for name, _, _ in raw if name}
    seen: set[str] = set()
    views = []
    for index, ((own_name, op_type, domain), node) in enumerate(zip(raw, graph.node)):
        name = own_name or f"{op_type}_{index}"
        if not own_name:
            while name in taken:
                name += "_"
        if name in seen:
            suffix = 1
            while f"{name}_{suffix}" in seen or f"{name}_{suffix}" in taken:
                suffix += 1
            name = f"{name}_{suffix}"
        seen.add(name)
        # Only control-flow ops and custom-domain ops can carry graph attributes; skip reading the rest's.
        has_subgraph = (op_type in _SUBGRAPH_OPS or domain not in ("", "ai.onnx")) and any(
            attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attribute in node.attribute)
        views.append(_NodeView(name, op_type, tuple(node.input), tuple(node.output), has_subgraph))
    return views


def _layer(view: _NodeView, ref, dynamic: set[str], dequantized: set[str]) -> Layer | None:
    op, name, inputs, outputs = view.op_type, view.name, view.inputs, view.outputs
    bias = None
    if op in _WEIGHT_INPUTS:
        positions, bias_position = _WEIGHT_INPUTS[op]
        candidates = [inputs[i] if i < len(inputs) else "" for i in positions]
        if bias_position < len(inputs) and inputs[bias_position]:
            bias = ref(inputs[bias_position])
    elif op == "MatMul" and len(inputs) == 2:
        # The weight is the static operand; two activations (attention scores) make no layer.
        activation, weight = inputs
        if ref(weight) is None and (ref(activation) is not None or weight in dynamic):
            activation, weight = weight, activation
        if weight in dynamic:
            return None
        candidates = [weight]
    elif op == "Gather" and len(inputs) == 2:
        table = ref(inputs[0])
        if table is None or len(table.shape) < 2:
            return None
        candidates = [inputs[0]]
    else:
        return None
    weights = [ref(candidate) for candidate in candidates if candidate]
    note = ""
    if not weights or any(weight is None for weight in weights):
        if any(candidate in dequantized for candidate in candidates):
            note = _QUANTIZED_WEIGHT_NOTE
        elif any(candidate in dynamic for candidate in candidates if candidate):
            return None  # the "weight" is an activation: nothing to quantize statically
        else:
            note = _RUNTIME_WEIGHT_NOTE
        weights, bias = [], None
    params = sum(weight.size for weight in weights) + (bias.size if bias is not None else 0)
    return Layer(name=name, op_type=op, weights=tuple(weights), inputs=inputs, outputs=outputs, params=params,
                 note=note, bias=bias)


def _input_dependent_tensors(graph: onnx.GraphProto, views: list[_NodeView], initializers) -> set[str]:
    """Names of tensors whose value depends on a graph input (activations), in one pass over the sorted graph."""
    dynamic = {value.name for value in graph.input if value.name not in initializers}
    for view in views:
        if view.has_subgraph or view.op_type in _SUBGRAPH_OPS or any(name in dynamic for name in view.inputs):
            dynamic.update(view.outputs)
    dynamic.discard("")
    return dynamic


def _convert_opset(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Bring the default-domain opset into [MIN_PREPARED_OPSET, MAX_RUNTIME_OPSET] with onnx.version_converter."""
    opset = _default_opset(model)
    if opset == 0:  # no default-domain opset (custom ops only): nothing to convert
        return model
    target = min(max(opset, MIN_PREPARED_OPSET), MAX_RUNTIME_OPSET)
    if target == opset:
        return model
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as err:  # noqa: BLE001 - the converter raises bare RuntimeErrors from C++
        why = ("needed for per-channel quantization" if target > opset
               else f"onnxruntime runs opsets up to {MAX_RUNTIME_OPSET}")
        raise ModelError(f"cannot convert the model from opset {opset} to {target} ({why}): {one_line(err)}; "
                         f"export it with an opset from {MIN_PREPARED_OPSET} to {MAX_RUNTIME_OPSET}") from None
    if target > opset:
        converted.ir_version = max(converted.ir_version, 7)  # opset 13 needs IR version 7
        notes.append(f"converted from opset {opset} to {target} (per-channel quantization needs opset >= 13)")
    else:
        notes.append(f"converted from opset {opset} down to {target} (the newest onnxruntime runs)")
    return converted


def _constant_weights_to_initializers(graph: onnx.GraphProto) -> list[str]:
    """Move Constant nodes that hold a quantizable layer's weight or bias into initializers, keeping names."""
    initializers = {tensor.name for tensor in graph.initializer}
    views = _node_views(graph)
    constants = {view.outputs[0]: node for view, node in zip(views, graph.node)
                 if view.op_type == "Constant" and view.outputs and _constant_tensor(node) is not None}
    if not constants:
        return []
    dynamic = _input_dependent_tensors(graph, views, initializers)

    def ref(name):
        if name in constants:
            tensor = _constant_tensor(constants[name])
            return WeightRef(name, tuple(tensor.dims), _dtype_name(tensor.data_type), "constant")
        if name in initializers:
            return WeightRef(name, (), "", "initializer")
        return None

    info_layers = [layer for layer in (_layer(view, ref, dynamic, set()) for view in views
                                       if view.op_type in _LAYER_OPS) if layer is not None]
    wanted = {weight.name for layer in info_layers for weight in (*layer.weights, layer.bias)
              if weight is not None and weight.source == "constant"}
    moved = []
    kept_nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in wanted:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(_constant_tensor(node))
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved.append(tensor.name)
        else:
            kept_nodes.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(kept_nodes)
    return moved


def _name_nodes(graph: onnx.GraphProto) -> list[str]:
    """Name every unnamed node as `node_names` does; return the names given."""
    names = node_names(graph)
    given = []
    for node, name in zip(graph.node, names):
        if not node.name:
            given.append(name)
        node.name = name
    return given


def _infer_shapes(model: onnx.ModelProto) -> str:
    """Run ONNX shape inference on a copy without the large tensors; copy the inferred value_info back."""
    skeleton = model_skeleton(model)
    try:
        inferred = shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception as err:  # noqa: BLE001 - inference is best effort; the model still runs without it
        return f"shape inference failed, intermediate shapes unknown: {one_line(err)}"
    known = {value.name for value in model.graph.input} | {value.name for value in model.graph.output}
    known |= {tensor.name for tensor in model.graph.initializer}
    del model.graph.value_info[:]
    model.graph.value_info.extend(value for value in inferred.graph.value_info if value.name not in known)
    return ""


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a Constant node holds in its `value` attribute (other forms hold no weights)."""
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.HasField("t"):
            return attribute.t
    return None


def _is_quantized_op(op_type: str) -> bool:
    return op_type in _QUANTIZED_OPS or op_type.startswith("QLinear")


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorInfo(value.name, (), kind.removesuffix("_type") if kind else "unknown")
    tensor_type = value.type.tensor_type
    shape: tuple[int | str | None, ...] = ()
    if tensor_type.HasField("shape"):
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None)
                      for dim in tensor_type.shape.dim)
    return TensorInfo(value.name, shape, _dtype_name(tensor_type.elem_type))


@functools.lru_cache(maxsize=64)
def _dtype_name(data_type: int) -> str:
    """numpy-style name of an ONNX element type: "float32", "int64", "bfloat16", "float8e4m3fn"."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).name
    except (KeyError, TypeError, ValueError):
        try:
            return onnx.TensorProto.DataType.Name(data_type).lower()
        except ValueError:
            return f"type{data_type}"


def _check_size(size: int, max_bytes: int, label: str) -> None:
    if size > max_bytes:
        raise ModelError(f"{label} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit")

"""The graph rewriting behind the simulation session: fake-quant subgraphs and weights as inputs.

`build_simulation_model` turns a model into one whose quantizable weights and fake-quant parameters
are graph inputs (an `If` chain per activation, or one mode's nodes inline); `reorder_weight_inputs`
lets onnxruntime optimize with constant weights and feeds them in its reordered (NCHWc) layout; and
`fake_quant_in_blocked_layout` drops the layout copies around each fake-quant. It also holds what
these share with the sessions built on them (`ActivationMode`, `WeightFeed`, the
session options), so that simulate.py and simulation_suffix.py both import from here, never each other.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from quant_core.errors import ModelError
from quant_core.numerics.formats import FormatKind
from quant_core.model.layers import LayerSpec
from quant_core.model.runtime import free_after_run, model_opset, release_free_memory, session_options
from quant_core.model.onnx_graph import names_read, subgraph_nodes

_PREFIX = "qlab_sim"
# Minimum default-domain opset for each Cast round trip (bfloat16: 13, float8: 19).
CAST_OPSET = {FormatKind.FP16: 1, FormatKind.BF16: 13, FormatKind.FP8_E4M3FN: 19, FormatKind.FP8_E5M2: 19}


class ActivationMode(IntEnum):
    """Which fake-quant branch an activation takes; the value is what the session is fed."""

    OFF = 0
    INTEGER = 1
    FP16 = 2
    BF16 = 3
    FP8_E4M3FN = 4
    FP8_E5M2 = 5
    UINT8 = 6
    INT8 = 7


_CAST_TYPE = {ActivationMode.FP16: TensorProto.FLOAT16, ActivationMode.BF16: TensorProto.BFLOAT16,
              ActivationMode.FP8_E4M3FN: TensorProto.FLOAT8E4M3FN, ActivationMode.FP8_E5M2: TensorProto.FLOAT8E5M2}


def input_name(index: int, what: str) -> str:
    return f"{_PREFIX}.a{index}.{what}"


def cast_opset(model: onnx.ModelProto) -> int:
    """Return the opset the simulation model can use: 19 (float8 Cast) when that changes no node's meaning.

    Raising the opset is safe when every operator of the graph has the same schema version under
    both opsets; otherwise (e.g. ReduceMean changed in 18) the model keeps its own opset.
    """
    opset = model_opset(model)
    target = CAST_OPSET[FormatKind.FP8_E4M3FN]
    if opset >= target:
        return opset
    try:
        same = all(onnx.defs.get_schema(node.op_type, opset).since_version
                   == onnx.defs.get_schema(node.op_type, target).since_version
                   for node in model.graph.node if node.domain in ("", "ai.onnx"))
    except onnx.defs.SchemaError:
        return opset
    return target if same else opset


# onnxruntime's BASIC level quantizes a float Conv / Gemm weight whose activation comes from
# DequantizeLinear (per-tensor int8): not what a fake-quant simulation means, so it is switched off.
# It also folds a BatchNormalization or a Mul by a constant that follows a Conv into the Conv's weight:
# with the weight fed as an input (a config's), it cannot, so a session whose weights are constants (the
# reference simulator, the traced build of `reorder_weight_inputs`) must not either, or it would compute
# another function (and the traced weight would not be a reordering of the layer's own).
_DISABLED_OPTIMIZERS = ["WeightBiasQuantization", "ConvBNFusion", "ConvMulFusion"]


def simulation_session(model: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """An InferenceSession that computes what the model's Q/DQ nodes say: no QDQ fusions into integer
    kernels (session.enable_quant_qdq=0), no weight quantization (`_DISABLED_OPTIMIZERS`).

    Nothing stays allocated between runs (`runtime.free_after_run`): an engine holds several sessions (the
    simulation's variants, the per-layer error session, suffixes), each of which would otherwise keep its
    largest run's tensors.
    """
    options.add_session_config_entry("session.enable_quant_qdq", "0")
    free_after_run(options)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=_DISABLED_OPTIMIZERS)
    finally:
        release_free_memory()  # the build's garbage (the caller's rewritten graph goes with it)


def _scalar_input(name: str, elem_type: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [])


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def _mode_nodes(index: int, x: str, out: str, mode: ActivationMode) -> list[onnx.NodeProto]:
    """Nodes computing out = fake_quant(x) in one mode (the If branches, or inline in a specialized session)."""
    p = f"{_PREFIX}.a{index}.m{int(mode)}"
    scale, lo, hi = input_name(index, "scale"), input_name(index, "lo"), input_name(index, "hi")
    if mode == ActivationMode.OFF:
        return [helper.make_node("Identity", [x], [out])]
    if mode in (ActivationMode.UINT8, ActivationMode.INT8):
        zero_point = input_name(index, "zp_u8" if mode == ActivationMode.UINT8 else "zp_i8")
        return [helper.make_node("QuantizeLinear", [x, scale, zero_point], [f"{p}.q"]),
                helper.make_node("DequantizeLinear", [f"{p}.q", scale, zero_point], [out])]
    if mode == ActivationMode.INTEGER:
        return [helper.make_node("Div", [x, scale], [f"{p}.div"]),
                helper.make_node("Round", [f"{p}.div"], [f"{p}.round"]),
                helper.make_node("Clip", [f"{p}.round", lo, hi], [f"{p}.clip"]),
                helper.make_node("Mul", [f"{p}.clip", scale], [out])]
    return [helper.make_node("Div", [x, scale], [f"{p}.div"]),
            helper.make_node("Cast", [f"{p}.div"], [f"{p}.cast"], to=_CAST_TYPE[mode]),
            helper.make_node("Cast", [f"{p}.cast"], [f"{p}.back"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}.back", scale], [out])]


def _fake_quant_nodes(index: int, x: str, y: str, modes: frozenset[ActivationMode]) -> list[onnx.NodeProto]:
    """Nodes computing y = fake_quant(x) for the mode fed at run time; OFF is one If and an Identity."""
    p = f"{_PREFIX}.a{index}"
    mode = input_name(index, "mode")

    def branch(m: ActivationMode) -> onnx.GraphProto:
        out = f"{p}.{m.name.lower()}_out"
        return _branch(f"{p}.{m.name.lower()}", _mode_nodes(index, x, out, m), out)

    # Build the chain from the innermost else-branch outwards: OFF ? x : UINT8 ? q/dq : INT8 ? ... .
    order = [ActivationMode.OFF, ActivationMode.UINT8, ActivationMode.INT8, ActivationMode.INTEGER]
    order += [m for m in (ActivationMode.FP16, ActivationMode.BF16, ActivationMode.FP8_E4M3FN,
                          ActivationMode.FP8_E5M2) if m in modes]
    chain = [(m, branch(m)) for m in order]
    # The last branch is the else of the previous test: no test needed for it.
    else_graph = chain[-1][1]
    for depth in range(len(chain) - 2, -1, -1):
        m, then_graph = chain[depth]
        const, cond, out = f"{p}.is{m.value}.k", f"{p}.is{m.value}", f"{p}.sel{m.value}"
        nodes = [helper.make_node("Constant", [], [const], value=numpy_helper.from_array(
                     np.array(int(m), dtype=np.int64), const)),
                 helper.make_node("Equal", [mode, const], [cond]),
                 helper.make_node("If", [cond], [out if depth else y], then_branch=then_graph, else_branch=else_graph)]
        if depth == 0:
            return nodes
        else_graph = _branch(f"{p}.else{m.value}", nodes, out)
    raise AssertionError("unreachable: the chain has at least two branches")


# The scalar inputs each mode reads (a specialized session declares only those).
_MODE_INPUTS = {ActivationMode.UINT8: ("scale", "zp_u8"), ActivationMode.INT8: ("scale", "zp_i8"),
                ActivationMode.INTEGER: ("scale", "lo", "hi")}
_INPUT_TYPES = {"mode": TensorProto.INT64, "scale": TensorProto.FLOAT, "lo": TensorProto.FLOAT,
                "hi": TensorProto.FLOAT, "zp_u8": TensorProto.UINT8, "zp_i8": TensorProto.INT8}


def build_simulation_model(model: onnx.ModelProto, specs: tuple[LayerSpec, ...], modes: frozenset[ActivationMode],
                           *, weights_as_inputs: bool = True, layer_outputs: bool = False,
                           pattern: Mapping[int, ActivationMode] | None = None, extra_outputs: tuple[str, ...] = ()
                           ) -> tuple[onnx.ModelProto, dict[str, str], dict[str, int]]:
    """Return the simulation model, layer -> weight input name, layer -> activation index.

    weights_as_inputs=False keeps the weights as initializers (for `reorder_weight_inputs`).
    layer_outputs=True also makes every layer's output a graph output; `extra_outputs` names more
    intermediate (float) tensors to output.
    pattern (activation index -> mode, absent = OFF) specializes the model: each activation gets its
    mode's nodes inline instead of the `If` chain, and OFF activations no nodes at all.
    """
    sim = onnx.ModelProto()
    sim.CopyFrom(model)
    opset = cast_opset(model)
    for entry in sim.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = opset
    if opset >= 19 and sim.ir_version < 9:
        sim.ir_version = 9  # float8 types need IR version 9
    graph = sim.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes_by_name = {node.name: node for node in graph.node}
    weight_inputs, activation_index = {}, {}
    new_inputs, fq_nodes_for = [], {}
    for i, spec in enumerate(specs):
        node = nodes_by_name.get(spec.name)
        if node is None:
            raise ModelError(f"layer {spec.name!r} is not a node of the model")
        if weights_as_inputs and spec.weight is not None and spec.weight in initializers:
            init = initializers[spec.weight]
            name = f"{_PREFIX}.w{i}"
            node.input[list(node.input).index(spec.weight)] = name
            new_inputs.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
            weight_inputs[spec.name] = name
        if spec.activation_input and pattern is not None:
            activation_index[spec.name] = i
            mode = pattern.get(i, ActivationMode.OFF)
            if mode != ActivationMode.OFF:
                y = f"{_PREFIX}.a{i}.out"
                node.input[list(node.input).index(spec.activation_input)] = y
                wanted = _MODE_INPUTS.get(mode, ("scale",))
                new_inputs += [_scalar_input(input_name(i, what), _INPUT_TYPES[what]) for what in wanted]
                fq_nodes_for[spec.name] = _mode_nodes(i, spec.activation_input, y, mode)
        elif spec.activation_input:
            y = f"{_PREFIX}.a{i}.out"
            node.input[list(node.input).index(spec.activation_input)] = y
            new_inputs += [_scalar_input(input_name(i, "mode"), TensorProto.INT64),
                           _scalar_input(input_name(i, "scale"), TensorProto.FLOAT),
                           _scalar_input(input_name(i, "lo"), TensorProto.FLOAT),
                           _scalar_input(input_name(i, "hi"), TensorProto.FLOAT),
                           _scalar_input(input_name(i, "zp_u8"), TensorProto.UINT8),
                           _scalar_input(input_name(i, "zp_i8"), TensorProto.INT8)]
            fq_nodes_for[spec.name] = _fake_quant_nodes(i, spec.activation_input, y, modes)
            activation_index[spec.name] = i
    # Insert each fake-quant subgraph right before its layer so the node list stays topologically sorted.
    ordered = []
    for node in graph.node:
        ordered.extend(fq_nodes_for.get(node.name, ()))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    used = names_read(graph)  # If / Loop bodies read initializers of this graph too
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(new_inputs)
    existing_outputs = {out.name for out in graph.output}
    declared = {v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input)}
    wanted = [spec.output for spec in specs if layer_outputs and spec.output] + list(extra_outputs)
    for name in wanted:
        if name not in existing_outputs:
            graph.output.append(helper.make_tensor_value_info(name, declared.get(name) or TensorProto.FLOAT, None))
            existing_outputs.add(name)
    return sim, weight_inputs, activation_index


def _copy_model(model: onnx.ModelProto, initializer) -> onnx.ModelProto:
    """A copy of `model` whose main-graph initializers are `initializer(tensor)` (a TensorProto: the tensor
    itself, copied, or another), every other field copied: a weight left out is never copied at all."""
    copied = onnx.ModelProto()
    for descriptor, value in model.ListFields():
        if descriptor.name != "graph":
            _copy_field(copied, descriptor.name, value)
    graph = copied.graph
    for descriptor, value in model.graph.ListFields():
        if descriptor.name != "initializer":
            _copy_field(graph, descriptor.name, value)
    graph.initializer.extend(initializer(tensor) for tensor in model.graph.initializer)
    return copied


def _copy_field(message, name: str, value) -> None:
    if hasattr(value, "extend"):  # a repeated field
        getattr(message, name).extend(value)
    elif hasattr(value, "CopyFrom"):  # a message
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def _data_less(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)


def without_weight_data(model: onnx.ModelProto, specs: tuple[LayerSpec, ...]) -> onnx.ModelProto:
    """A copy of `model` whose layers' float32 weights hold no data (name, type and shape only).

    What the sessions built on the simulation graph start from: each such weight becomes a graph input
    or is replaced by markers (`reorder_weight_inputs`), so a copy of its data would only be dropped
    again, after costing its size (90 MB on a sentence transformer) at every session built. A weight
    that stays a constant (read by another node too) gets its data back from `with_weight_data`.
    """
    weights = {spec.weight for spec in specs if spec.weight}
    return _copy_model(model, lambda tensor: _data_less(tensor)
                       if tensor.name in weights and tensor.data_type == TensorProto.FLOAT else tensor)


def _holds_data(tensor: onnx.TensorProto) -> bool:
    return (tensor.HasField("raw_data") or tensor.data_location == TensorProto.EXTERNAL
            or any(len(getattr(tensor, field)) for field in ("float_data", "int32_data", "string_data", "int64_data",
                                                              "double_data", "uint64_data"))
            or int(np.prod(tensor.dims, dtype=np.int64)) == 0)


def with_weight_data(model: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """Give back, in place, the data of every initializer `without_weight_data` emptied that `model` still holds."""
    originals = {tensor.name: tensor for tensor in source.graph.initializer}
    for tensor in model.graph.initializer:
        if not _holds_data(tensor) and tensor.name in originals:
            tensor.CopyFrom(originals[tensor.name])
    return model


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads, its subgraphs' reads included."""
    return {name for name in node.input if name} | {name for inner in subgraph_nodes(node) for name in inner.input if name}


def own_weight_copies(model: onnx.ModelProto, specs: tuple[LayerSpec, ...], *, data: bool = True
                      ) -> tuple[onnx.ModelProto, tuple[LayerSpec, ...]]:
    """Give each layer whose weight another node reads too its own copy of it; return (model, specs).

    The rule (docs/engine.md, "A weight other nodes read too"): a config quantizes a layer's weight for that
    layer only. Every other reader of the initializer (a ReduceSum, a Shape, a Transpose, another layer, a
    subgraph, a model output) keeps the FP32 weight, as a constant. The layer reads `qlab_sim.own<i>` (i: its
    index in `specs`), and its spec says so; each weight is then read by its layer alone, so feeding it or
    tracing it with markers (`reorder_weight_inputs`) changes that layer and nothing else.

    When no weight is shared, `model` and `specs` themselves are returned: nothing is copied. Otherwise a
    copy; with `data=False`, its layers' float32 weights hold no data (as `without_weight_data`: the sessions
    built on it feed or trace them) but for the originals the other readers keep.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in _reads(node):
            readers[name] = readers.get(name, 0) + 1
    for value in model.graph.output:
        readers[value.name] = readers.get(value.name, 0) + 1
    shared = [i for i, spec in enumerate(specs) if spec.weight in initializers and readers.get(spec.weight, 0) > 1]
    if not shared:
        return model, specs
    originals = {specs[i].weight for i in shared}
    layer_weights = {spec.weight for spec in specs if spec.weight}

    def emptied(tensor: onnx.TensorProto) -> onnx.TensorProto:
        if data or tensor.data_type != TensorProto.FLOAT:
            return tensor
        return _data_less(tensor)

    copied = _copy_model(model, lambda tensor: emptied(tensor)
                         if tensor.name in layer_weights and tensor.name not in originals else tensor)
    nodes = {node.name: node for node in copied.graph.node}
    owned = list(specs)
    for i in shared:
        spec = specs[i]
        own = onnx.TensorProto()
        own.CopyFrom(emptied(initializers[spec.weight]))
        own.name = f"{_PREFIX}.own{i}"
        copied.graph.initializer.append(own)
        node = nodes[spec.name]
        node.input[list(node.input).index(spec.weight)] = own.name
        owned[i] = replace(spec, weight=own.name)
    used = names_read(copied.graph)  # an original only layers read is read no more
    kept = [init for init in copied.graph.initializer if init.name in used]
    del copied.graph.initializer[:]
    copied.graph.initializer.extend(kept)
    return copied, tuple(owned)


def _foldable_readers(graph: onnx.GraphProto, weights) -> bool:
    """True when a node reading one of `weights` reads only constants (initializers, Constant nodes and what
    is computed from them alone): onnxruntime would fold it, and with it the weight's tracing markers."""
    inputs = {value.name for value in graph.input}
    constant = {init.name for init in graph.initializer if init.name not in inputs}
    weights = set(weights)
    if weights & {value.name for value in graph.output}:
        return True  # a model output: the markers themselves would be its value
    for node in graph.node:  # in topological order
        reads = _reads(node)
        if reads <= constant:
            if reads & weights:
                return True
            constant.update(node.output)
    return False


@dataclass(frozen=True)
class WeightFeed:
    """How one layer's weight reaches the session: graph input `name`, laid out by `gather`.

    `gather` holds, for every element of the input, the flat index of the weight element it
    takes, or -1 for padding (zero): onnxruntime's NCHWc layout reorders and pads conv filters.
    """

    name: str
    shape: tuple[int, ...]
    gather: np.ndarray | None = None

    def value(self, weight: np.ndarray) -> np.ndarray:
        if self.gather is None:
            return weight
        flat = np.append(weight.reshape(-1), np.float32(0.0))
        return flat[self.gather].reshape(self.shape)


# Marker k is the float32 whose bit pattern is _MARKER_BITS + k: distinct, positive, finite values from
# 2**22 up, told apart by their bits (not as integers, which float32 holds only up to 2**24). They start
# high so that a model's own small constants (3.0 and 6.0 of a hard-swish, folded into initializers by
# onnxruntime) are not taken for a weight's markers.
_MARKER_BITS = int(np.array(2.0 ** 22, dtype=np.float32).view(np.uint32))
# Models of up to this many weight values (64 MB of float32) are traced. Tracing holds the weights' markers
# two or three times while onnxruntime optimizes (the marked model, its bytes, the optimized model): on
# MiniLM (22.7 M values) it made a config with its errors 1.4x faster (3.55x -> 2.61x a forward) but the
# first view's peak memory 2.2x higher (594 -> 1336 MiB), so larger models keep the plain layout.
_MAX_MARKERS = 1 << 24


def _optimized(model: onnx.ModelProto, threads: int) -> onnx.ModelProto:
    """Return onnxruntime's fully optimized version of `model` (written to a private temporary file).

    The session only writes the graph, never runs: no prepacked copies of its weights (the written graph
    is the same: prepacking is a kernel's private copy, not a graph rewrite).
    """
    options = session_options(threads)
    options.add_session_config_entry("session.disable_prepacking", "1")
    with tempfile.TemporaryDirectory() as directory:
        options.optimized_model_filepath = os.path.join(directory, "optimized.onnx")
        simulation_session(model.SerializeToString(), options)
        return onnx.load(options.optimized_model_filepath)


def reorder_weight_inputs(model: onnx.ModelProto, specs: tuple[LayerSpec, ...], threads: int
                           ) -> tuple[onnx.ModelProto, dict[str, list[WeightFeed]]] | None:
    """Let onnxruntime optimize with constant weights, then turn its (reordered) weights into inputs.

    onnxruntime's fastest CPU convolutions (NCHWc) need constant filters, which it reorders at load
    time. Each weight is replaced by its own run of markers (`_MARKER_BITS`), the model optimized once, and every
    optimized initializer made only of one weight's markers (and zero padding) becomes a graph input with
    the gather that lays a weight out the same way. Returns None when a weight cannot be traced: transformed
    (not only reordered), or read by a node onnxruntime would fold into a constant (`_foldable_readers`).
    """
    initializers = {init.name: init for init in model.graph.initializer}
    if _foldable_readers(model.graph, {spec.weight for spec in specs if spec.weight in initializers}):
        return None  # e.g. ReduceSum(weight): see `own_weight_copies`, which gives such a layer its own copy
    markers, offset = {}, 0  # weight -> (bit pattern of its first marker, size)
    for spec in specs:
        init = initializers.get(spec.weight) if spec.weight else None
        if init is None or init.data_type != TensorProto.FLOAT or spec.weight in markers:
            continue
        size = int(np.prod(init.dims, dtype=np.int64))
        if offset + size > _MAX_MARKERS:
            return None  # before any copy: a model this large cannot be traced
        markers[spec.weight] = (_MARKER_BITS + offset, size)
        offset += size

    def marker(init: onnx.TensorProto) -> onnx.TensorProto:
        if init.name not in markers:
            return init
        first, size = markers[init.name]
        values = np.arange(first, first + size, dtype=np.uint32).view(np.float32).reshape(tuple(init.dims))
        return numpy_helper.from_array(values, init.name)

    # The model with each weight's markers in place of its values (which are never copied: `model` may
    # hold none, `without_weight_data`).
    marked = _copy_model(model, marker)
    try:
        optimized = _optimized(marked, threads)
    except Exception:  # onnxruntime's own exception types; the caller falls back to the plain layout
        return None
    feeds: dict[str, list[WeightFeed]] = {weight: [] for weight in markers}
    replaced = set()
    for init in optimized.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init).reshape(-1)
        padding = values == 0
        bits = values.view(np.uint32).astype(np.int64)  # a negative value's sign bit puts it above every run
        nonzero = bits[~padding]
        for weight, (first, size) in markers.items():
            if nonzero.size == 0 or nonzero.min() < first or nonzero.max() > first + size - 1:
                continue
            index = nonzero - first
            # A permutation of 0..size-1 (counted, not sorted: numpy's vectorized sort crashed under an
            # emulated Haswell CPU in CI, and counting is linear).
            if nonzero.size != size or not np.all(np.bincount(index, minlength=size) == 1):
                return None  # the weight was transformed, not only reordered: cannot feed it
            gather = np.where(padding, size, bits - first)
            if tuple(init.dims) == tuple(initializers[weight].dims) and np.array_equal(gather, np.arange(size)):
                gather = None  # kept as it is (a MatMul's weight): fed without a copy or an 8-byte index per value
            feeds[weight].append(WeightFeed(init.name, tuple(init.dims), gather))
            replaced.add(init.name)
    if any(not found for found in feeds.values()):
        return None
    kept = [init for init in optimized.graph.initializer if init.name not in replaced]
    del optimized.graph.initializer[:]
    optimized.graph.initializer.extend(kept)
    for found in feeds.values():
        for feed in found:
            optimized.graph.input.append(helper.make_tensor_value_info(feed.name, TensorProto.FLOAT, list(feed.shape)))
    return optimized, feeds


def _outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing graph (not produced inside them)."""
    reads = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            produced = {out for inner in graph.node for out in inner.output}
            produced.update(init.name for init in graph.initializer)
            for inner in graph.node:
                reads.update(name for name in inner.input if name and name not in produced)
                reads.update(name for name in _outer_reads(inner) if name not in produced)
    return reads


# Channel counts that onnxruntime's blocked (NCHWc) layout holds without padding (blocks of 8 or 16).
_UNPADDED_CHANNELS = 16


# Elementwise ops a fake-quant chain is made of (first input: the activation; the others: scalars).
_ELEMENTWISE = {"QuantizeLinear", "DequantizeLinear", "Div", "Mul", "Round", "Clip", "Cast", "Identity"}


def fake_quant_in_blocked_layout(model: onnx.ModelProto) -> int:
    """Let each activation fake-quant work on onnxruntime's blocked (NCHWc) tensor; return how many.

    onnxruntime optimizes `Conv -> fake-quant -> Conv` into `Conv -> ReorderOutput -> fake-quant ->
    ReorderInput -> Conv`: two layout copies of the activation only to hand it to the fake-quant. Every
    fake-quant (an `If` of branches, or a specialized chain of Q/DQ, Div/Round/Clip/Mul, Cast nodes with
    scalar parameters) is elementwise, the same function of each value whatever the layout, so it can
    read the blocked tensor and feed the next Conv directly: the same values, without the two copies.
    Done only for a single-reader chain from the reorder to the ReorderInput, and when the channel
    count needs no padding.
    """
    graph = model.graph
    outputs = {out.name for out in graph.output}
    scalars = {value.name for value in graph.input if len(value.type.tensor_type.shape.dim) == 0}
    scalars.update(init.name for init in graph.initializer if int(np.prod(init.dims, dtype=np.int64)) == 1)
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input) | _outer_reads(node):
            readers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    attributes = lambda node: {a.name: helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731

    def elementwise(node: onnx.NodeProto, current: str) -> bool:
        if node.op_type == "If":
            return current not in node.input and len(node.output) == 1
        return (node.op_type in _ELEMENTWISE and len(node.output) == 1 and node.input[0] == current
                and all(name in scalars for name in node.input[1:] if name))

    drop, rename = [], {}
    for node in graph.node:
        if node.op_type != "ReorderOutput" or node.output[0] in outputs:
            continue
        found = attributes(node)
        if found.get("channels_last", 0) or found.get("channels", 0) % _UNPADDED_CHANNELS:
            continue
        current, chain, end = node.output[0], [], None
        while current not in outputs:
            users = readers.get(current, [])
            if len(users) != 1:
                break
            if users[0].op_type == "ReorderInput" and chain and not attributes(users[0]).get("channels_last", 0):
                end = users[0]
                break
            if not elementwise(users[0], current):
                break
            chain.append(users[0])
            current = users[0].output[0]
        source = producer.get(node.input[0])
        if end is None or source is None or len(readers.get(node.input[0], [])) != 1:
            continue
        # The blocked tensor takes the name the chain reads; the next Conv reads the chain's output.
        source.output[list(source.output).index(node.input[0])] = node.output[0]
        rename[end.output[0]] = current
        drop += [id(node), id(end)]
    if not drop:
        return 0
    kept = [node for node in graph.node if id(node) not in drop]
    for node in kept:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = rename[name]
    del graph.node[:]
    graph.node.extend(kept)
    touched = set(rename) | {out for node in kept for out in node.output}
    shapes = [value for value in graph.value_info if value.name not in touched]
    del graph.value_info[:]
    graph.value_info.extend(shapes)
    return len(drop) // 2


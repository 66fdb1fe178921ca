"""One onnxruntime session per model that simulates any quantization config.

The session is built once: the weight of every quantizable layer becomes a graph input (fed the
fake-quantized numpy weights), and every activation a quantizable layer reads passes through a
fake-quant subgraph whose parameters are graph inputs. Changing the config changes only feeds.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .config import TensorQuant
from .errors import DataError, ModelError
from .formats import FormatKind
from .qparams import qparams_from_range

_PREFIX = "qlab_sim"
# Minimum default-domain opset for each Cast round trip (bfloat16: 13, float8: 19).
_CAST_OPSET = {FormatKind.FP16: 1, FormatKind.BF16: 13, FormatKind.FP8_E4M3FN: 19, FormatKind.FP8_E5M2: 19}


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


_MODE_OF_KIND = {FormatKind.FP16: ActivationMode.FP16, FormatKind.BF16: ActivationMode.BF16,
                 FormatKind.FP8_E4M3FN: ActivationMode.FP8_E4M3FN, FormatKind.FP8_E5M2: ActivationMode.FP8_E5M2}
_CAST_TYPE = {ActivationMode.FP16: TensorProto.FLOAT16, ActivationMode.BF16: TensorProto.BFLOAT16,
              ActivationMode.FP8_E4M3FN: TensorProto.FLOAT8E4M3FN, ActivationMode.FP8_E5M2: TensorProto.FLOAT8E5M2}
_CAST_KIND = {mode: kind for kind, mode in _MODE_OF_KIND.items()}


@dataclass(frozen=True)
class ActivationQuant:
    """Fake-quant parameters of one activation input.

    UINT8 / INT8: QuantizeLinear -> DequantizeLinear (the export's own operators).
    INTEGER (any other width, or narrow range): y = Clip(Round(x / scale), qmin - zero_point,
    qmax - zero_point) * scale, which is QuantizeLinear -> DequantizeLinear bit for bit.
    Float modes: y = Cast(Cast(x, format), float32), round to nearest even with saturation.
    """

    mode: ActivationMode = ActivationMode.OFF
    scale: float = 1.0
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 255

    @classmethod
    def from_range(cls, lo: float, hi: float, tq: TensorQuant) -> ActivationQuant:
        """Return the parameters that quantize the calibrated range [lo, hi] as `tq` says."""
        fmt = tq.format
        if fmt.is_identity:
            return OFF
        if fmt.kind in _MODE_OF_KIND:
            return cls(_MODE_OF_KIND[fmt.kind], _float_scale(fmt, lo, hi))
        if not fmt.is_integer:
            raise ValueError(f"{fmt.name} cannot quantize activations: use an int/uint, fp16, bf16 or fp8 format")
        scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=tq.symmetric)
        mode = _QDQ_MODE.get(fmt.name, ActivationMode.INTEGER)
        return cls(mode, float(scale), int(zero_point), fmt.qmin, fmt.qmax)

    def feeds(self, index: int) -> dict[str, np.ndarray]:
        return {_name(index, "mode"): np.array(int(self.mode), dtype=np.int64),
                _name(index, "scale"): np.array(self.scale, dtype=np.float32),
                _name(index, "lo"): np.array(self.qmin - self.zero_point, dtype=np.float32),
                _name(index, "hi"): np.array(self.qmax - self.zero_point, dtype=np.float32),
                _name(index, "zp_u8"): np.array(self.zero_point if self.mode == ActivationMode.UINT8 else 0, np.uint8),
                _name(index, "zp_i8"): np.array(self.zero_point if self.mode == ActivationMode.INT8 else 0, np.int8)}


OFF = ActivationQuant()
_QDQ_MODE = {"uint8": ActivationMode.UINT8, "int8": ActivationMode.INT8}

def _float_scale(fmt, lo: float, hi: float) -> float:
    """fp8 activations are scaled so that amax maps onto max_finite, as fp8 weights are; fp16 / bf16 are not."""
    if fmt.kind not in (FormatKind.FP8_E4M3FN, FormatKind.FP8_E5M2):
        return 1.0
    from .floats import fp8_scale
    return float(fp8_scale(max(abs(float(lo)), abs(float(hi))), fmt))


@dataclass(frozen=True)
class SimulationOutput:
    outputs: tuple[np.ndarray, ...]
    layer_outputs: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _LayerSpec:
    name: str
    weight: str | None            # initializer name of the quantizable weight
    activation_input: str | None  # float activation tensor the layer reads
    output: str


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _name(index: int, what: str) -> str:
    return f"{_PREFIX}.a{index}.{what}"


def _weight_name(layer: str, info_layer) -> str | None:
    weight = getattr(info_layer, "weight", None)
    if weight is None:
        weights = getattr(info_layer, "weights", ()) or ()
        weight = weights[0] if weights else None
    if weight is None or isinstance(weight, str):
        return weight
    return getattr(weight, "name", None) or getattr(weight, "initializer", None)


def float_tensors(model: onnx.ModelProto) -> frozenset[str]:
    """Names of the tensors the model declares (inputs, outputs, value_info) as float32."""
    graph = model.graph
    declared = list(graph.input) + list(graph.output) + list(graph.value_info)
    return frozenset(v.name for v in declared if v.type.tensor_type.elem_type == TensorProto.FLOAT)


def layer_specs(prepared) -> tuple[_LayerSpec, ...]:
    """Return what the simulation needs from each layer of `prepared.info`.

    A layer's activation input is kept only when the model declares it float32 (after shape
    inference): integer inputs such as Gather indices are never fake-quantized.
    """
    floats = float_tensors(prepared.model)
    specs = []
    for layer in prepared.info.layers:
        outputs = tuple(getattr(layer, "outputs", ()) or ())
        activation = getattr(layer, "activation_input", None)
        output = outputs[0] if outputs and outputs[0] in floats else ""
        specs.append(_LayerSpec(layer.name, _weight_name(layer.name, layer),
                                activation if activation in floats else None, output))
    return tuple(specs)


def model_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _cast_opset(model: onnx.ModelProto) -> int:
    """Return the opset the simulation model can use: 19 (float8 Cast) when that changes no node's meaning.

    Raising the opset is safe when every operator of the graph has the same schema version under
    both opsets; otherwise (e.g. ReduceMean changed in 18) the model keeps its own opset.
    """
    opset = model_opset(model)
    target = _CAST_OPSET[FormatKind.FP8_E4M3FN]
    if opset >= target:
        return opset
    try:
        same = all(onnx.defs.get_schema(node.op_type, opset).since_version
                   == onnx.defs.get_schema(node.op_type, target).since_version
                   for node in model.graph.node if node.domain in ("", "ai.onnx"))
    except onnx.defs.SchemaError:
        return opset
    return target if same else opset


def activation_modes_supported(model: onnx.ModelProto) -> frozenset[ActivationMode]:
    """Return the activation modes this model's opset can express with Cast."""
    opset = _cast_opset(model)
    modes = {ActivationMode.OFF, ActivationMode.INTEGER, ActivationMode.UINT8, ActivationMode.INT8}
    modes.update(mode for mode, kind in _CAST_KIND.items() if opset >= _CAST_OPSET[kind])
    return frozenset(modes)


# onnxruntime's BASIC level quantizes a float Conv / Gemm weight whose activation comes from
# DequantizeLinear (per-tensor int8): not what a fake-quant simulation means, so it is switched off.
_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


def simulation_session(model: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """An InferenceSession that computes what the model's Q/DQ nodes say: no QDQ fusions into integer
    kernels (session.enable_quant_qdq=0), no weight quantization (`_DISABLED_OPTIMIZERS`)."""
    options.add_session_config_entry("session.enable_quant_qdq", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=_DISABLED_OPTIMIZERS)


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Session options that share 2 cores politely: few threads, no spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _scalar_input(name: str, elem_type: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, [])


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def _mode_nodes(index: int, x: str, out: str, mode: ActivationMode) -> list[onnx.NodeProto]:
    """Nodes computing out = fake_quant(x) in one mode (the If branches, or inline in a specialized session)."""
    p = f"{_PREFIX}.a{index}.m{int(mode)}"
    scale, lo, hi = _name(index, "scale"), _name(index, "lo"), _name(index, "hi")
    if mode == ActivationMode.OFF:
        return [helper.make_node("Identity", [x], [out])]
    if mode in (ActivationMode.UINT8, ActivationMode.INT8):
        zero_point = _name(index, "zp_u8" if mode == ActivationMode.UINT8 else "zp_i8")
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
    mode = _name(index, "mode")

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


def build_simulation_model(model: onnx.ModelProto, specs: tuple[_LayerSpec, ...], modes: frozenset[ActivationMode],
                           *, weights_as_inputs: bool = True, layer_outputs: bool = False,
                           pattern: Mapping[int, ActivationMode] | None = None
                           ) -> tuple[onnx.ModelProto, dict[str, str], dict[str, int]]:
    """Return the simulation model, layer -> weight input name, layer -> activation index.

    weights_as_inputs=False keeps the weights as initializers (for `_reorder_weight_inputs`).
    layer_outputs=True also makes every layer's output a graph output.
    pattern (activation index -> mode, absent = OFF) specializes the model: each activation gets its
    mode's nodes inline instead of the `If` chain, and OFF activations no nodes at all.
    """
    sim = onnx.ModelProto()
    sim.CopyFrom(model)
    opset = _cast_opset(model)
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
                new_inputs += [_scalar_input(_name(i, what), _INPUT_TYPES[what]) for what in wanted]
                fq_nodes_for[spec.name] = _mode_nodes(i, spec.activation_input, y, mode)
        elif spec.activation_input:
            y = f"{_PREFIX}.a{i}.out"
            node.input[list(node.input).index(spec.activation_input)] = y
            new_inputs += [_scalar_input(_name(i, "mode"), TensorProto.INT64),
                           _scalar_input(_name(i, "scale"), TensorProto.FLOAT),
                           _scalar_input(_name(i, "lo"), TensorProto.FLOAT),
                           _scalar_input(_name(i, "hi"), TensorProto.FLOAT),
                           _scalar_input(_name(i, "zp_u8"), TensorProto.UINT8),
                           _scalar_input(_name(i, "zp_i8"), TensorProto.INT8)]
            fq_nodes_for[spec.name] = _fake_quant_nodes(i, spec.activation_input, y, modes)
            activation_index[spec.name] = i
    # Insert each fake-quant subgraph right before its layer so the node list stays topologically sorted.
    ordered = []
    for node in graph.node:
        ordered.extend(fq_nodes_for.get(node.name, ()))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(new_inputs)
    existing_outputs = {out.name for out in graph.output}
    for spec in specs if layer_outputs else ():
        if spec.output and spec.output not in existing_outputs:
            graph.output.append(helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, None))
            existing_outputs.add(spec.output)
    return sim, weight_inputs, activation_index




@dataclass(frozen=True)
class _WeightFeed:
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


# Marker weights are the integers 1..n (exact in float32 up to 2**24).
_MAX_MARKERS = 1 << 24


def _optimized(model: onnx.ModelProto, threads: int) -> onnx.ModelProto:
    """Return onnxruntime's fully optimized version of `model` (written to a private temporary file)."""
    options = session_options(threads)
    with tempfile.TemporaryDirectory() as directory:
        options.optimized_model_filepath = os.path.join(directory, "optimized.onnx")
        simulation_session(model.SerializeToString(), options)
        return onnx.load(options.optimized_model_filepath)


def _reorder_weight_inputs(model: onnx.ModelProto, specs: tuple[_LayerSpec, ...], threads: int
                           ) -> tuple[onnx.ModelProto, dict[str, list[_WeightFeed]]] | None:
    """Let onnxruntime optimize with constant weights, then turn its (reordered) weights into inputs.

    onnxruntime's fastest CPU convolutions (NCHWc) need constant filters, which it reorders at load
    time. Each weight is replaced by markers 1..n, the model optimized once, and every optimized
    initializer made only of one weight's markers (and zero padding) becomes a graph input with the
    gather that lays a weight out the same way. Returns None when a weight cannot be traced.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    markers, offset = {}, 0
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    marked_inits = {init.name: init for init in marked.graph.initializer}
    for spec in specs:
        init = initializers.get(spec.weight) if spec.weight else None
        if init is None or init.data_type != TensorProto.FLOAT or spec.weight in markers:
            continue
        size = int(np.prod(init.dims, dtype=np.int64))
        if offset + size >= _MAX_MARKERS:
            return None
        values = np.arange(offset + 1, offset + size + 1, dtype=np.float32).reshape(tuple(init.dims))
        marked_inits[spec.weight].CopyFrom(numpy_helper.from_array(values, spec.weight))
        markers[spec.weight] = (offset + 1, size)
        offset += size
    try:
        optimized = _optimized(marked, threads)
    except Exception:  # onnxruntime's own exception types; the caller falls back to the plain layout
        return None
    feeds: dict[str, list[_WeightFeed]] = {weight: [] for weight in markers}
    replaced = set()
    for init in optimized.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init).reshape(-1)
        nonzero = values[values != 0]
        for weight, (first, size) in markers.items():
            if nonzero.size == 0 or nonzero.min() < first or nonzero.max() > first + size - 1:
                continue
            index = nonzero - first
            if nonzero.size != size or not np.array_equal(np.sort(index), np.arange(size, dtype=np.float32)):
                return None  # the weight was transformed, not only reordered: cannot feed it
            gather = np.where(values == 0, size, values - first).astype(np.int64)
            feeds[weight].append(_WeightFeed(init.name, tuple(init.dims), gather))
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


def _fake_quant_in_blocked_layout(model: onnx.ModelProto) -> int:
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


class _Variant:
    """One built InferenceSession and how to feed its weights."""

    def __init__(self, model, specs, modes, threads: int, *, layer_outputs: bool,
                 pattern: Mapping[int, ActivationMode] | None = None):
        base, _, self.activation_index = build_simulation_model(model, specs, modes, weights_as_inputs=False,
                                                               layer_outputs=layer_outputs, pattern=pattern)
        traced = _reorder_weight_inputs(base, specs, threads)
        if traced is not None:
            built, by_weight = traced
            _fake_quant_in_blocked_layout(built)
            self.weight_feeds = {spec.name: by_weight[spec.weight] for spec in specs if spec.weight in by_weight}
            self.reordered = True
        else:
            built, inputs, _ = build_simulation_model(model, specs, modes, layer_outputs=layer_outputs, pattern=pattern)
            shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in built.graph.input}
            self.weight_feeds = {layer: [_WeightFeed(name, shapes[name])] for layer, name in inputs.items()}
            self.reordered = False
        self.input_names = frozenset(i.name for i in built.graph.input)
        options = session_options(threads)
        if self.reordered:
            # Already optimized for this machine; optimizing again would only redo the work.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        try:
            self.session = simulation_session(built.SerializeToString(), options)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot build the simulation session: {_first_line(err)}") from None


# A run whose activation modes (which layer: off / uint8 / int8 / ...) were seen this many times gets a
# session specialized for them, with the fake-quant nodes inline instead of `If`s (at most MAX_SPECIALIZED).
SPECIALIZE_AFTER = 3
MAX_SPECIALIZED = 8


class SimulationSession:
    """Run a model with any mix of fake-quantized weights and activations, without rebuilding it.

    Built once per model. Model outputs come from one InferenceSession; per-layer outputs (which
    stop onnxruntime from fusing a layer with what follows) come from a second one, built on first use.
    """

    def __init__(self, prepared, *, threads: int = 1):
        model = prepared.model
        self._model, self._threads = model, threads
        self._specs = tuple(spec for spec in layer_specs(prepared))
        self.layers = tuple(spec.name for spec in self._specs)
        self.layer_outputs = {spec.name: spec.output for spec in self._specs if spec.output}
        self.opset = _cast_opset(model)
        self.modes = activation_modes_supported(model)
        initializers = {init.name: init for init in model.graph.initializer}
        self._fp32_weights = {spec.name: numpy_helper.to_array(initializers[spec.weight]).astype(np.float32)
                              for spec in self._specs if spec.weight in initializers}
        self.input_names = tuple(i.name for i in model.graph.input if i.name not in initializers)
        self.output_names = tuple(o.name for o in model.graph.output)
        self._variants: dict[bool, _Variant] = {False: self._build(layer_outputs=False)}
        self._suffixes: dict[str, LayerSuffix | None] = {}
        self._patterns: dict[tuple, _Variant | None] = {}
        self._pattern_uses: dict[tuple, int] = {}
        self._captures: dict[tuple[str, ...], ort.InferenceSession] = {}

    def _build(self, *, layer_outputs: bool, pattern: Mapping[int, ActivationMode] | None = None) -> _Variant:
        variant = _Variant(self._model, self._specs, self.modes, self._threads, layer_outputs=layer_outputs,
                           pattern=pattern)
        defaults = {}
        for layer, feeds in variant.weight_feeds.items():
            for feed in feeds:
                defaults[feed.name] = feed.value(self._fp32_weights[layer])
        for index in variant.activation_index.values():
            defaults.update(OFF.feeds(index))
        variant.default_feeds = {name: value for name, value in defaults.items() if name in variant.input_names}
        return variant

    def _specialized(self, activations: Mapping[str, ActivationQuant] | None) -> _Variant | None:
        """The session specialized for these activation modes (no `If`s), built on the pattern's
        SPECIALIZE_AFTER-th use and cached; None before that."""
        general = self._variants[False]
        key = tuple(sorted((general.activation_index[layer], params.mode)
                           for layer, params in (activations or {}).items() if params.mode != ActivationMode.OFF))
        if key in self._patterns:
            return self._patterns[key]
        self._pattern_uses[key] = self._pattern_uses.get(key, 0) + 1
        if self._pattern_uses[key] < SPECIALIZE_AFTER or len(self._patterns) >= MAX_SPECIALIZED:
            return None
        try:
            self._patterns[key] = self._build(layer_outputs=False, pattern=dict(key))
        except ModelError:
            self._patterns[key] = None
        return self._patterns[key]

    def _variant(self, layer_outputs: bool) -> _Variant:
        if layer_outputs not in self._variants:
            self._variants[layer_outputs] = self._build(layer_outputs=layer_outputs)
        return self._variants[layer_outputs]

    @property
    def reordered(self) -> bool:
        """True when the weights are fed in onnxruntime's optimized (NCHWc) layout."""
        return self._variants[False].reordered

    @property
    def quantizable_activations(self) -> tuple[str, ...]:
        """Layers whose activation input can be fake-quantized."""
        return tuple(self._variants[False].activation_index)

    def fp32_weight(self, layer: str) -> np.ndarray:
        return self._fp32_weights[layer]

    def cut_tensors(self, layer: str) -> tuple[str, ...] | None:
        """Activations computed before `layer` that the rest of the model reads (None: cannot be cut)."""
        found = suffix_model(self._model, layer)
        return None if found is None else found[1]

    def suffix(self, layer: str) -> LayerSuffix | None:
        """The model from `layer` on with only its weight as an input (built on first use, cached); None if
        the model cannot be cut there."""
        if layer not in self._suffixes:
            spec = next((spec for spec in self._specs if spec.name == layer), None)
            try:
                later = tuple(s for s in self._specs if s.name in self._fp32_weights)
                self._suffixes[layer] = None if spec is None else LayerSuffix(self._model, spec, self._threads, later,
                                                                              self._fp32_weights)
            except ModelError:
                self._suffixes[layer] = None
        return self._suffixes[layer]

    def capture(self, feeds: Mapping[str, np.ndarray], tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Return the FP32 values of the model's intermediate `tensors` for one batch (session cached per tuple)."""
        if tensors not in self._captures:
            model = onnx.ModelProto()
            model.CopyFrom(self._model)
            declared = {v.name: v for v in model.graph.value_info}
            model.graph.output.extend(declared[name] for name in tensors)
            self._captures[tensors] = ort.InferenceSession(model.SerializeToString(), session_options(self._threads),
                                                           providers=["CPUExecutionProvider"])
        try:
            values = self._captures[tensors].run(list(tensors), dict(feeds))
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {_first_line(err)}") from None
        return dict(zip(tensors, values))

    def run(self, feeds: Mapping[str, np.ndarray], *, weights: Mapping[str, np.ndarray] | None = None,
            activations: Mapping[str, ActivationQuant] | None = None,
            with_layer_outputs: bool = False) -> SimulationOutput:
        """Run one batch; layers absent from `weights` / `activations` stay FP32."""
        variant = None if with_layer_outputs else self._specialized(activations)
        variant = variant or self._variant(with_layer_outputs)
        all_feeds = dict(variant.default_feeds)
        all_feeds.update(feeds)
        for layer, weight in (weights or {}).items():
            for feed in variant.weight_feeds[layer]:
                all_feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        for layer, params in (activations or {}).items():
            if params.mode not in self.modes:
                needed = _CAST_OPSET[_CAST_KIND[params.mode]]
                raise ValueError(f"layer {layer!r}: {params.mode.name.lower()} activations need a model with "
                                 f"opset >= {needed}; this model has opset {self.opset}")
            all_feeds.update((name, value) for name, value in params.feeds(variant.activation_index[layer]).items()
                             if name in variant.input_names)
        names = list(self.output_names)
        if with_layer_outputs:
            names += [out for out in dict.fromkeys(self.layer_outputs.values()) if out not in self.output_names]
        try:
            values = variant.session.run(names, all_feeds)
        except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
            raise DataError(f"onnxruntime cannot run the model on this data: {_first_line(err)}") from None
        outputs = tuple(values[:len(self.output_names)])
        if not with_layer_outputs:
            return SimulationOutput(outputs)
        by_name = dict(zip(names, values))
        return SimulationOutput(outputs, {layer: by_name[out] for layer, out in self.layer_outputs.items()})


# ---------------------------------------------------------------------------------------------
# Suffixes: the model from one layer on, for configs that change only that layer's weight
# ---------------------------------------------------------------------------------------------

def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def suffix_model(model: onnx.ModelProto, layer: str) -> tuple[onnx.ModelProto, tuple[str, ...]] | None:
    """Return the nodes from `layer` on as a model whose inputs are the tensors they read from before it.

    The second item lists those "cut" tensors (activations, shapes... computed before the layer, or
    model inputs). None when the model has subgraphs (their outer-scope reads are not traced), when a
    cut tensor has no declared type, or when a model output is computed before the layer.
    """
    graph = model.graph
    names = [node.name for node in graph.node]
    if layer not in names or any(_has_subgraph(node) for node in graph.node):
        return None
    nodes = list(graph.node)[names.index(layer):]
    produced = {out for node in nodes for out in node.output}
    if any(out.name not in produced for out in graph.output):
        return None
    initializers = {init.name: init for init in graph.initializer}
    cut = list(dict.fromkeys(name for node in nodes for name in node.input
                             if name and name not in produced and name not in initializers))
    declared = {v.name: v for v in list(graph.input) + list(graph.value_info)}
    if any(name not in declared or not declared[name].type.tensor_type.elem_type for name in cut):
        return None
    used = {name for node in nodes for name in node.input}
    suffix = helper.make_graph(nodes, f"{graph.name}.from.{layer}", [declared[name] for name in cut],
                               list(graph.output), [init for init in graph.initializer if init.name in used],
                               value_info=[v for v in graph.value_info if v.name in produced])
    built = helper.make_model(suffix, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return built, tuple(cut)


class LayerSuffix:
    """An InferenceSession of the model from one layer on: only that layer's weight is an input.

    Every other weight stays a constant, so onnxruntime optimizes the suffix fully; the layer's weight
    is fed in onnxruntime's optimized layout when it can be traced (as `SimulationSession` does).
    """

    def __init__(self, model: onnx.ModelProto, spec: _LayerSpec, threads: int,
                 later: tuple[_LayerSpec, ...] = (), fp32_weights: Mapping[str, np.ndarray] | None = None):
        found = suffix_model(model, spec.name)
        if found is None or spec.weight is None:
            raise ModelError(f"layer {spec.name!r}: the model cannot be cut before it")
        built, self.cut = found
        # The later layers' weights are fed too, in the same layout as the full session's: onnxruntime then
        # runs them with the same kernels, so the outputs equal the full session's bit for bit.
        inside = {init.name for init in built.graph.initializer}
        later = tuple(s for s in later if s.weight in inside and s.weight != spec.weight)
        traced = _reorder_weight_inputs(built, (spec, *later), threads)
        options = session_options(threads)
        self.constant_feeds = {}
        if traced is not None:
            built, by_weight = traced
            self.weight_feeds = by_weight[spec.weight]
            for other in later:
                for feed in by_weight[other.weight]:
                    self.constant_feeds[feed.name] = feed.value(fp32_weights[other.name])
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        else:
            init = next(i for i in built.graph.initializer if i.name == spec.weight)
            kept = [i for i in built.graph.initializer if i.name != spec.weight]
            del built.graph.initializer[:]
            built.graph.initializer.extend(kept)
            built.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            self.weight_feeds = [_WeightFeed(init.name, tuple(init.dims))]
        self.output_names = tuple(o.name for o in built.graph.output)
        try:
            self.session = simulation_session(built.SerializeToString(), options)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot build the suffix session of {spec.name!r}: "
                             f"{_first_line(err)}") from None

    @property
    def nbytes(self) -> int:
        """Bytes of the later layers' weights this suffix keeps (in its layout) to feed them."""
        return sum(value.nbytes for value in self.constant_feeds.values())

    def run(self, cut_values: Mapping[str, np.ndarray], weight: np.ndarray) -> tuple[np.ndarray, ...]:
        feeds = dict(self.constant_feeds)
        feeds.update((name, cut_values[name]) for name in self.cut)
        for feed in self.weight_feeds:
            feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        try:
            return tuple(self.session.run(list(self.output_names), feeds))
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {_first_line(err)}") from None

"""Real quantized ONNX models, built with onnxruntime.quantization, that onnxruntime runs with integer kernels.

`export_model` turns a config into a static QDQ model: 8-bit weights (int8, per-tensor or per-channel)
and 8-bit activations (uint8 asymmetric is the fast CPU path), with OUR scales and zero points passed
as TensorQuantOverrides so the export computes what the simulation computes. Layers whose format
has no onnxruntime kernel stay FP32 and are listed as simulated-only. The standard kinds
(`export_dynamic_int8`, `export_fp16`, `export_matmul_nbits`) need no config.

Models move as bytes; only `save_export` writes files, atomically.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quant_core.config import QuantConfig
from quant_core.numerics.cpu_target import CpuTarget, saturates
from quant_core.model.runtime import first_line
from quant_core.errors import ModelError
from quant_core.model.layout import classic_layout
from quant_core.model.onnx_graph import names_read
from quant_core.engine.plan import ExportKind, LayerExport, resolved_weights
from quant_core.export.overrides import (GRID_PRESERVING_OPS, build_override_plan, model_proto, ort_overrides,
                                         overrides_to_json, separate_shared_weights, weight_grid)

CALIBRATION_SAMPLES = 64  # onnxruntime wants a data reader; every range it would compute is overridden
_BATCH = 16


@dataclass(frozen=True)
class ExportResult:
    """An exported model and how it relates to the config that asked for it."""

    model: bytes
    overrides: dict                  # TensorQuantOverrides JSON data ({} for kinds without one)
    kind: str                        # "static_qdq", "dynamic_int8", "fp16", "matmul_nbits"
    notes: tuple[str, ...] = ()
    simulated_only: tuple[str, ...] = ()  # layers kept FP32 because their format has no onnxruntime kernel


# ---------------------------------------------------------------------------------------------
# onnxruntime.quantization plumbing
# ---------------------------------------------------------------------------------------------

class _QuietQuantizer(logging.Filter):
    """Drop onnxruntime.quantization's advice messages (logged on the root logger) while we call it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname.replace("\\", "/").split("/")


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Run onnxruntime.quantization quietly; turn its failures into one-line ModelErrors naming `what`."""
    quiet = _QuietQuantizer()
    root, package = logging.getLogger(), logging.getLogger("onnxruntime")
    level = package.level
    root.addFilter(quiet)
    package.setLevel(logging.ERROR)
    try:
        yield
    except ModelError:
        raise
    except Exception as err:  # onnxruntime.quantization raises anything from AssertionError to its own types
        raise ModelError(f"onnxruntime could not build the {what} model: {first_line(err)}") from None
    finally:
        root.removeFilter(quiet)
        package.setLevel(level)


def _input_feeds(model: onnx.ModelProto, data) -> Iterator[dict[str, np.ndarray]]:
    """Yield a few batches of calibration feeds from a Dataset, an array, a mapping or nothing."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [value for value in model.graph.input if value.name not in initializers]
    if data is None:
        # Every quantized tensor has an explicit scale, so any valid feed will do: one zero sample.
        feed = {}
        for value in graph_inputs:
            tensor_type = value.type.tensor_type
            shape = [dim.dim_value if dim.dim_value > 0 else 1 for dim in tensor_type.shape.dim]
            feed[value.name] = np.zeros(shape, dtype=helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        yield feed
        return
    inputs = getattr(data, "inputs", data)
    if isinstance(inputs, np.ndarray):
        if len(graph_inputs) != 1:
            raise ModelError(f"the model has {len(graph_inputs)} inputs; give calibration data as a mapping")
        inputs = {graph_inputs[0].name: inputs}
    if not isinstance(inputs, Mapping):
        raise ModelError(f"calibration_data must be a Dataset, an array or a mapping, got {type(data).__name__}")
    dtypes = {value.name: helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) for value in graph_inputs}
    missing = [name for name in dtypes if name not in inputs]
    if missing:
        raise ModelError(f"calibration_data has no array for model input(s) {missing}")
    count = min(CALIBRATION_SAMPLES, min(len(inputs[name]) for name in dtypes))
    # A Dataset's layout says how its arrays become feeds (complete inputs, scalars, recorded state: every
    # range is overridden, so the recorded state serves as well as a carried one); else samples are batch-first.
    layout = getattr(data, "layout", None) or classic_layout(list(dtypes))
    step = _BATCH if layout.stackable else 1
    for start in range(0, count, step):
        feed = layout.feed(inputs, start, min(start + step, count))
        yield {name: np.asarray(feed[name], dtype=dtype) for name, dtype in dtypes.items()}


def _reader(model: onnx.ModelProto, data):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = _input_feeds(model, data)

        def get_next(self):
            return next(self._feeds, None)

    return _Reader()


def _load_bytes(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _quantize_static(model: onnx.ModelProto, data, overrides: dict, nodes: tuple[str, ...]) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    op_types = sorted({node.op_type for node in model.graph.node if node.name in set(nodes)})
    with tempfile.TemporaryDirectory(prefix="quantlab-export-") as tmp, _quiet("static QDQ"):
        out = os.path.join(tmp, "static.onnx")
        quantize_static(
            model, out, _reader(model, data), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types, nodes_to_quantize=list(nodes), per_channel=False,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            extra_options={
                "TensorQuantOverrides": ort_overrides(overrides),
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                # MatMul/Gemm outputs stay float (QGemm / MatMulIntegerToFloat); quantizing them would add a
                # rounding step the simulation does not have. Conv needs a quantized output for QLinearConv.
                "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                # Keep our weight scales: onnxruntime would otherwise enlarge them for tiny int32 bias scales.
                "QDQDisableWeightAdjustForInt32Bias": True,
            })
        return onnx.load_from_string(_load_bytes(out))


# ---------------------------------------------------------------------------------------------
# Weight-only layers: small graph edits (onnxruntime's static quantizer always quantizes activations)
# ---------------------------------------------------------------------------------------------

def _replace_weight(model: onnx.ModelProto, layer: str, make_nodes) -> None:
    node = next(n for n in model.graph.node if n.name == layer)
    initializers = {init.name: init for init in model.graph.initializer}
    weight = numpy_helper.to_array(initializers[node.input[1]])
    new_inits, new_nodes, output = make_nodes(weight, f"{layer}.weight")
    model.graph.initializer.extend(new_inits)
    position = list(model.graph.node).index(node)
    for offset, new in enumerate(new_nodes):
        model.graph.node.insert(position + offset, new)
    node.input[1] = output


def _weight_int8_nodes(tq):
    def make(weight: np.ndarray, prefix: str):
        grid = weight_grid(weight, tq, name=prefix)
        dtype = np.int8 if grid.quant_type == "QInt8" else np.uint8
        from quant_core.numerics.quantize import quantize
        codes = quantize(weight, grid.scale, grid.zero_point, tq.format, axis=grid.axis, name=prefix)
        inits = [numpy_helper.from_array(np.asarray(codes).astype(dtype), f"{prefix}_quantized"),
                 numpy_helper.from_array(grid.scale.astype(np.float32), f"{prefix}_scale"),
                 numpy_helper.from_array(grid.zero_point.astype(dtype), f"{prefix}_zero_point")]
        attrs = {} if grid.axis is None else {"axis": grid.axis}
        node = helper.make_node("DequantizeLinear", [i.name for i in inits], [f"{prefix}_dequantized"],
                                name=f"{prefix}_DequantizeLinear", **attrs)
        return inits, [node], node.output[0]
    return make


def _weight_fp16_nodes(weight: np.ndarray, prefix: str):
    init = numpy_helper.from_array(weight.astype(np.float16), f"{prefix}_fp16")
    node = helper.make_node("Cast", [init.name], [f"{prefix}_fp32"], name=f"{prefix}_Cast", to=onnx.TensorProto.FLOAT)
    return [init], [node], node.output[0]


def _float_readers_read_float(model: onnx.ModelProto, quantized: set[str]) -> int:
    """Point the readers of a quantized layer input `DequantizeLinear(QuantizeLinear(x))` that are not
    quantized themselves back at x; return how many inputs were rewired.

    onnxruntime's quantizer rewires every reader of a quantized tensor to the DequantizeLinear output,
    so a residual Add or a LayerNorm reading the same tensor as a quantized MatMul would compute on
    quantized values, which the simulation (where a layer's input quantization belongs to that layer)
    does not, and a Shape would keep a DequantizeLinear alive only to read a shape. A reader stays on
    the quantized tensor when it is a quantized node itself (a layer, or a Relu folded into a
    QLinearConv) or a grid-preserving op (MaxPool, Flatten, Reshape...) whose result is quantized again
    further on (onnxruntime then runs it on integers). A quantized tensor no quantized node reads (a
    QLinearConv's own output, which the kernel needs quantized) keeps its readers, as export notes say;
    only Shape / Size readers always read x (no value changes).
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def requantized(node: onnx.NodeProto) -> bool:
        if node.op_type == "QuantizeLinear":
            return True
        following = [reader for out in node.output for reader in readers.get(out, [])]
        return node.op_type in GRID_PRESERVING_OPS and bool(following) and all(map(requantized, following))

    def source(name: str) -> str | None:
        """x when `name` is DequantizeLinear(QuantizeLinear(x)), else None."""
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None

    rewired = 0
    for node in model.graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            x = source(name)
            if x is None:
                continue
            layer_input = any(reader.name in quantized for reader in readers.get(name, []))
            if node.op_type in ("Shape", "Size") or (layer_input and not requantized(node)):
                node.input[index] = x
                rewired += 1
    used = names_read(model.graph)
    kept = [n for n in model.graph.node if n.op_type != "DequantizeLinear" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return rewired


def _fp32_copies_for_other_readers(model: onnx.ModelProto, layers: set[str]) -> list[str]:
    """Give every node that reads an integer layer's weight, other than as such a layer's weight, an FP32 copy
    of it; return the weights copied.

    onnxruntime's quantizer rewires every reader of a quantized weight to its DequantizeLinear output, so a
    ReduceSum, a Shape, a Transpose or a weight-only layer reading the same initializer would compute on
    the int8 weight. A config quantizes a layer's weight for that layer only (docs/engine.md, "A weight
    other nodes read too"), as the simulation computes it: the other readers keep the FP32 values.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    weights = {node.input[1] for node in model.graph.node
               if node.name in layers and len(node.input) > 1 and node.input[1] in initializers}
    copies: dict[str, str] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name not in weights or (node.name in layers and index == 1):
                continue
            if name not in copies:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}.fp32"
                while copy.name in initializers:
                    copy.name += "_"
                model.graph.initializer.append(copy)
                copies[name] = copy.name
            node.input[index] = copies[name]
    return sorted(copies)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = names_read(model.graph)  # If / Loop bodies read initializers of the main graph too
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor with a known shape (prepared models carry value_info; else infer once)."""
    graph = model.graph
    if not graph.value_info:
        graph = onnx.shape_inference.infer_shapes(model).graph
    return {value.name: len(value.type.tensor_type.shape.dim)
            for value in list(graph.value_info) + list(graph.input) if value.type.tensor_type.HasField("shape")}


def _matmul_add_to_gemm(model: onnx.ModelProto, layers: list[str]) -> list[str]:
    """Rewrite 2-D `MatMul(x, W) + b` (W, b constant) as one Gemm keeping the MatMul's name.

    onnxruntime fuses MatMul + Add into a float Gemm before its QDQ fusions, and a Gemm whose bias
    is float and whose output is not quantized never becomes QGemm; a Gemm with the bias quantized
    by the QDQ quantizer does (QGemm with float output). 3-D MatMuls become MatMulIntegerToFloat.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in model.graph.output}
    ranks = _ranks(model)
    rewritten, drop = [], set()
    for node in model.graph.node:
        if node.name not in layers or node.op_type != "MatMul" or node.output[0] in outputs:
            continue
        add = readers.get(node.output[0], [])
        if len(add) != 1 or add[0].op_type != "Add":
            continue
        bias = next((name for name in add[0].input if name != node.output[0]), None)
        weight = initializers.get(node.input[1])
        if bias not in initializers or weight is None or len(weight.dims) != 2:
            continue
        if list(initializers[bias].dims) != [weight.dims[1]] or ranks.get(node.input[0]) != 2:
            continue
        node.op_type = "Gemm"
        node.input.append(bias)
        node.output[0] = add[0].output[0]
        drop.add(add[0].name or id(add[0]))
        rewritten.append(node.name)
    kept = [node for node in model.graph.node if (node.name or id(node)) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return rewritten


def _ensure_opset(model: onnx.ModelProto, version: int) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version < version:
            entry.version = version


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def _layer_notes(layers: tuple[LayerExport, ...]) -> list[str]:
    notes = []
    for entry in layers:
        if entry.kind == ExportKind.SIMULATED_ONLY:
            notes.append(f"{entry.layer}: simulated only ({entry.reason}); kept FP32 in the export")
        elif entry.kind == ExportKind.WEIGHT_INT8 and entry.op_type == "MatMul":
            notes.append(f"{entry.layer}: int8 weight + DequantizeLinear (weight-only); onnxruntime may fuse it into "
                         "MatMulNBits, which at its default accuracy level 4 also rounds activations to int8 at "
                         "run time; session option session.qdq_matmulnbits_accuracy_level=0 keeps them float")
        elif entry.kind == ExportKind.WEIGHT_INT8:
            notes.append(f"{entry.layer}: int8 weight + DequantizeLinear, float kernel (weight-only)")
        elif entry.kind == ExportKind.WEIGHT_FP16:
            notes.append(f"{entry.layer}: float16 weight + Cast, float kernel (weight-only)")
        elif entry.kind == ExportKind.WEIGHT_NBITS:
            notes.append(f"{entry.layer}: MatMulNBits with the config's integers, scales and zero points "
                         "(weight-only, per group)")
    return notes


def export_model(prepared, config: QuantConfig, calibration, *, calibration_data=None) -> ExportResult:
    """Export `config` as a static QDQ model that onnxruntime runs with integer kernels.

    Activation grids come from `calibration.range_for` (the config's range method) and weight grids
    from `quantize_tensor`, through `qparams_from_range`: the exported QuantizeLinear uses our scale
    and zero point bit for bit. `calibration_data` (a few samples) only feeds onnxruntime's own
    calibration pass, whose ranges are all overridden; without it one zero sample is used.

    Notes
    -----
    Conv outputs are quantized too (QLinearConv needs it). When only grid-preserving ops (Relu,
    MaxPool, Flatten, Reshape...) separate the output from the next layer's input, the next layer's
    grid is used and the result is unchanged; otherwise a note says where rounding was added.
    """
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    plan = build_override_plan(prepared, config, calibration)
    model = model_proto(prepared)
    integer = [entry for entry in plan.layers if entry.kind == ExportKind.INTEGER]
    # the weights as the override plan names them: a layer that shares its weight with another grid reads a copy
    separated = separate_shared_weights(model, config, [entry.layer for entry in integer])
    nodes = {node.name: node for node in model.graph.node}
    initializers = {init.name: init for init in model.graph.initializer}
    weight_only = {entry.layer: resolved_weights(config.for_layer(entry.layer).weights, nodes[entry.layer],
                                                 initializers[nodes[entry.layer].input[1]])
                   for entry in plan.layers if entry.kind == ExportKind.WEIGHT_INT8}
    notes = list(plan.notes)
    notes.extend(f"{layer}: its weight is read by another integer layer with another grid; it is stored again "
                 "for this layer (onnxruntime keys a weight's grid by its name)" for layer in separated)
    if integer:
        for layer in _matmul_add_to_gemm(model, [entry.layer for entry in integer]):
            notes.append(f"{layer}: MatMul + Add(bias) exported as one Gemm (same name) so onnxruntime runs QGemm")
        _fp32_copies_for_other_readers(model, {entry.layer for entry in integer})
        model = _quantize_static(model, calibration_data, plan.overrides, plan.nodes_to_quantize)
        _float_readers_read_float(model, set(plan.nodes_to_quantize))
    for entry in plan.layers:
        if entry.kind == ExportKind.WEIGHT_INT8:
            _replace_weight(model, entry.layer, _weight_int8_nodes(weight_only[entry.layer]))
        elif entry.kind == ExportKind.WEIGHT_FP16:
            _replace_weight(model, entry.layer, _weight_fp16_nodes)
    nbits = [entry.layer for entry in plan.layers if entry.kind == ExportKind.WEIGHT_NBITS]
    if nbits:
        from quant_core.export.nbits import export_config_nbits
        model = export_config_nbits(model, config, nbits)
    if any(entry.kind == ExportKind.WEIGHT_INT8 for entry in plan.layers):
        _ensure_opset(model, 13)  # per-channel DequantizeLinear (axis) needs opset 13
    _drop_unused_initializers(model)
    notes.extend(_layer_notes(plan.layers))
    if not integer:
        notes.append("no layer is exported with integer kernels (no 8-bit weight + 8-bit activation layer)")
    simulated = tuple(entry.layer for entry in plan.layers if entry.kind == ExportKind.SIMULATED_ONLY)
    return ExportResult(model.SerializeToString(), plan.overrides, "static_qdq", tuple(notes), simulated)


def export_dynamic_int8(prepared, *, target: CpuTarget = CpuTarget.AUTO) -> ExportResult:
    """Export with onnxruntime's dynamic quantization: int8 weights, uint8 activations scaled per batch.

    For a saturating target (x86 without VNNI; AUTO: this machine) the int8 weights are then stored
    as uint8 with their zero point moved by 128, the same grid, so that onnxruntime runs u8 x u8
    kernels instead of u8 x s8 pairs that overflow int16 (docs/cpu_targets.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    model = model_proto(prepared)
    with tempfile.TemporaryDirectory(prefix="quantlab-export-") as tmp, _quiet("dynamic INT8"):
        out = os.path.join(tmp, "dynamic.onnx")
        quantize_dynamic(model, out, weight_type=QuantType.QInt8, per_channel=False)
        data = _load_bytes(out)
    notes = ["weights int8 per-tensor; activations quantized to uint8 at run time, per batch"]
    if saturates(target):
        exported = onnx.load_from_string(data)
        count = _integer_weights_as_unsigned(exported)
        data = exported.SerializeToString()
        notes.append(f"{count} weight(s) stored as uint8 with zero point + 128 (the same grid) for the saturating "
                     "x86 target: u8×u8 kernels, which do not saturate")
    return ExportResult(data, {}, "dynamic_int8", tuple(notes))


# Integer ops whose input 1 is the weight codes and input 3 its zero point (onnxruntime: u8 or s8 either).
_INTEGER_WEIGHT_OPS = ("MatMulInteger", "ConvInteger")


def _integer_weights_as_unsigned(model: onnx.ModelProto) -> int:
    """Store the int8 weights (and zero points) of MatMulInteger / ConvInteger as uint8 + 128; return how many.

    q + 128 with zero point z + 128 dequantizes to the same values; only weights no other node reads change.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    changed = 0
    for node in model.graph.node:
        if node.op_type not in _INTEGER_WEIGHT_OPS or len(node.input) < 4:
            continue
        codes, zero_point = initializers.get(node.input[1]), initializers.get(node.input[3])
        if codes is None or zero_point is None or codes.data_type != onnx.TensorProto.INT8:
            continue
        if readers[codes.name] != 1 or readers[zero_point.name] != 1:
            continue
        for init in (codes, zero_point):
            shifted = (numpy_helper.to_array(init).astype(np.int16) + 128).astype(np.uint8)
            init.CopyFrom(numpy_helper.from_array(shifted, init.name))
        changed += 1
    return changed


def export_fp16(prepared) -> ExportResult:
    """Export with float16 weights and compute; inputs and outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = model_proto(prepared)
    with _quiet("FP16"):
        converted = convert_float_to_float16(model, keep_io_types=True)
    return ExportResult(converted.SerializeToString(), {}, "fp16", ("float16 weights and activations; float32 I/O",))


def _gemm_to_matmul(model: onnx.ModelProto) -> list[str]:
    """Rewrite `Gemm(A, B const, C)` with alpha=beta=1, transA=0 as MatMul (+ Add); return the rewritten names."""
    initializers = {init.name: init for init in model.graph.initializer}
    rewritten, new_nodes = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in initializers:
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.name}.weight_kn"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=node.name))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                              name=f"{node.name}.bias"))
        rewritten.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    _drop_unused_initializers(model)
    return rewritten


def export_matmul_nbits(prepared, bits: int = 4, block_size: int = 32) -> ExportResult:
    """Export MatMul weights as `bits`-bit blocks (MatMulNBits, weight-only, symmetric); Gemm becomes MatMul + Add."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    if bits not in (2, 4, 8):
        raise ValueError(f"bits must be 2, 4 or 8 for MatMulNBits, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    model = model_proto(prepared)
    rewritten = _gemm_to_matmul(model)
    initializers = {init.name for init in model.graph.initializer}
    if not any(n.op_type == "MatMul" and n.input[1] in initializers for n in model.graph.node):
        raise ModelError("the model has no MatMul or Gemm layer with a constant weight; MatMulNBits does not apply")
    with _quiet("MatMulNBits"):
        quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True)
        quantizer.process()
    quantized = quantizer.model.model
    count = sum(node.op_type == "MatMulNBits" for node in quantized.graph.node)
    notes = [f"{count} MatMul layer(s) as MatMulNBits ({bits}-bit, block {block_size}, symmetric)"]
    if rewritten:
        notes.append(f"Gemm rewritten as MatMul + Add first: {', '.join(rewritten)}")
    return ExportResult(quantized.SerializeToString(), {}, "matmul_nbits", tuple(notes))


def _staged(path: str, data: bytes) -> str:
    """Write `data` to a new temporary file beside `path`, flushed to disk; return its name."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _replace_all(moves: list[tuple[str, str]]) -> None:
    """os.replace each (tmp, path) in order; on a failure remove the temporary files not yet moved."""
    try:
        for done, (tmp, path) in enumerate(moves):
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in moves[done:]:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def overrides_path(path: str | os.PathLike) -> str:
    """Return where `save_export` writes the overrides beside the model: OUT.onnx -> OUT.overrides.json."""
    text = os.fspath(path)
    stem = text[:-5] if text.lower().endswith(".onnx") else text
    return f"{stem}.overrides.json"


def save_export(result: ExportResult, path: str | os.PathLike) -> tuple[str, str]:
    """Write the model and its overrides JSON beside it, each atomically (tmp file + os.replace).

    Both are written to temporary files first, the model before the JSON; then the model replaces its
    file, then the JSON. A failure while writing (disk full) leaves the previous pair untouched, and
    no failure leaves a new JSON beside an old model.
    """
    model_path = os.fspath(path)
    json_path = overrides_path(model_path)
    model_tmp = _staged(model_path, result.model)
    try:
        json_tmp = _staged(json_path, overrides_to_json(result.overrides).encode())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(model_tmp)
        raise
    _replace_all([(model_tmp, model_path), (json_tmp, json_path)])
    return model_path, json_path


__all__ = ["ExportResult", "export_model", "export_dynamic_int8", "export_fp16", "export_matmul_nbits",
           "save_export", "overrides_path"]

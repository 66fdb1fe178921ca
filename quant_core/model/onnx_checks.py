"""Checks on untrusted ONNX input: what `model_io` runs before it trusts a model.

An uploaded model can claim anything: weights in an external file (any path on the server), headers that
declare far more data than is stored, NaN or Inf weights, a graph onnx.checker refuses. Each check here
raises a one-line `ModelError` naming the tensor or layer and the fix, and reads no more than it must:
tensor sizes are compared without decoding values, and the checker sees a skeleton without the large
weights. They live apart from loading and the layer inventory so that what is refused, and why, reads
in one place.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from quant_core.errors import ModelError

# Tensors above this many bytes are left out of the copy that shape inference and the checker see.
_SKELETON_MAX_TENSOR_BYTES = 4096


def model_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose large initializers are graph inputs of the same type and shape (no data).

    Shape inference and the checker serialize the whole model; this keeps them cheap for large models.
    """
    skeleton = onnx.ModelProto()
    for field in ("ir_version", "producer_name", "producer_version", "domain", "model_version"):
        setattr(skeleton, field, getattr(model, field))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph = model.graph
    target = skeleton.graph
    target.name = graph.name
    target.node.extend(graph.node)
    target.input.extend(graph.input)
    target.output.extend(graph.output)
    target.value_info.extend(graph.value_info)
    target.sparse_initializer.extend(graph.sparse_initializer)
    declared = {value.name for value in graph.input}
    for tensor in graph.initializer:
        if _tensor_bytes(tensor) <= _SKELETON_MAX_TENSOR_BYTES:
            target.initializer.append(tensor)
        elif tensor.name not in declared:
            target.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return skeleton


def check_structure(model: onnx.ModelProto, label: str) -> None:
    """Run onnx.checker on the model's skeleton: graph structure, op schemas, topological order."""
    skeleton = model_skeleton(model)
    if skeleton.ir_version < 4:
        # IR < 4 requires every initializer to be a graph input; the skeleton may have moved some.
        skeleton.ir_version = 4
    try:
        onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as err:
        raise ModelError(f"{label} is not a valid ONNX model: {one_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - the checker's C++ errors surface as various types
        raise ModelError(f"{label} could not be checked as an ONNX model: {one_line(err)}") from None


def refuse_external_data(model: onnx.ModelProto) -> None:
    for tensor, where in _model_tensors(model):
        refuse_external_tensor(tensor, where)


def _model_tensors(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto a model stores: its graph, its model-local functions and its training graphs."""
    yield from _all_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node, f"function {function.domain}.{function.name}: ")
    for training in model.training_info:
        for graph in (training.initialization, training.algorithm):
            yield from _all_tensors(graph)


def refuse_lying_headers(model: onnx.ModelProto) -> None:
    """Refuse a tensor whose stored data does not hold the values its dims declare (a header can claim any size)."""
    for tensor, where in _model_tensors(model):
        stored, expected, unit = _stored_and_expected(tensor)
        if stored is not None and stored != expected:
            raise ModelError(f"tensor '{where}' is corrupt: its header declares shape {tuple(tensor.dims)} "
                             f"({math.prod(tensor.dims):,} values, {expected:,} {unit}) but it stores "
                             f"{stored:,} {unit}")


# Typed field holding each element type when raw_data is empty, and how many field entries one value takes.
_TYPED_FIELDS = {
    onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1), onnx.TensorProto.STRING: ("string_data", 1),
    **{dtype: ("int32_data", 1) for dtype in (
        onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT8, onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)},
}
_SUB_BYTE_BITS = {getattr(onnx.TensorProto, name): bits for name, bits in (
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(onnx.TensorProto, name)}


def _stored_and_expected(tensor: onnx.TensorProto) -> tuple[int | None, int, str]:
    """(stored, expected, unit) of a tensor's data: raw bytes, or entries of its typed field; stored None = unchecked."""
    count = math.prod(tensor.dims)
    if tensor.HasField("raw_data"):
        stored = len(tensor.raw_data)  # one transient copy of the bytes; the values are not decoded
        if tensor.data_type in _SUB_BYTE_BITS:
            return stored, (count * _SUB_BYTE_BITS[tensor.data_type] + 7) // 8, "bytes"
        try:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            return None, 0, "bytes"
        return stored, count * itemsize, "bytes"
    if tensor.data_type not in _TYPED_FIELDS:
        return None, 0, "values"  # 8-bit floats, sub-byte types in int32_data: packing varies, left to readers
    field, per_value = _TYPED_FIELDS[tensor.data_type]
    return len(getattr(tensor, field)), count * per_value, "values"


def refuse_non_finite_weights(graph: onnx.GraphProto, layer_ops: frozenset[str]) -> None:
    """Refuse NaN or Inf in a layer's weight or bias, naming it: every quantized and FP32 number would be NaN.

    A layer is a node whose op_type is in `layer_ops` (model_io's quantizable ops).
    """
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    checked = set()
    for node in graph.node:
        if node.op_type not in layer_ops:
            continue
        for name in node.input:
            tensor = initializers.get(name)
            if tensor is None or name in checked or not _is_float_type(tensor.data_type):
                continue
            checked.add(name)
            refuse_non_finite(_float_values(tensor), f"weight '{name}' of layer '{node.name or node.op_type}'")


def _is_float_type(data_type: int) -> bool:
    try:
        return np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(data_type), np.floating)
    except (KeyError, TypeError, ValueError):
        return False


def _float_values(tensor: onnx.TensorProto) -> np.ndarray:
    dtype = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.DOUBLE: np.float64}.get(tensor.data_type)
    if dtype is not None and tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype)  # no decoding copy: the sizes were checked on opening
    try:
        return np.asarray(numpy_helper.to_array(tensor), dtype=np.float32)
    except (ValueError, TypeError) as err:
        raise ModelError(f"tensor '{tensor.name}' is corrupt: its data does not match its shape "
                         f"{tuple(tensor.dims)} ({one_line(err)})") from None


def refuse_non_finite(values: np.ndarray, what: str) -> None:
    """Raise a ModelError naming `what` when a floating array holds NaN or Inf (integers pass unchecked)."""
    if not np.issubdtype(values.dtype, np.floating) or values.size == 0:
        return
    flat = values.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(np.add.reduce(flat, dtype=np.float64) * 0.0):  # one pass, no temporary: NaN or Inf spread
            return
    nan, inf = int(np.count_nonzero(np.isnan(flat))), int(np.count_nonzero(np.isinf(flat)))
    if nan + inf == 0:
        return  # the float64 sum overflowed on huge finite values
    raise ModelError(f"{what} holds NaN or Inf values: {nan} NaN and {inf} Inf out of {flat.size:,}; a model with "
                     "non-finite weights cannot be evaluated or quantized (fix the model or the training that made it)")


def refuse_external_tensor(tensor: onnx.TensorProto, where: str) -> None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "?")
        raise ModelError(f"tensor '{where}' keeps its data in an external file ('{location}'), which is not "
                         "supported: save the model as one file (onnx.save_model(model, path, "
                         "save_as_external_data=False))")


def _all_tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto stored in a graph: initializers, sparse initializers, Constant values, subgraphs."""
    for tensor in graph.initializer:
        yield tensor, tensor.name
    for sparse in graph.sparse_initializer:
        yield sparse.values, sparse.values.name
        yield sparse.indices, sparse.indices.name
    yield from _node_tensors(graph.node)


def _node_tensors(nodes, prefix: str = "") -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto held in the attributes of `nodes` (a graph's or a function's), subgraphs included."""
    for node in nodes:
        for attribute in node.attribute:
            label = f"{prefix}{node.name or node.op_type}.{attribute.name}"
            if attribute.HasField("t"):
                yield attribute.t, label
            for tensor in attribute.tensors:
                yield tensor, label
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values, label
                yield attribute.sparse_tensor.indices, label
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Approximate data size from dims and dtype (touching raw_data or ByteSize() would copy or encode it)."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 8
    return math.prod(tensor.dims) * max(itemsize, 1)


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")

"""What the methods read and write in a prepared model: linear layers, their weights and biases, readers.

A *linear layer* is a Conv (any group count), a Gemm (transA=0) or a MatMul with a 2-D constant
weight read as `x @ W`, with its bias where it has one: Conv / Gemm's bias input, or the constant of
an `Add` that alone reads a MatMul's output (PyTorch's exports write `Linear` so). Its output
channels are Conv's axis 1 / the last axis of Gemm and MatMul; scaling output channel c by s and
input channel k by t are the two rewrites every method is built from.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from quant_core.model.data import Dataset, iter_batches
from quant_core.errors import DataError, ModelError
from quant_core.model.model_io import PreparedModel, inspect_model
from quant_core.model.runtime import first_line, session_options

LINEAR_OPS = ("Conv", "Gemm", "MatMul")


def attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


@dataclass(frozen=True)
class LinearLayer:
    """A Conv / Gemm / MatMul with a constant weight: where its weight, bias and output live."""

    name: str                 # the ONNX node name (the layer name everywhere in the lab)
    op_type: str
    activation: str           # the tensor it reads
    weight: str               # initializer name
    bias: str | None          # initializer name of its bias (None: none)
    bias_node: str | None     # the Add holding a MatMul's bias (None: the layer's own input, or none)
    output: str               # the layer's output after its bias (the Add's output for MatMul + Add)
    groups: int = 1
    trans_b: bool = False

    def out_channels(self, w: np.ndarray) -> int:
        return w.shape[0] if self.op_type == "Conv" or (self.op_type == "Gemm" and self.trans_b) else w.shape[1]

    def in_channels(self, w: np.ndarray) -> int:
        if self.op_type == "Conv":
            return w.shape[1] * self.groups
        return w.shape[1] if self.op_type == "Gemm" and self.trans_b else w.shape[0]

    def out_view(self, w: np.ndarray) -> np.ndarray:
        """The weight as (output channel, everything it multiplies): a view for ranges."""
        if self.op_type == "Conv" or (self.op_type == "Gemm" and self.trans_b):
            return w.reshape(w.shape[0], -1)
        return w.T

    def out_ranges(self, w: np.ndarray) -> np.ndarray:
        """max |w| per output channel."""
        return np.abs(self.out_view(w)).max(axis=1)

    def in_ranges(self, w: np.ndarray) -> np.ndarray:
        """max |w| per input channel (every output that reads it)."""
        if self.op_type == "Conv":
            out, per_group = w.shape[0], w.shape[1]
            a = np.abs(w).reshape(self.groups, out // self.groups, per_group, -1)
            return a.max(axis=(1, 3)).reshape(-1)
        if self.op_type == "Gemm" and self.trans_b:
            return np.abs(w).max(axis=0)
        return np.abs(w).max(axis=1)

    def scale_out(self, w: np.ndarray, b: np.ndarray | None, s: np.ndarray):
        """(w, b) with output channel c multiplied by s[c]."""
        s = s.astype(np.float32)
        if self.op_type == "Conv" or (self.op_type == "Gemm" and self.trans_b):
            w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        else:
            w = w * s.reshape(1, -1)
        return w.astype(np.float32), None if b is None else (b * _bias_shaped(s, b)).astype(np.float32)

    def scale_in(self, w: np.ndarray, t: np.ndarray) -> np.ndarray:
        """w with input channel k multiplied by t[k]."""
        t = t.astype(np.float32)
        if self.op_type == "Conv":
            out, per_group = w.shape[0], w.shape[1]
            grid = t.reshape(self.groups, 1, per_group)  # group g, input channel j of the group
            grid = np.broadcast_to(grid, (self.groups, out // self.groups, per_group)).reshape(out, per_group)
            return (w * grid.reshape(out, per_group, *(1,) * (w.ndim - 2))).astype(np.float32)
        if self.op_type == "Gemm" and self.trans_b:
            return (w * t.reshape(1, -1)).astype(np.float32)
        return (w * t.reshape(-1, 1)).astype(np.float32)


def _bias_shaped(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """s shaped to multiply a bias stored as (C,), (1, C) or another broadcastable shape."""
    return s.reshape(b.shape) if b.size == s.size else s


class Graph:
    """A mutable working copy of a prepared model with the lookups the methods need.

    Weights are read and written as numpy arrays; `prepared()` returns the new PreparedModel.
    """

    def __init__(self, prepared: PreparedModel):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(prepared.model)
        self.notes = prepared.notes
        self._initializers = {tensor.name: tensor for tensor in self.model.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._refresh()

    def _refresh(self) -> None:
        self.nodes = {node.name: node for node in self.model.graph.node}
        self.producer = {out: node for node in self.model.graph.node for out in node.output}
        readers = defaultdict(list)
        for node in self.model.graph.node:
            for name in node.input:
                if name:
                    readers[name].append(node)
        self.readers = readers
        self.outputs = {value.name for value in self.model.graph.output}

    # -- weights --------------------------------------------------------------------------------

    def is_constant(self, name: str) -> bool:
        return name in self._initializers

    def array(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = numpy_helper.to_array(self._initializers[name]).astype(np.float32, copy=True)
        return self._arrays[name]

    def set_array(self, name: str, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=np.float32)
        tensor = self._initializers[name]
        if tuple(tensor.dims) != value.shape:
            raise ModelError(f"internal: {name} changes shape {tuple(tensor.dims)} -> {value.shape}")
        tensor.CopyFrom(numpy_helper.from_array(value, name))
        self._arrays[name] = value

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        name = self.unique(name)
        tensor = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        self.model.graph.initializer.append(tensor)
        self._initializers[name] = self.model.graph.initializer[-1]
        return name

    def unique(self, name: str) -> str:
        taken = set(self._initializers) | set(self.producer) | {n.name for n in self.model.graph.node}
        taken |= {value.name for value in self.model.graph.input}
        candidate, index = name, 1
        while candidate in taken:
            candidate, index = f"{name}_{index}", index + 1
        return candidate

    def single_reader(self, tensor: str) -> onnx.NodeProto | None:
        """The one node reading `tensor`, or None when several (or none) read it or it is a graph output."""
        readers = self.readers.get(tensor, [])
        return readers[0] if len(readers) == 1 and tensor not in self.outputs else None

    def shape(self, tensor: str) -> tuple | None:
        for value in (*self.model.graph.value_info, *self.model.graph.input, *self.model.graph.output):
            if value.name == tensor and value.type.tensor_type.HasField("shape"):
                return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)
        return None

    # -- layers ---------------------------------------------------------------------------------

    def linear_layers(self) -> dict[str, LinearLayer]:
        """Every linear layer (see the module docstring), by node name, in graph order."""
        found = {}
        for node in self.model.graph.node:
            layer = self.linear_layer(node)
            if layer is not None:
                found[node.name] = layer
        return found

    def linear_layer(self, node: onnx.NodeProto) -> LinearLayer | None:
        op, inputs = node.op_type, list(node.input)
        if op not in LINEAR_OPS or len(inputs) < 2 or not self.is_constant(inputs[1]) or self.is_constant(inputs[0]):
            return None
        ndim = self.array_ndim(inputs[1])
        if op in ("Gemm", "MatMul") and ndim != 2:
            return None
        if op == "Conv" and ndim < 3:
            return None
        if op == "Gemm" and (attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0
                             or attribute(node, "beta", 1.0) != 1.0):
            return None
        bias = inputs[2] if len(inputs) > 2 and inputs[2] else None
        if bias is not None and not self.is_constant(bias):
            return None
        bias_node, output = None, node.output[0]
        if op == "MatMul":
            add = self.single_reader(output)
            if add is not None and add.op_type == "Add":
                other = [name for name in add.input if name != output]
                if len(other) == 1 and self.is_constant(other[0]):
                    columns = self.array(inputs[1]).shape[1]
                    b = self.array(other[0])
                    if b.size == columns and b.shape[-1] == columns and len(self.readers[other[0]]) == 1:
                        bias, bias_node, output = other[0], add.name, add.output[0]
        if bias is not None and len(self.readers[bias]) != 1:
            return None  # a bias shared by two nodes cannot change for one
        return LinearLayer(node.name, op, inputs[0], inputs[1], bias, bias_node, output,
                           groups=int(attribute(node, "group", 1)), trans_b=bool(attribute(node, "transB", 0)))

    def array_ndim(self, name: str) -> int:
        return len(self._initializers[name].dims)

    def weight_shared(self, layer: LinearLayer) -> bool:
        return len(self.readers[layer.weight]) != 1

    # -- rewriting ------------------------------------------------------------------------------

    def insert_mul(self, tensor: str, factor: np.ndarray, readers: list[onnx.NodeProto], name: str) -> str:
        """Insert `tensor * factor` before `readers` (repointed to the product); return the new node's name."""
        constant = self.add_initializer(f"{name}.scale", factor)
        product = self.unique(f"{tensor}_smoothed")
        node_name = self.unique(name)
        node = helper.make_node("Mul", [tensor, constant], [product], name=node_name)
        for reader in readers:
            for index, value in enumerate(reader.input):
                if value == tensor:
                    reader.input[index] = product
        # Insert right before the first reader so the graph stays topologically sorted.
        position = min(list(self.model.graph.node).index(reader) for reader in readers)
        self.model.graph.node.insert(position, node)
        for value in list(self.model.graph.value_info):
            if value.name == tensor:
                copy = onnx.ValueInfoProto()
                copy.CopyFrom(value)
                copy.name = product
                self.model.graph.value_info.append(copy)
                break
        self._refresh()
        return node_name

    def ensure_bias(self, layer: LinearLayer) -> LinearLayer | None:
        """Give a Conv / Gemm without a bias a zero one (a MatMul without its Add: None)."""
        if layer.bias is not None:
            return layer
        if layer.op_type == "MatMul":
            return None
        node = self.nodes[layer.name]
        w = self.array(layer.weight)
        name = self.add_initializer(f"{layer.weight}.bias", np.zeros(layer.out_channels(w), np.float32))
        while len(node.input) < 2:
            node.input.append("")
        if len(node.input) == 2:
            node.input.append(name)
        else:
            node.input[2] = name
        self._refresh()
        return LinearLayer(layer.name, layer.op_type, layer.activation, layer.weight, name, None, layer.output,
                           layer.groups, layer.trans_b)

    def prepared(self) -> PreparedModel:
        return PreparedModel(model=self.model, info=inspect_model(self.model), notes=self.notes)


class Probe:
    """One onnxruntime session over a model that fetches intermediate tensors, some initializers fed as inputs.

    `run(data, params)` yields, per batch of `data`, {tensor: value} for `fetched`; `params` replaces the
    values of the `fed` initializers (the others keep the model's).
    """

    def __init__(self, model: onnx.ModelProto, fetched: tuple[str, ...], *, fed: tuple[str, ...] = ()):
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        graph = probe.graph
        fed_set = set(fed)
        kept = [tensor for tensor in graph.initializer if tensor.name not in fed_set]
        self.defaults = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer
                         if tensor.name in fed_set}
        del graph.initializer[:]
        graph.initializer.extend(kept)
        for name, value in self.defaults.items():
            graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(value.shape)))
        have = {value.name for value in graph.output}
        graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                            for name in fetched if name not in have)
        try:
            self.session = ort.InferenceSession(probe.SerializeToString(), session_options(1),
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception types
            raise ModelError(f"onnxruntime cannot run the model for a method: {first_line(err)}") from None
        self.fetched = tuple(fetched)
        self.info = inspect_model(model)

    def run(self, data: Dataset, params: Mapping[str, np.ndarray] | None = None, *, batch_size: int = 64,
            cancel=None) -> Iterator[dict[str, np.ndarray]]:
        values = {**self.defaults, **(params or {})}
        fed = {name: np.ascontiguousarray(values[name], dtype=np.float32) for name in self.defaults}
        for feed in iter_batches(data, self.info, batch_size):
            if cancel is not None and cancel():
                from quant_core.engine.calibrate import Cancelled
                raise Cancelled("method cancelled")
            try:
                outputs = self.session.run(list(self.fetched), {**feed, **fed})
            except Exception as err:  # onnxruntime's own exception types
                raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
            yield dict(zip(self.fetched, outputs))


def channel_reduce(x: np.ndarray, axis: int, how: str) -> np.ndarray:
    """max |x| ("absmax") or the sum ("sum") per index of `axis`, over every other axis (float64)."""
    x = np.moveaxis(np.asarray(x), axis, 0).reshape(x.shape[axis], -1)
    if how == "absmax":
        return np.abs(x).max(axis=1).astype(np.float64)
    return x.sum(axis=1, dtype=np.float64)


def channel_count(x: np.ndarray, axis: int) -> int:
    return math.prod(x.shape) // x.shape[axis]

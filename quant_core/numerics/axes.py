"""Which weight axis per-channel and per-group quantization run along, resolved per layer.

`TensorQuant.axis=None` means "the layer's natural axis"; an explicit integer is used as given.
Every consumer (validate, evaluate, size, export / overrides, latency) resolves through `resolve`,
so the simulation, the size count and the export agree on one layout.

Natural axes (y = the layer's output; "reduction" = what one output sums over):

    layer                     weight shape     per-channel (outputs)   per-group (blocks along)
    Conv                      (O, I/g, k...)   0                       I/g x k... flattened: (O, I/g*k...), axis 1
    ConvTranspose             (I, O/g, k...)   1                       0 (input channels)
    Gemm transB=1             (N, K)           0                       1
    Gemm transB=0             (K, N)           1                       0
    MatMul x @ W              (..., K, N)      -1                      -2
    MatMul W @ x              (..., M, K)      -2                      -1
    Gather (embedding)        (V, D)           0 (one scale per row)   1 (along the embedding)
    LSTM / GRU / RNN  W, R    (D, G*H, I)      1 (gate rows)           2 (input / hidden)
    unknown layer / shape     (O, ...)         0                       rest flattened: (O, prod), axis 1

Notes
-----
Conv per-group blocks run along the whole reduction I/g x kh x kw of each output channel (the
weight viewed as (O, I/g*kh*kw)), not along I alone: a first conv with one input channel would
otherwise get one "group" per value. A block larger than its axis is one block per row: for a
2-D weight that is the same grid as per-channel on the other axis (the size counts it so too).
Without the model (a bare `ModelInfo`), a Gemm is taken with ONNX's default transB=0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import onnx

from quant_core.config import TensorQuant
from quant_core.numerics.formats import Granularity

__all__ = ["WeightAxes", "WeightLayout", "layer_axes", "natural_axes", "output_channel_axis", "resolve", "resolve_axis",
           "resolved", "shape_axes", "weight_axes"]


def _attribute(node: onnx.NodeProto | None, name: str, default):
    if node is None:
        return default
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def output_channel_axis(op_type: str, node: onnx.NodeProto | None, *, rank: int = 2) -> int:
    """Return the weight axis of a layer's output channels: Conv 0, ConvTranspose 1, Gemm 0 if transB
    else 1, MatMul the last, Gather 0, LSTM / GRU / RNN 1 (for a MatMul whose weight is its second input)."""
    return natural_axes(op_type, node, rank=rank).channel_axis


@dataclass(frozen=True)
class WeightAxes:
    """Where a layer's weight has its output channels and the reduction that per-group blocks run along."""

    shape: tuple[int, ...]
    channel_axis: int               # per-channel: one scale per index of this axis
    group_axis: int                 # per-group: blocks run along this axis of `group_shape`
    group_shape: tuple[int, ...]    # the weight as its blocks see it (Conv: (O, I/g*k...)); else `shape`


@dataclass(frozen=True)
class WeightLayout:
    """A TensorQuant with a concrete axis and the shape the weight is quantized in (a reshape of its own)."""

    tq: TensorQuant
    shape: tuple[int, ...]


def natural_axes(op_type: str, node: onnx.NodeProto | None, *, rank: int, weight_index: int = 1,
                 shape: tuple[int, ...] | None = None) -> WeightAxes:
    """Return the natural channel and group axes of a weight of `rank` read as input `weight_index` of the op."""
    shape = tuple(shape) if shape is not None else (1,) * rank
    if rank < 2:
        return WeightAxes(shape, 0, 0, shape)
    last = rank - 1
    if op_type == "Conv":
        return WeightAxes(shape, 0, 1, (shape[0], math.prod(shape[1:])))
    if op_type == "ConvTranspose":
        return WeightAxes(shape, 1, 0, shape)
    if op_type == "Gemm":
        trans_b = bool(_attribute(node, "transB", 0))
        return WeightAxes(shape, 0 if trans_b else 1, 1 if trans_b else 0, shape)
    if op_type == "MatMul":
        if weight_index == 0:  # W @ x: W's rows are the outputs
            return WeightAxes(shape, last - 1, last, shape)
        return WeightAxes(shape, last, last - 1, shape)
    if op_type == "Gather":
        return WeightAxes(shape, 0, last, shape)
    if op_type in ("LSTM", "GRU", "RNN") and rank == 3:
        return WeightAxes(shape, 1, 2, shape)
    return shape_axes(shape)


def shape_axes(shape) -> WeightAxes:
    """The axes of a weight known only by its shape: output channels first, the rest flattened is the reduction."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        return WeightAxes(shape, 0, 0, shape)
    return WeightAxes(shape, 0, 1, (shape[0], math.prod(shape[1:])))


def weight_axes(layer, model: onnx.ModelProto | None = None) -> WeightAxes | None:
    """Return the natural axes of a layer's main weight (a `model_io.Layer`), or None if it has no weight.

    `model` (a ModelProto or PreparedModel) gives the node's attributes (Gemm transB); without it
    ONNX's defaults are assumed.
    """
    return _weight_axes(layer, _nodes(model))


def layer_axes(prepared) -> dict[str, WeightAxes]:
    """Return layer name -> natural weight axes for every layer with a weight (a PreparedModel or ModelInfo)."""
    info = getattr(prepared, "info", prepared)
    nodes = _nodes(getattr(prepared, "model", None))
    found = {layer.name: _weight_axes(layer, nodes) for layer in info.layers}
    return {name: axes for name, axes in found.items() if axes is not None}


def _nodes(model) -> dict[str, onnx.NodeProto]:
    model = getattr(model, "model", model)
    if not isinstance(model, onnx.ModelProto):
        return {}
    return {node.name: node for node in model.graph.node}


def _weight_axes(layer, nodes: dict[str, onnx.NodeProto]) -> WeightAxes | None:
    weight = getattr(layer, "weight", None)
    shape = getattr(weight, "shape", None)
    if shape is None:
        return None
    shape = tuple(int(d) for d in shape)
    inputs = tuple(getattr(layer, "inputs", ()) or ())
    name = getattr(weight, "name", None)
    weight_index = inputs.index(name) if name in inputs else 1
    return natural_axes(getattr(layer, "op_type", ""), nodes.get(layer.name), rank=len(shape),
                        weight_index=weight_index, shape=shape)


def resolve(tq: TensorQuant, axes: WeightAxes) -> WeightLayout:
    """Return `tq` with a concrete axis and the shape to quantize the weight in.

    axis=None: per-channel takes `axes.channel_axis`, per-group `axes.group_axis` of `axes.group_shape`.
    An explicit axis is kept (made non-negative when in range) and applies to the weight's own shape.
    Per-tensor has no axis (None), so equal choices resolve equal whatever axis they carried.
    """
    if tq.granularity == Granularity.PER_TENSOR:
        return WeightLayout(tq if tq.axis is None else replace(tq, axis=None), axes.shape)
    rank = len(axes.shape)
    if tq.axis is not None:
        axis = tq.axis % rank if rank and -rank <= tq.axis < rank else tq.axis
        return WeightLayout(tq if axis == tq.axis else replace(tq, axis=axis), axes.shape)
    if tq.granularity == Granularity.PER_GROUP:
        return WeightLayout(replace(tq, axis=axes.group_axis), axes.group_shape)
    return WeightLayout(replace(tq, axis=axes.channel_axis), axes.shape)


def resolved(tq: TensorQuant, layer, model: onnx.ModelProto | None = None) -> TensorQuant:
    """Return `tq` with the layer's natural axis filled in (see `resolve`; for per-group Conv the axis
    refers to the flattened (O, I/g*k...) view, see `resolve(...).shape`)."""
    axes = weight_axes(layer, model)
    return tq if axes is None else resolve(tq, axes).tq


def resolve_axis(tq: TensorQuant, layer, model: onnx.ModelProto | None = None) -> int | None:
    """Return the concrete axis `tq` quantizes the layer's weight along (None per tensor)."""
    return resolved(tq, layer, model).axis

"""A layer's weight quantized exactly as the Evaluator quantizes it (same axes, ranges and formula)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from quant_core.numerics.axes import natural_axes, resolve
from quant_core.config import TensorQuant
from quant_core.numerics.formats import FormatKind, Granularity, RangeMethod
from quant_core.numerics.quantize import fake_quantize_tensor, tensor_range
from quant_core.numerics.ranges import weight_ranges

_PER_OUTPUT_CHANNEL = (FormatKind.BINARY, FormatKind.TERNARY)


def weight_view(graph, layer: str, weight: str, tq: TensorQuant):
    """(resolved TensorQuant, shape the weight is quantized in) for `layer`'s weight, as `Evaluator.weight_layout`."""
    node = graph.nodes[layer]
    x = graph.array(weight)
    index = list(node.input).index(weight) if weight in node.input else 1
    axes = natural_axes(node.op_type, node, rank=x.ndim, weight_index=index, shape=x.shape)
    if tq.format.kind in _PER_OUTPUT_CHANNEL and len(axes.shape) >= 2:
        tq = replace(tq, granularity=Granularity.PER_CHANNEL)
    layout = resolve(tq, axes)
    return layout.tq, layout.shape


def weight_grid_range(graph, layer: str, weight: str, tq: TensorQuant):
    """The (lo, hi) the Evaluator quantizes this weight with (None, None for non-integer formats)."""
    tq, shape = weight_view(graph, layer, weight, tq)
    view = graph.array(weight).reshape(shape)
    if not tq.format.is_integer:
        return None, None
    if tq.range_method != RangeMethod.MINMAX:
        return weight_ranges(view, tq, name=f"{layer} weight")
    return tensor_range(view, granularity=tq.granularity, axis=tq.axis, block_size=tq.block_size,
                        name=f"{layer} weight")


def quantized_weight(graph, layer: str, weight: str, tq: TensorQuant) -> np.ndarray:
    """The weight fake-quantized as `tq` says (float32), equal to `Evaluator.quantized_weight`."""
    resolved, shape = weight_view(graph, layer, weight, tq)
    x = graph.array(weight)
    lo, hi = weight_grid_range(graph, layer, weight, tq)
    values = fake_quantize_tensor(x.reshape(shape), resolved, name=f"{layer} weight", lo=lo, hi=hi)
    return np.ascontiguousarray(values.reshape(x.shape), dtype=np.float32)

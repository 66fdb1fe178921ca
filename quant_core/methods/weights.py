"""A layer's weight quantized exactly as the simulation quantizes it: the engine plan's layout and range rule."""
from __future__ import annotations

import numpy as np

from quant_core.config import TensorQuant
from quant_core.engine.plan import fake_quantized_weight, weight_layout, weight_range
from quant_core.numerics.axes import WeightLayout, natural_axes
from quant_core.numerics.formats import RangeMethod


def layout_for(graph, layer: str, weight: str, tq: TensorQuant) -> WeightLayout:
    """`plan.weight_layout` for `layer`'s weight (as stored in `graph`): concrete axis, shape quantized in."""
    node = graph.nodes[layer]
    x = graph.array(weight)
    index = list(node.input).index(weight) if weight in node.input else 1
    return weight_layout(tq, natural_axes(node.op_type, node, rank=x.ndim, weight_index=index, shape=x.shape))


def weight_view(graph, layer: str, weight: str, tq: TensorQuant):
    """(resolved TensorQuant, shape the weight is quantized in), as the Evaluator's plan resolves them."""
    layout = layout_for(graph, layer, weight, tq)
    return layout.tq, layout.shape


def weight_grid_range(graph, layer: str, weight: str, tq: TensorQuant):
    """The (lo, hi) the simulation quantizes this weight with ((None, None) for non-integer formats)."""
    layout = layout_for(graph, layer, weight, tq)
    return weight_range(graph.array(weight).reshape(layout.shape), layout.tq, name=f"{layer} weight")


def quantized_weight(graph, layer: str, weight: str, tq: TensorQuant) -> np.ndarray:
    """The weight fake-quantized as `tq` says (float32), equal to `Evaluator.quantized_weight`."""
    return fake_quantized_weight(graph.array(weight), layout_for(graph, layer, weight, tq), name=f"{layer} weight")


def minmax_integer_refusal(tq: TensorQuant | None) -> str | None:
    """Why a method that moves weights on the config's grid cannot use `tq` ("" for an FP32 weight: nothing
    to round, not worth a line), or None when `tq` is an integer min-max grid. The grid must not depend
    on the weights' values, or moving a weight would move the grid."""
    if tq is None or tq.format.is_identity:
        return ""
    if not tq.format.is_integer:
        return f"{tq.format.name} is not an integer grid"
    if tq.range_method != RangeMethod.MINMAX:
        return f"{tq.range_method.value} ranges depend on the weights' values (min-max only)"
    return None

"""SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for LLMs").

A MatMul / Gemm input X with a few outlier channels wastes a per-tensor activation grid; dividing
input channel k of X by s_k and multiplying row k of the weight by s_k leaves X W unchanged and
moves the difficulty into the weights (per-channel quantized, where it costs little):

    s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)     (alpha in [0, 1]; 0.5 by default)

max|X_k| comes from the calibration data, max|W_k| over every layer reading X (q, k and v share one
LayerNorm output and one s). The 1/s goes, in this order of preference, into:
the preceding LayerNormalization's scale and bias (when X is read by nothing else that sees values),
the preceding linear layer's output channels and bias, or an inserted `Mul` by 1/s in front of the
layers (an extra FP32 elementwise op in the model and in the export). The report says which.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from quant_core.methods.graph import Graph, LinearLayer, Probe, channel_reduce
from quant_core.methods.report import MethodContext, MethodReport, Series

# Readers that see only the shape of a tensor: a scale on its values does not concern them.
SHAPE_READERS = frozenset({"Shape", "Size"})
SCALE_LIMITS = (1e-5, 1e5)


def smoothing_groups(graph: Graph) -> tuple[dict[str, list[LinearLayer]], list[tuple[str, str]]]:
    """tensor -> the MatMul / Gemm layers reading it as their input; and layers left out, why."""
    groups: dict[str, list[LinearLayer]] = defaultdict(list)
    skipped = []
    for layer in graph.linear_layers().values():
        if layer.op_type == "Conv":
            continue
        if graph.weight_shared(layer):
            skipped.append((layer.name, "its weight is shared with another node"))
            continue
        groups[layer.activation].append(layer)
    return dict(groups), skipped


def _activation_maxima(graph: Graph, tensors: list[str], context: MethodContext) -> dict[str, np.ndarray]:
    probe = Probe(graph.model, tuple(tensors))
    found: dict[str, np.ndarray] = {}
    for values in probe.run(context.data, batch_size=context.batch_size, cancel=context.cancel):
        for tensor in tensors:
            x = values[tensor]
            current = channel_reduce(x, x.ndim - 1, "absmax")
            found[tensor] = np.maximum(found[tensor], current) if tensor in found else current
    return found


def smoothing_scales(act_max: np.ndarray, weight_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_k = act_max_k^alpha / weight_max_k^(1 - alpha); 1 where either is 0; clipped to SCALE_LIMITS."""
    s = np.ones_like(act_max, dtype=np.float64)
    usable = (act_max > 0) & (weight_max > 0)
    s[usable] = act_max[usable] ** alpha / weight_max[usable] ** (1.0 - alpha)
    return np.clip(s, *SCALE_LIMITS)


def fold_inverse_scale(graph: Graph, tensor: str, layers: list[LinearLayer], s: np.ndarray) -> str:
    """Put X / s into the model: fold into the producer when it can hold it, else insert a Mul. Say where."""
    inverse = (1.0 / s).astype(np.float32)
    names = {layer.name for layer in layers}
    readers = graph.readers.get(tensor, [])
    values_read_elsewhere = any(node.name not in names and node.op_type not in SHAPE_READERS for node in readers)
    producer = graph.producer.get(tensor)
    if not values_read_elsewhere and tensor not in graph.outputs and producer is not None:
        if producer.op_type == "LayerNormalization" and _last_axis(producer, graph, tensor):
            constants = [name for name in producer.input[1:3] if name]
            if all(graph.is_constant(name) and len(graph.readers[name]) == 1 and graph.array(name).size == s.size
                   for name in constants):
                for name in constants:
                    graph.set_array(name, graph.array(name) * inverse.reshape(graph.array(name).shape))
                return f"folded into {producer.op_type} {producer.name}"
        previous = next((layer for layer in graph.linear_layers().values() if layer.output == tensor), None)
        if (previous is not None and not graph.weight_shared(previous) and previous.op_type != "Conv"
                and previous.out_channels(graph.array(previous.weight)) == s.size):
            w, b = previous.scale_out(graph.array(previous.weight),
                                      graph.array(previous.bias) if previous.bias else None, inverse)
            graph.set_array(previous.weight, w)
            if previous.bias:
                graph.set_array(previous.bias, b)
            return f"folded into the output channels of {previous.name}"
    node = graph.insert_mul(tensor, inverse, [graph.nodes[layer.name] for layer in layers],
                            f"{layers[0].name}/smoothquant/Mul")
    return f"inserted Mul {node}"


def _last_axis(node, graph: Graph, tensor: str) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    shape = graph.shape(tensor)
    return axis == -1 or (shape is not None and axis == len(shape) - 1)


def apply_smoothquant(prepared, context: MethodContext, *, alpha: float = 0.5) -> tuple[object, MethodReport]:
    """Migrate activation outliers into the weights of every MatMul / Gemm (function-preserving before quantization)."""
    graph = Graph(prepared)
    groups, skipped = smoothing_groups(graph)
    rows, series, changed = [], [], []
    if groups:
        maxima = _activation_maxima(graph, list(groups), context)
        for index, (tensor, layers) in enumerate(groups.items()):
            act = maxima[tensor]
            weights_before = np.max([layer.in_ranges(graph.array(layer.weight)) for layer in layers], axis=0)
            if weights_before.size != act.size:
                skipped.append((", ".join(layer.name for layer in layers),
                                f"the input's last axis ({act.size}) is not the weight's input axis "
                                f"({weights_before.size})"))
                continue
            s = smoothing_scales(act, weights_before.astype(np.float64), alpha)
            for layer in layers:
                graph.set_array(layer.weight, layer.scale_in(graph.array(layer.weight), s))
            where = fold_inverse_scale(graph, tensor, layers, s)
            weights_after = np.max([layer.in_ranges(graph.array(layer.weight)) for layer in layers], axis=0)
            label = ", ".join(layer.name for layer in layers)
            rows.append((label, where, act.size, _spread(act), _spread(act / s), _spread(weights_before),
                         _spread(weights_after)))
            series.append(Series.of(f"{label}: input activation max per channel", act, act / s))
            changed.append(f"{label}: {where}; activation channel spread {_spread(act):.1f}x -> {_spread(act / s):.1f}x")
            if context.progress is not None:
                context.progress((index + 1) / len(groups))
    else:
        changed.append("no MatMul / Gemm with a constant weight: nothing changed")
    report = MethodReport("smoothquant", (("alpha", alpha),), tuple(changed), tuple(skipped),
                          ("layers", "1/s went", "channels", "activation spread before", "activation spread after",
                           "weight spread before", "weight spread after"), tuple(rows), tuple(series))
    return graph.prepared(), report


def _spread(values: np.ndarray) -> float:
    nonzero = values[values > 0]
    return float(nonzero.max() / nonzero.min()) if nonzero.size else 1.0

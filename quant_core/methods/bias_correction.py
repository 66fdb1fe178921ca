"""Empirical bias correction (Nagel et al. 2019, section 4.2; AIMET's empirical variant).

Quantized weights shift each output channel's mean: E[W_q x] - E[W x] = (W_q - W) E[x] != 0. Layer
by layer, in model order, with every earlier layer's weights already quantized and corrected, the
layer's output mean per channel is measured on the calibration data with its weight quantized as
the config says, and its bias moved by the difference to the FP32 model's mean:

    b' = b - (E[y_q] - E[y_fp32])        (mean over samples and every axis but the channel's)

Weights only: activations stay FP32 while measuring (the shift the *weights* cause). The weights
the model keeps are FP32: the simulation and the export quantize them as before (so the grid is
the config's); only the biases change. A Conv / Gemm without a bias gets one; a MatMul without an
Add after it has nowhere to put a correction and is reported.
"""
from __future__ import annotations

import numpy as np

from quant_core.config import QuantConfig

from quant_core.methods.graph import Graph, LinearLayer, Probe, channel_reduce
from quant_core.methods.report import MethodContext, MethodReport
from quant_core.methods.weights import quantized_weight


def _channel_axis(layer: LinearLayer) -> int:
    return 1 if layer.op_type == "Conv" else -1


def _means(probe: Probe, context: MethodContext, params, tensors: dict[str, int]) -> dict[str, np.ndarray]:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for values in probe.run(context.data, params, batch_size=context.batch_size, cancel=context.cancel):
        for tensor, axis in tensors.items():
            x = values[tensor]
            axis = axis % x.ndim
            sums[tensor] = sums.get(tensor, 0) + channel_reduce(x, axis, "sum")
            counts[tensor] = counts.get(tensor, 0) + x.size // x.shape[axis]
    return {tensor: sums[tensor] / counts[tensor] for tensor in tensors}


def corrected_layers(graph: Graph, config: QuantConfig) -> tuple[list[LinearLayer], list[tuple[str, str]]]:
    """The linear layers whose weights the config quantizes, with a bias to correct; and those left out, why."""
    chosen, skipped = [], []
    for layer in graph.linear_layers().values():
        tq = config.for_layer(layer.name).weights
        if tq is None or tq.format.is_identity:
            continue
        if graph.weight_shared(layer):
            skipped.append((layer.name, "its weight is shared with another node"))
            continue
        with_bias = graph.ensure_bias(layer)
        if with_bias is None:
            skipped.append((layer.name, "a MatMul without an Add after it: no bias to correct"))
            continue
        chosen.append(with_bias)
    return chosen, skipped


def apply_bias_correction(prepared, context: MethodContext, **options) -> tuple[object, MethodReport]:
    """Correct each quantized layer's bias by the mean output shift its quantized weight causes."""
    graph = Graph(prepared)
    layers, skipped = corrected_layers(graph, context.config)
    rows, changed = [], []
    if layers:
        fed = tuple(name for layer in layers for name in (layer.weight, layer.bias))
        probe = Probe(graph.model, tuple(dict.fromkeys(layer.output for layer in layers)), fed=fed)
        axes = {layer.output: _channel_axis(layer) for layer in layers}
        reference = _means(probe, context, {}, axes)
        params = {name: graph.array(name) for name in fed}
        for index, layer in enumerate(layers):
            tq = context.config.for_layer(layer.name).weights
            params[layer.weight] = quantized_weight(graph, layer.name, layer.weight, tq)
            measured = _means(probe, context, params, {layer.output: axes[layer.output]})[layer.output]
            shift = measured - reference[layer.output]
            bias = graph.array(layer.bias)
            corrected = (bias - shift.reshape(bias.shape) if bias.size == shift.size else bias - shift).astype(np.float32)
            params[layer.bias] = corrected
            graph.set_array(layer.bias, corrected)
            scale = float(np.abs(reference[layer.output]).mean()) or 1.0
            rows.append((layer.name, tq.format.name, len(shift), float(np.abs(shift).mean()),
                         float(np.abs(shift).max()), float(np.abs(shift).mean()) / scale))
            if context.progress is not None:
                context.progress((index + 1) / len(layers))
        changed.append(f"{len(layers)} bias(es) corrected (weights quantized as the config says, activations FP32 "
                       "while measuring)")
    else:
        changed.append("no layer with quantized weights and a bias: nothing changed")
    report = MethodReport("bias_correction", (), tuple(changed), tuple(skipped),
                          ("layer", "weight format", "channels", "mean |shift|", "max |shift|",
                           "mean |shift| / mean |output|"), tuple(rows))
    return graph.prepared(), report

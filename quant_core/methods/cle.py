"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction").

For two linear layers joined by a positive-homogeneous function f (f(s x) = s f(x) for s > 0, per
channel: ReLU, LeakyReLU, PReLU, max / average pooling, or nothing), output channel c of the first
can be divided by s_c and input channel c of the second multiplied by s_c without changing the model:

    W1'[c] = W1[c] / s_c,  b1'[c] = b1[c] / s_c,  W2'[:, c] = W2[:, c] * s_c,  s_c = sqrt(r1_c / r2_c)

where r1_c = max |W1[c]| and r2_c = max |W2[:, c]|; both ranges become sqrt(r1_c r2_c), so one
per-tensor grid fits every channel. Chains (conv1 -> conv2 -> fc) are equalized pair by pair until
the scales settle. A Flatten between a Conv and a Gemm / MatMul is followed (channel c is the block
of H x W inputs it flattens to).
"""
from __future__ import annotations

import numpy as np

from quant_core.methods.graph import Graph, LinearLayer, Probe, attribute
from quant_core.methods.report import MethodContext, MethodReport, Series

# Ops that commute with a positive per-channel scale and keep channels where they are.
HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "PRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
                         "GlobalMaxPool", "Identity", "Dropout"})
MAX_ROUNDS = 100
SETTLED = 1e-4  # stop when no scale moves a range by more than this fraction


def find_pairs(graph: Graph) -> tuple[list[tuple[LinearLayer, LinearLayer, tuple[str, ...], int]], list[tuple[str, str]]]:
    """Return ([(first, second, ops between, repeat)], [(where, why not)]) for every linear layer's output.

    `repeat` is how many input channels of the second layer one output channel of the first becomes
    (H x W through a Flatten, else 1).
    """
    layers = graph.linear_layers()
    by_name = {layer.name: layer for layer in layers.values()}
    pairs, skipped = [], []
    for first in layers.values():
        tensor, between, repeat, why = first.output, [], 1, None
        while True:
            readers = graph.readers.get(tensor, [])
            if tensor in graph.outputs:
                why = "its output is a model output"
                break
            if len(readers) != 1:
                why = f"its output{' (after ' + ', '.join(between) + ')' if between else ''} is read by {len(readers)} nodes"
                break
            node = readers[0]
            if node.name in by_name and by_name[node.name].activation == tensor:
                second = by_name[node.name]
                break
            if node.op_type == "Flatten" and "Flatten" not in between:
                shape = graph.shape(tensor)
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                if first.op_type != "Conv" or axis != 1 or shape is None or len(shape) != 4 or None in shape[2:]:
                    why = "Flatten (not of axis 1 of a known N x C x H x W tensor)"
                    break
                repeat = int(shape[2] * shape[3])
            elif node.op_type == "PRelu":
                if not graph.is_constant(node.input[1]) or np.any(graph.array(node.input[1]) < 0):
                    why = "PRelu with a slope that is not a constant >= 0"
                    break
            elif node.op_type not in HOMOGENEOUS:
                why = f"{node.op_type} ({node.name}) is not positive-homogeneous"
                break
            between.append(node.op_type)
            tensor = node.output[0]
        if why is not None:
            skipped.append((first.name, why))
            continue
        w1, w2 = graph.array(first.weight), graph.array(second.weight)
        if graph.weight_shared(first) or graph.weight_shared(second):
            skipped.append((f"{first.name} -> {second.name}", "a weight is shared with another node"))
        elif first.out_channels(w1) * repeat != second.in_channels(w2):
            skipped.append((f"{first.name} -> {second.name}",
                            f"{first.out_channels(w1)} output channels do not map onto {second.in_channels(w2)} inputs"))
        else:
            pairs.append((first, second, tuple(between), repeat))
    return pairs, skipped


def _pair_ranges(graph: Graph, first: LinearLayer, second: LinearLayer, repeat: int) -> tuple[np.ndarray, np.ndarray]:
    r1 = first.out_ranges(graph.array(first.weight)).astype(np.float64)
    r2 = second.in_ranges(graph.array(second.weight)).astype(np.float64).reshape(-1, repeat).max(axis=1)
    return r1, r2


def equalize_pair(graph: Graph, first: LinearLayer, second: LinearLayer, repeat: int) -> np.ndarray:
    """Equalize one pair in place; return the scale s applied per channel (all 1: already equal)."""
    r1, r2 = _pair_ranges(graph, first, second, repeat)
    usable = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[usable] = np.sqrt(r1[usable] / r2[usable])
    rescale_pair(graph, first, second, repeat, s)
    return s


def rescale_pair(graph: Graph, first: LinearLayer, second: LinearLayer, repeat: int, s: np.ndarray) -> None:
    """Divide `first`'s output channel c by s[c] and multiply `second`'s input channel(s) c by s[c], in place."""
    w1, b1 = first.scale_out(graph.array(first.weight), graph.array(first.bias) if first.bias else None, 1.0 / s)
    graph.set_array(first.weight, w1)
    if first.bias:
        graph.set_array(first.bias, b1)
    graph.set_array(second.weight, second.scale_in(graph.array(second.weight), np.repeat(s, repeat)))


def equalization_scales(prepared, progress=None) -> tuple[list, list, list[np.ndarray], int]:
    """(pairs, skipped, each pair's total scale per channel, rounds): CLE run to convergence on a copy."""
    graph = Graph(prepared)
    pairs, skipped = find_pairs(graph)
    totals = [np.ones(len(_pair_ranges(graph, first, second, repeat)[0])) for first, second, _, repeat in pairs]
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        moved = 0.0
        for index, (first, second, _, repeat) in enumerate(pairs):
            s = equalize_pair(graph, first, second, repeat)
            totals[index] *= s
            moved = max(moved, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if progress is not None:
            progress(min(1.0, rounds / MAX_ROUNDS))
        if moved < SETTLED:
            break
    return pairs, skipped, totals, rounds


def partially_equalized(prepared, strength: float):
    """The model with each pair rescaled by its CLE scale raised to `strength` (0: unchanged, 1: CLE)."""
    pairs, _, totals, _ = equalization_scales(prepared)
    graph = Graph(prepared)
    for (first, second, _, repeat), total in zip(pairs, totals):
        rescale_pair(graph, first, second, repeat, total ** float(strength))
    return graph.prepared()


# After the first layer's ReLU, ops through which "relu(x) - c" stays "relu(x - c)" shifted by c per channel.
ABSORB_THROUGH = frozenset({"MaxPool", "GlobalMaxPool", "Flatten", "Identity", "Dropout"})


def _absorbable(graph: Graph, first: LinearLayer, second: LinearLayer, between: tuple[str, ...]) -> str | None:
    """Why high-bias absorption cannot run on this pair (None: it can)."""
    if not between or between[0] != "Relu" or any(op not in ABSORB_THROUGH for op in between[1:]):
        return "absorption needs a ReLU right after the first layer (then only max pooling / flatten)"
    if first.bias is None:
        return "the first layer has no bias"
    if second.op_type == "Conv":
        node = graph.nodes[second.name]
        if second.groups != 1 or any(attribute(node, "pads", [0])) or attribute(node, "auto_pad", b"NOTSET") not in (
                b"NOTSET", "NOTSET", b"VALID", "VALID"):
            return "the second Conv pads its input (or is grouped): a shifted input would change at the borders"
    if second.bias is None and second.op_type == "MatMul":
        return "the second layer (a MatMul without an Add) has no bias to take the shift"
    return None


def absorb_high_biases(graph: Graph, pairs, context: MethodContext) -> tuple[list, list]:
    """Move c = max(0, min of the first layer's output per channel on the calibration data) from the first
    layer's bias into the second's: b1 -= c, b2 += W2 c. Exact on the calibration data (relu(x) - c =
    relu(x - c) whenever x >= c); it lowers the ReLU output's range by c per channel."""
    rows, skipped, usable = [], [], []
    for first, second, between, repeat in pairs:
        why = _absorbable(graph, first, second, between)
        if why:
            skipped.append((f"{first.name} -> {second.name} (high-bias absorption)", why))
        else:
            usable.append((first, second, repeat))
    if not usable:
        return rows, skipped
    probe = Probe(graph.model, tuple(dict.fromkeys(first.output for first, _, _ in usable)))
    minima: dict[str, np.ndarray] = {}
    for values in probe.run(context.data, batch_size=context.batch_size, cancel=context.cancel):
        for name, x in values.items():
            low = _channel_min(x)
            minima[name] = np.minimum(minima[name], low) if name in minima else low
    for first, second, repeat in usable:
        c = np.maximum(minima[first.output], 0.0).astype(np.float32)
        if not np.any(c > 0):
            skipped.append((f"{first.name} -> {second.name} (high-bias absorption)",
                            "no channel's output stays above 0 on the calibration data"))
            continue
        second = graph.ensure_bias(second)
        b1 = graph.array(first.bias)
        graph.set_array(first.bias, (b1 - c.reshape(b1.shape)).astype(np.float32))
        w2, b2 = graph.array(second.weight), graph.array(second.bias)
        shift = np.repeat(c, repeat)
        if second.op_type == "Conv":
            delta = w2.sum(axis=tuple(range(2, w2.ndim))) @ shift
        elif second.op_type == "Gemm" and second.trans_b:
            delta = w2 @ shift
        else:
            delta = shift @ w2
        graph.set_array(second.bias, (b2 + delta.reshape(b2.shape)).astype(np.float32))
        rows.append((f"{first.name} -> {second.name}", int(np.sum(c > 0)), float(c.max()), float(c.mean())))
    return rows, skipped


def _channel_min(x: np.ndarray) -> np.ndarray:
    axis = 1 if x.ndim > 2 else x.ndim - 1  # Conv outputs: channels on axis 1; Gemm / MatMul: the last axis
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).min(axis=1).astype(np.float64)


def apply_cle(prepared, context: MethodContext, *, high_bias_absorption: bool = False) -> tuple[object, MethodReport]:
    """Equalize every usable pair of the model (function-preserving up to float rounding); then, when asked,
    absorb high biases into the next layer (exact on the calibration data)."""
    original = Graph(prepared)
    pairs, skipped, totals, rounds = equalization_scales(prepared, context.progress)
    before = [_pair_ranges(original, first, second, repeat) for first, second, _, repeat in pairs]
    graph = Graph(prepared)
    for (first, second, _, repeat), total in zip(pairs, totals):
        rescale_pair(graph, first, second, repeat, total)  # the product of every round's scales, applied once
    if context.progress is not None:
        context.progress(1.0)
    rows, series, changed = [], [], []
    for (first, second, between, repeat), (r1, r2) in zip(pairs, before):
        a1, a2 = _pair_ranges(graph, first, second, repeat)
        label = f"{first.name} -> {second.name}"
        via = " -> ".join(between) or "nothing"
        rows.append((label, via, len(r1), _spread(r1), _spread(a1), _spread(r2), _spread(a2)))
        series.append(Series.of(f"{label}: {first.name} weight range per output channel", r1, a1))
        series.append(Series.of(f"{label}: {second.name} weight range per input channel", r2, a2))
        changed.append(f"{label} (through {via}): {len(r1)} channels; {first.name}'s per-channel range spread "
                       f"{_spread(r1):.1f}x -> {_spread(a1):.1f}x")
    if not pairs:
        changed.append("no pair of layers joined by a positive-homogeneous function: nothing changed")
    else:
        changed.append(f"{len(pairs)} pair(s) equalized in {rounds} round(s)")
    if high_bias_absorption and pairs:
        absorbed, why_not = absorb_high_biases(graph, pairs, context)
        skipped = list(skipped) + why_not
        for label, channels, largest, mean in absorbed:
            changed.append(f"{label}: high bias absorbed on {channels} channel(s) (largest {largest:.3g}, "
                           f"mean {mean:.3g}), exact on the calibration data")
    report = MethodReport("cle", (), tuple(changed), tuple(skipped),
                          ("pair", "through", "channels", "first spread before", "first spread after",
                           "second spread before", "second spread after"), tuple(rows), tuple(series))
    return graph.prepared(), report


def _spread(ranges: np.ndarray) -> float:
    """max / min of the non-zero per-channel ranges (1 = all equal)."""
    nonzero = ranges[ranges > 0]
    return float(nonzero.max() / nonzero.min()) if nonzero.size else 1.0

"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization").

Round-to-nearest is not the best rounding for a layer's *output*: AdaRound learns, per weight,
whether to round down or up on the config's grid, minimising the layer's output reconstruction
error on calibration inputs:

    W~ = s * (clip(floor(W / s) + h(V) + z, qmin, qmax) - z),   h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)
    min_V  mean((X W~ - X W)^2) / mean((X W)^2) + lambda * mean(1 - |2 h(V) - 1|^beta)

with beta annealed from 20 to 2 so h ends at 0 or 1; Adam on V. Layer by layer in model order
(Gemm, MatMul, Conv with group 1), fed FP32 inputs, within a time budget (layers not reached keep
round-to-nearest and are reported).

The model then holds the learned grid values as FP32 weights, except each channel's smallest and
largest weight, which keep their own values: the weight's range, hence the config's scale and zero
point, stay what they were, so the simulation's and the export's re-quantization reproduce the
learned integers exactly (`reproduces_codes` checks it for every layer and the report says so).
Integer formats with min-max ranges, per tensor or per channel; others are reported and left.
"""
from __future__ import annotations

import time

import numpy as np

from quant_core.numerics.formats import Granularity
from quant_core.numerics.tensor import quantize_tensor

from quant_core.methods.graph import Graph, LinearLayer, Probe, attribute
from quant_core.methods.report import MethodContext, MethodReport
from quant_core.methods.weights import minmax_integer_refusal, weight_view

ZETA, GAMMA = 1.1, -0.1
MAX_ROWS = 2048          # input rows (samples x positions) each layer is fitted on
WARMUP = 0.2             # fraction of iterations without the rounding regulariser
BETA = (20.0, 2.0)


def _im2col(x: np.ndarray, node, kernel: tuple[int, int]) -> np.ndarray:
    """Rows of Conv input patches: (N * OH * OW, C * kh * kw), matching W.reshape(O, -1)."""
    kh, kw = kernel
    pads = list(attribute(node, "pads", [0, 0, 0, 0]))
    strides = list(attribute(node, "strides", [1, 1]))
    dil = list(attribute(node, "dilations", [1, 1]))
    n, c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((n, c, kh, kw, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dil[0]:i * dil[0] + strides[0] * oh:strides[0],
                                 j * dil[1]:j * dil[1] + strides[1] * ow:strides[1]]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def _supported(graph: Graph, layer: LinearLayer, tq) -> str | None:
    """Why AdaRound cannot run on this layer's weight (None: it can)."""
    refused = minmax_integer_refusal(tq)
    if refused is not None:
        return refused
    if tq.granularity == Granularity.PER_GROUP:
        return "per-group grids are not supported (per-tensor and per-channel are)"
    if graph.weight_shared(layer):
        return "its weight is shared with another node"
    node = graph.nodes[layer.name]
    if layer.op_type == "Conv" and (layer.groups != 1 or graph.array(layer.weight).ndim != 4
                                    or attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
        return "only 2-D convolutions with group 1 and explicit pads"
    return None


def _as_matrix(layer: LinearLayer, a: np.ndarray) -> np.ndarray:
    """A weight-shaped array as the (K, N) matrix the layer's input rows multiply."""
    if layer.op_type == "Conv":
        return a.reshape(a.shape[0], -1).T
    if layer.op_type == "Gemm" and layer.trans_b:
        return a.T
    return a


def _from_matrix(layer: LinearLayer, m: np.ndarray, shape) -> np.ndarray:
    if layer.op_type == "Conv":
        return m.T.reshape(shape)
    if layer.op_type == "Gemm" and layer.trans_b:
        return m.T
    return m


def _rows(graph: Graph, layer: LinearLayer, x: np.ndarray, rng) -> np.ndarray:
    if layer.op_type == "Conv":
        w = graph.array(layer.weight)
        x = x[rng.permutation(len(x))[:max(1, MAX_ROWS // 16)]]
        rows = _im2col(x.astype(np.float32), graph.nodes[layer.name], w.shape[2:])
    else:
        rows = x.reshape(-1, x.shape[-1])
    if len(rows) > MAX_ROWS:
        rows = rows[rng.choice(len(rows), MAX_ROWS, replace=False)]
    return rows.astype(np.float32)


def _h(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def learn_rounding(rows: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                   *, iterations: int, reg: float, lr: float, deadline: float) -> tuple[np.ndarray, int]:
    """Learned integer codes q (w's shape, the (K, N) matrix) and the iterations run.

    `scale`, `zero_point` are broadcast to w's shape. Stops at `deadline` (time.perf_counter()) with
    the rounding learned so far (hard: h >= 0.5).
    """
    x = rows.astype(np.float64)
    w = w.astype(np.float64)
    s = scale.astype(np.float64)
    z = zero_point.astype(np.float64)
    base = np.floor(w / s)
    rest = np.clip(w / s - base, 1e-4, 1 - 1e-4)
    v = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)  # h(v) = rest: start at the FP32 weight
    target = x @ w
    power = max(float(np.mean(target ** 2)), 1e-30)
    m, m2 = np.zeros_like(v), np.zeros_like(v)
    done = 0
    for step in range(iterations):
        if time.perf_counter() > deadline:
            break
        sig = 1.0 / (1.0 + np.exp(-v))
        raw = sig * (ZETA - GAMMA) + GAMMA
        h = np.clip(raw, 0.0, 1.0)
        q = base + h + z
        inside = (q >= qmin) & (q <= qmax)
        w_soft = s * (np.clip(q, qmin, qmax) - z)
        error = x @ w_soft - target
        grad_w = 2.0 * (x.T @ error) / (error.size * power)
        grad_h = grad_w * s * inside
        if step >= WARMUP * iterations:
            progress = (step - WARMUP * iterations) / max(1.0, (1 - WARMUP) * iterations)
            beta = BETA[0] + (BETA[1] - BETA[0]) * progress
            centred = 2.0 * h - 1.0
            grad_h += reg * (-beta * np.abs(centred) ** (beta - 1.0) * np.sign(centred) * 2.0) / h.size
        grad_v = grad_h * ((raw > 0) & (raw < 1)) * sig * (1.0 - sig) * (ZETA - GAMMA)
        m = 0.9 * m + 0.1 * grad_v
        m2 = 0.999 * m2 + 0.001 * grad_v ** 2
        v -= lr * (m / (1 - 0.9 ** (step + 1))) / (np.sqrt(m2 / (1 - 0.999 ** (step + 1))) + 1e-8)
        done = step + 1
    h = (_h(v) >= 0.5).astype(np.float64)
    return np.clip(base + h + z, qmin, qmax), done


def _extremes(view: np.ndarray, axis: int | None) -> np.ndarray:
    """Mask of each channel's (or the tensor's) smallest and largest value: they fix the range."""
    mask = np.zeros(view.shape, bool)
    if axis is None:
        mask.flat[np.argmin(view)] = mask.flat[np.argmax(view)] = True
        return mask
    moved = np.moveaxis(view, axis, 0).reshape(view.shape[axis], -1)
    flat = np.zeros(moved.shape, bool)
    rows = np.arange(moved.shape[0])
    flat[rows, moved.argmin(axis=1)] = True
    flat[rows, moved.argmax(axis=1)] = True
    return np.moveaxis(flat.reshape(np.moveaxis(view, axis, 0).shape), 0, axis)


def _channel_extent(codes: np.ndarray, axis: int | None, expand):
    """Each channel's (or the tensor's) smallest and largest code, broadcast to the weight's shape."""
    if axis is None:
        return expand(codes.min()), expand(codes.max())
    rows = np.moveaxis(codes, axis, 0).reshape(codes.shape[axis], -1)
    return expand(rows.min(axis=1)), expand(rows.max(axis=1))


def reproduces_codes(stored: np.ndarray, tq, codes: np.ndarray, name: str = "weight") -> bool:
    """True when quantizing `stored` with `tq` (its own min-max range) gives exactly `codes`."""
    return bool(np.array_equal(quantize_tensor(stored, tq, name=name).codes, codes))


def apply_adaround(prepared, context: MethodContext, *, iterations: int = 300, time_budget_s: float = 60.0,
                   regularization: float = 0.01, learning_rate: float = 0.05) -> tuple[object, MethodReport]:
    """Learn up / down rounding per weight of each quantized Conv / Gemm / MatMul (config-dependent)."""
    graph = Graph(prepared)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    deadline = started + time_budget_s
    chosen, skipped = [], []
    for layer in graph.linear_layers().values():
        tq = context.config.for_layer(layer.name).weights
        why = _supported(graph, layer, tq)
        if why:
            skipped.append((layer.name, why))
        elif why is None:
            chosen.append((layer, tq))
    rows_out, changed, stopped = [], [], False
    inputs = {}
    if chosen:
        probe = Probe(graph.model, tuple(dict.fromkeys(layer.activation for layer, _ in chosen)))
        for values in probe.run(context.data, batch_size=context.batch_size, cancel=context.cancel):
            for name, value in values.items():
                inputs.setdefault(name, []).append(value)
        inputs = {name: np.concatenate(parts) for name, parts in inputs.items()}
    for index, (layer, tq) in enumerate(chosen):
        if context.cancel is not None and context.cancel():
            from quant_core.engine.calibrate import Cancelled
            raise Cancelled("AdaRound cancelled")
        if time.perf_counter() > deadline:
            stopped = True
            skipped.append((layer.name, f"not reached within the time budget ({time_budget_s:g} s): round-to-nearest"))
            continue
        layer_start = time.perf_counter()
        resolved, shape = weight_view(graph, layer.name, layer.weight, tq)
        w = graph.array(layer.weight)
        quantized = quantize_tensor(w.reshape(shape), resolved, name=f"{layer.name} weight")
        axis = quantized.axis
        expand = (lambda a: np.broadcast_to(a.reshape([-1 if i == axis else 1 for i in range(w.ndim)]), w.shape)) \
            if axis is not None else (lambda a: np.broadcast_to(np.asarray(a).reshape(()), w.shape))
        scale, zero_point = expand(quantized.scale), expand(quantized.zero_point)
        qmin, qmax = _limits(resolved)
        rows = _rows(graph, layer, inputs[layer.activation], rng)
        matrix = _as_matrix(layer, w)
        layer_deadline = min(deadline, time.perf_counter() + max(1.0, (deadline - time.perf_counter())
                                                                 / max(1, len(chosen) - index)))
        codes_m, steps = learn_rounding(rows, matrix, _as_matrix(layer, scale), _as_matrix(layer, zero_point),
                                        qmin, qmax, iterations=iterations, reg=regularization, lr=learning_rate,
                                        deadline=layer_deadline)
        codes = _from_matrix(layer, codes_m, w.shape)
        # Only codes inside the range the kept extremes give survive re-quantization: clip to their codes.
        code_lo, code_hi = _channel_extent(quantized.codes.reshape(w.shape), axis, expand)
        codes = np.clip(codes, code_lo, code_hi)
        extremes = _extremes(w, axis)
        codes = np.where(extremes, quantized.codes, codes)  # the range-fixing weights keep round-to-nearest
        stored = (scale.astype(np.float32) * (codes - zero_point).astype(np.float32)).astype(np.float32)
        stored = np.where(extremes, w, stored)
        lo, hi = (w.min(), w.max()) if axis is None else (expand(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).min(axis=1)),
                                                          expand(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1)))
        stored = np.clip(stored, lo, hi).astype(np.float32)
        exact = reproduces_codes(stored, resolved, codes.astype(quantized.codes.dtype), f"{layer.name} weight")
        rtn_error = _relative_error(rows, matrix, _as_matrix(layer, quantized.values.reshape(w.shape)))
        ada_error = _relative_error(rows, matrix, _as_matrix(layer, quantized_values(stored, resolved)))
        kept = exact and ada_error < rtn_error  # else the layer keeps its weight (round-to-nearest)
        if kept:
            graph.set_array(layer.weight, stored)
        flipped = float(np.mean(codes != quantized.codes)) if kept else 0.0
        rows_out.append((layer.name, resolved.format.name, len(rows), steps, rtn_error,
                         ada_error if kept else rtn_error, flipped, time.perf_counter() - layer_start,
                         "yes" if kept else ("no: no better than round-to-nearest" if exact
                                             else "no: re-quantization would not reproduce it")))
        if context.progress is not None:
            context.progress((index + 1) / len(chosen))
    if rows_out:
        better = sum(1 for row in rows_out if row[8] == "yes")
        changed.append(f"{better} of {len(rows_out)} layer(s) take the learned rounding (output error below "
                       "round-to-nearest, and re-quantization reproduces the learned integers exactly); the others "
                       "keep round-to-nearest")
    else:
        changed.append("no layer with integer min-max weights to round: nothing changed")
    report = MethodReport("adaround", (), tuple(changed), tuple(skipped),
                          ("layer", "format", "input rows", "iterations", "output error RTN",
                           "output error AdaRound", "weights rounded the other way", "seconds",
                           "learned rounding kept"), tuple(rows_out), stopped=stopped)
    return graph.prepared(), report


def quantized_values(x: np.ndarray, tq) -> np.ndarray:
    return quantize_tensor(x, tq).values


def _limits(tq) -> tuple[int, int]:
    from quant_core.numerics.formats import FormatKind, int_limits
    return int_limits(tq.format.bits, signed=tq.format.kind == FormatKind.INT, narrow_range=tq.format.narrow_range)


def _relative_error(rows: np.ndarray, w: np.ndarray, w_q: np.ndarray) -> float:
    """mean((X W_q - X W)^2) / mean((X W)^2): the layer's output error relative to its power."""
    target = rows.astype(np.float64) @ w.astype(np.float64)
    error = rows.astype(np.float64) @ w_q.astype(np.float64) - target
    return float(np.mean(error ** 2) / max(np.mean(target ** 2), 1e-30))

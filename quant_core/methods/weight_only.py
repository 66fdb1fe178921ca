"""Weight-only methods as config methods: GPTQ, AWQ, HQQ (and RTN) on the config's own weight grid.

`quant_core.numerics.weight_only` holds the methods as per-weight functions; here each becomes a step of
`config.methods` that acts on every MatMul / Gemm whose weight the config quantizes, before the format's
rounding. The simulation and the export then quantize the prepared model's weights as the config says
(min-max range per group or per channel, `qparams_from_range`), so each method writes FP32 weights that
the config's rounding turns into the method's integers:

- `gptq`: the layer's grid is the config's, fixed from the original weight (GPTQ's "static groups"); rows
  are rounded in order with their error spread over the later rows (`gptq_on_grid`, the Hessian of the
  layer's calibration inputs). The stored weight is each integer's grid value, except each group's
  smallest and largest weight, which keep their own value (rounded to nearest): the group's range, hence
  its scale and zero point, stay the config's, and re-quantizing gives GPTQ's integers (the report
  counts how many; `reproduced`).
- `awq`: input channel k of every layer reading one tensor is scaled by s_k = mean|x_k|^alpha (1/s folded
  into the LayerNorm or layer before, or an inserted Mul, as SmoothQuant does), alpha searched on the
  layers' output error under the config's rounding; alpha = 0 (no change) wins when nothing better.
- `hqq`: HQQ's half-quadratic iterations (`hqq_parameters`) on the config's grid move each group's scale
  (symmetric) or integer zero point (asymmetric); the new grid is written as a new group range: the
  weights clipped to it and its ends stored on the group's extreme weights. Each group keeps whichever of
  the config's and HQQ's grids has the lower lp error (HQQ's objective).
- `rtn`: the config's rounding is round to nearest already: nothing changes (the baseline, by name).

Layers whose weight is FP32, not an integer min-max grid, per tensor, or grouped along the outputs are
listed as skipped with the reason. Gather embeddings are not handled here (the page's table does).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quant_core.engine.plan import fake_quantized_weight
from quant_core.methods.graph import Graph, LinearLayer, Probe
from quant_core.methods.report import MethodContext, MethodReport
from quant_core.methods.smoothquant import fold_inverse_scale, smoothing_groups
from quant_core.methods.weights import layout_for, minmax_integer_refusal
from quant_core.numerics.formats import Granularity
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import tensor_range
from quant_core.numerics.tensor import quantize_tensor
from quant_core.numerics.weight_only import gptq_on_grid, hqq_parameters

SAMPLE_ROWS = 2048      # calibration rows per layer input kept for output errors and AWQ's search
AWQ_GRID = 20


# -- a layer's weight as the matrix x @ W and the config's grid on it --------------------------------

@dataclass(frozen=True)
class GridForm:
    """A layer's weight as the (K, N) matrix its input rows multiply, and the config's grid on it.

    block: rows per group along K (per channel: K). scale, zero_point, lo, hi: per group [G, N].
    """

    layer: LinearLayer
    tq: object
    transposed: bool
    block: int
    qmin: int
    qmax: int

    def matrix(self, w: np.ndarray) -> np.ndarray:
        return w.T if self.transposed else w

    def weight(self, m: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(m.T if self.transposed else m, dtype=np.float32)

    def grid(self, m: np.ndarray):
        """(scale, zero_point, lo, hi) per group [G, N] of matrix m, by the config's formula."""
        lo, hi = tensor_range(m, granularity=Granularity.PER_GROUP, axis=0, block_size=self.block)
        scale, zero_point = qparams_from_range(lo, hi, self.tq.format, symmetric=self.tq.symmetric)
        return scale, zero_point, lo, hi

    def rows(self, per_group: np.ndarray, k: int) -> np.ndarray:
        """[G, N] -> [K, N]: each row its group's value."""
        return np.repeat(per_group, self.block, axis=0)[:k]


def grid_form(graph: Graph, layer: LinearLayer, tq) -> GridForm | str:
    """The layer's GridForm under `tq`, or why a weight-only method cannot use it (a sentence)."""
    if layer.op_type == "Conv":
        return "Conv layers are not weight-only method layers (MatMul / Gemm)"
    refused = minmax_integer_refusal(tq)
    if refused is not None:
        return refused
    if tq.granularity == Granularity.PER_TENSOR:
        return "per-tensor grids: weight-only methods here need per-group (or per-channel) weights"
    if graph.weight_shared(layer):
        return "its weight is shared with another node"
    layout = layout_for(graph, layer.name, layer.weight, tq)
    w = graph.array(layer.weight)
    transposed = layer.op_type == "Gemm" and layer.trans_b
    k_axis, n_axis = (1, 0) if transposed else (0, 1)
    axis = layout.tq.axis % 2 if layout.tq.axis is not None else None
    if tuple(layout.shape) != w.shape:
        return f"the weight is quantized in shape {tuple(layout.shape)}, not as stored {w.shape}"
    if layout.tq.granularity == Granularity.PER_GROUP:
        if axis != k_axis:
            return "groups run along the outputs, not along the inputs (K)"
        block = layout.tq.block_size
    else:
        if axis != n_axis:
            return "per-channel along the inputs, not the outputs"
        block = w.shape[k_axis]
    qmin, qmax = layout.tq.format.limits
    return GridForm(layer, layout.tq, transposed, block, int(qmin), int(qmax))


def requantized_matrix(graph: Graph, form: GridForm, m: np.ndarray):
    """(values, codes) of matrix m as the simulation quantizes the layer's weight (matrix form)."""
    layout = layout_for(graph, form.layer.name, form.layer.weight, form.tq)
    w = form.weight(m)
    quantized = quantize_tensor(w.reshape(layout.shape), layout.tq, name=f"{form.layer.name} weight")
    return form.matrix(quantized.values.reshape(w.shape)), form.matrix(quantized.codes.reshape(w.shape))


def _fake(graph: Graph, layer: LinearLayer, tq, w: np.ndarray) -> np.ndarray:
    return fake_quantized_weight(w, layout_for(graph, layer.name, layer.weight, tq), name=f"{layer.name} weight")


def output_error(rows: np.ndarray, m: np.ndarray, m_q: np.ndarray) -> float:
    """mean((x W_q - x W)^2) / mean((x W)^2) over calibration rows x: the layer's relative output error."""
    target = rows.astype(np.float64) @ m.astype(np.float64)
    error = rows.astype(np.float64) @ m_q.astype(np.float64) - target
    return float(np.mean(error ** 2) / max(np.mean(target ** 2), 1e-30))


# -- calibration inputs ------------------------------------------------------------------------------

@dataclass
class InputStatistics:
    """One layer input's calibration statistics: x^T x summed, mean |x| summed, a row sample, the row count."""

    gram: np.ndarray
    abs_sum: np.ndarray
    sample: list
    rows: int = 0

    @property
    def hessian(self) -> np.ndarray:
        return 2.0 * self.gram / max(self.rows, 1)

    @property
    def mean_abs(self) -> np.ndarray:
        return (self.abs_sum / max(self.rows, 1)).astype(np.float32)


def input_statistics(graph: Graph, tensors, context: MethodContext, *, gram: bool) -> dict[str, InputStatistics]:
    """Run the calibration data once; per tensor its InputStatistics (`gram`: also x^T x, for GPTQ)."""
    tensors = tuple(dict.fromkeys(tensors))
    rng = np.random.default_rng(0)
    found: dict[str, InputStatistics] = {}
    probe = Probe(graph.model, tensors)
    for values in probe.run(context.data, batch_size=context.batch_size, cancel=context.cancel):
        for tensor in tensors:
            x = np.asarray(values[tensor], dtype=np.float32)
            x = x.reshape(-1, x.shape[-1])
            stats = found.setdefault(tensor, InputStatistics(np.zeros((x.shape[1],) * 2) if gram else None,
                                                             np.zeros(x.shape[1]), []))
            if gram:
                stats.gram += (x.T @ x).astype(np.float64)
            stats.abs_sum += np.abs(x).sum(axis=0, dtype=np.float64)
            keep = x if len(x) <= SAMPLE_ROWS // 4 else x[rng.choice(len(x), SAMPLE_ROWS // 4, replace=False)]
            stats.sample.append(keep)
            stats.rows += len(x)
    for stats in found.values():
        rows = np.concatenate(stats.sample)
        stats.sample = rows if len(rows) <= SAMPLE_ROWS else rows[rng.choice(len(rows), SAMPLE_ROWS, replace=False)]
    return found


def _chosen(graph: Graph, context: MethodContext):
    """([(layer, GridForm)], skipped) for every MatMul / Gemm of the config."""
    chosen, skipped = [], []
    for layer in graph.linear_layers().values():
        form = grid_form(graph, layer, context.config.for_layer(layer.name).weights)
        if isinstance(form, str):
            if form:
                skipped.append((layer.name, form))
        else:
            chosen.append((layer, form))
    return chosen, skipped


def _progress(context: MethodContext, done: int, total: int) -> None:
    if context.progress is not None:
        context.progress(done / max(total, 1))


def _cancelled(context: MethodContext) -> None:
    if context.cancel is not None and context.cancel():
        from quant_core.engine.calibrate import Cancelled
        raise Cancelled("weight-only method cancelled")


# -- GPTQ ----------------------------------------------------------------------------------------------

def gptq_stored(form: GridForm, m: np.ndarray, h: np.ndarray, *, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(stored matrix, GPTQ's codes): the FP32 weight whose re-quantization on the config's grid gives
    GPTQ's integers. Each group's smallest and largest weight keep their value and their nearest code."""
    k = m.shape[0]
    scale, zero_point, lo, hi = form.grid(m)
    scale_rows, zero_rows = form.rows(scale, k), form.rows(zero_point, k).astype(np.float64)
    lo_rows, hi_rows = form.rows(lo, k), form.rows(hi, k)
    extremes = (m == lo_rows) | (m == hi_rows)
    # The bounds the stored weight may reach without changing the group's grid: the range the config's
    # formula sees (with 0, and symmetric about it); a GPTQ integer beyond them lands on the nearest end.
    if form.tq.symmetric:
        hi_rows = np.maximum(np.abs(lo_rows), np.abs(hi_rows))
        lo_rows = -hi_rows
    else:
        lo_rows, hi_rows = np.minimum(lo_rows, 0), np.maximum(hi_rows, 0)
    safe = np.where(scale_rows != 0, scale_rows, np.float32(1.0)).astype(np.float32)

    def code(x):  # the config's rounding, in float32 as `quantize` does it
        return np.clip(np.rint(x.astype(np.float32) / safe) + zero_rows, form.qmin, form.qmax)
    # The codes a stored value inside the bounds can take: a grid end beyond them is out of reach.
    codes = gptq_on_grid(m, h, scale_rows, zero_rows, code(lo_rows), code(hi_rows), fixed=(extremes, code(m)),
                         damp=damp)
    values = ((codes - zero_rows) * scale_rows).astype(np.float32)
    stored = np.clip(np.where(extremes, m, values), lo_rows, hi_rows).astype(np.float32)
    return stored, codes


def apply_gptq(prepared, context: MethodContext, *, damp: float = 0.01) -> tuple[object, MethodReport]:
    """GPTQ on every MatMul / Gemm with an integer per-group or per-channel weight (config-dependent)."""
    graph = Graph(prepared)
    chosen, skipped = _chosen(graph, context)
    stats = input_statistics(graph, [layer.activation for layer, _ in chosen], context, gram=True) if chosen else {}
    rows_out = []
    for index, (layer, form) in enumerate(chosen):
        _cancelled(context)
        w = graph.array(layer.weight)
        m = form.matrix(w)
        x = stats[layer.activation]
        stored, codes = gptq_stored(form, m, x.hessian, damp=damp)
        values, requantized = requantized_matrix(graph, form, stored)
        rtn_error = output_error(x.sample, m, form.matrix(_fake(graph, layer, form.tq, w)))
        gptq_error = output_error(x.sample, m, values)
        reproduced = float(np.mean(requantized == codes))
        kept = gptq_error < rtn_error
        if kept:
            graph.set_array(layer.weight, form.weight(stored))
        rows_out.append((layer.name, form.tq.format.name, form.block, x.rows, rtn_error, gptq_error, reproduced,
                         "yes" if kept else "no: no better than round-to-nearest"))
        _progress(context, index + 1, len(chosen))
    better = sum(row[-1] == "yes" for row in rows_out)
    changed = ([f"{better} of {len(rows_out)} layer(s) take GPTQ's integers on the config's grid (output error "
                "below round-to-nearest on the calibration inputs); the others keep round-to-nearest"]
               if rows_out else ["no MatMul / Gemm with an integer per-group or per-channel weight: nothing changed"])
    report = MethodReport("gptq", (("damp", damp),), tuple(changed), tuple(skipped),
                          ("layer", "format", "group", "calibration rows", "output error RTN", "output error GPTQ",
                           "integers reproduced", "GPTQ kept"), tuple(rows_out))
    return graph.prepared(), report


# -- AWQ -----------------------------------------------------------------------------------------------

def _as_matrix(layer: LinearLayer, w: np.ndarray) -> np.ndarray:
    return w.T if layer.op_type == "Gemm" and layer.trans_b else w


def awq_search(graph: Graph, layers, tqs, x: np.ndarray, mean_abs: np.ndarray, *, grid: int = AWQ_GRID):
    """(alpha, s, errors by alpha): the input-channel factors s = a^alpha / sqrt(max a^alpha * min a^alpha)
    (a = mean|x|) that minimise the layers' summed relative output error under the config's rounding."""
    mean_abs = np.maximum(mean_abs.astype(np.float64), 1e-6)
    weights = [graph.array(layer.weight) for layer in layers]
    errors = {}
    best = (np.inf, 0.0, np.ones_like(mean_abs, dtype=np.float32))
    for step in range(grid):
        alpha = step / grid
        s = mean_abs ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        error = 0.0
        for layer, tq, w in zip(layers, tqs, weights):
            scaled = layer.scale_in(w, s)
            quantized = _as_matrix(layer, _fake(graph, layer, tq, scaled)) / s[:, None]
            error += output_error(x, _as_matrix(layer, w), quantized)
        errors[alpha] = error
        if error < best[0]:
            best = (error, alpha, s)
    return best[1], best[2], errors


def apply_awq(prepared, context: MethodContext, *, grid: int = AWQ_GRID) -> tuple[object, MethodReport]:
    """AWQ: scale each MatMul / Gemm input channel by mean|x|^alpha, alpha searched under the config's rounding."""
    graph = Graph(prepared)
    groups, skipped = smoothing_groups(graph)
    plans = []
    for tensor, layers in groups.items():
        tqs = [context.config.for_layer(layer.name).weights for layer in layers]
        if all(tq is None or tq.format.is_identity for tq in tqs):
            continue
        plans.append((tensor, layers, tqs))
    stats = input_statistics(graph, [tensor for tensor, _, _ in plans], context, gram=False) if plans else {}
    rows_out, changed = [], []
    for index, (tensor, layers, tqs) in enumerate(plans):
        _cancelled(context)
        x = stats[tensor]
        quantized = [(layer, tq) for layer, tq in zip(layers, tqs) if tq is not None and not tq.format.is_identity]
        alpha, s, errors = awq_search(graph, [layer for layer, _ in quantized], [tq for _, tq in quantized],
                                      x.sample, x.mean_abs, grid=grid)
        label = ", ".join(layer.name for layer in layers)
        where = "unchanged (alpha 0: round-to-nearest is best)"
        if alpha > 0:
            for layer in layers:
                graph.set_array(layer.weight, layer.scale_in(graph.array(layer.weight), s))
            where = fold_inverse_scale(graph, tensor, layers, s.astype(np.float64))
        rows_out.append((label, len(s), alpha, errors[0.0], errors[alpha], float(s.max() / s.min()), where))
        _progress(context, index + 1, len(plans))
    scaled = sum(row[2] > 0 for row in rows_out)
    changed.append(f"{scaled} of {len(rows_out)} layer input(s) scaled (alpha > 0 lowered the output error under "
                   "the config's rounding); 1/s folded before them" if rows_out
                   else "no MatMul / Gemm with a quantized weight: nothing changed")
    report = MethodReport("awq", (("grid", grid),), tuple(changed), tuple(skipped),
                          ("layers", "channels", "alpha", "output error RTN", "output error AWQ",
                           "factor spread", "1/s went"), tuple(rows_out))
    return graph.prepared(), report


# -- HQQ -----------------------------------------------------------------------------------------------

def _grouped(m: np.ndarray, block: int) -> np.ndarray:
    """[K, N] -> [G, block, N], the last group padded with NaN."""
    k, n = m.shape
    groups = -(-k // block)
    padded = np.full((groups * block, n), np.nan, dtype=np.float64)
    padded[:k] = m
    return padded.reshape(groups, block, n)


def _lp_per_group(m: np.ndarray, values: np.ndarray, block: int, p: float) -> np.ndarray:
    return np.nansum(np.abs(_grouped(m, block) - _grouped(values, block)) ** p, axis=1)


def hqq_stored(form: GridForm, m: np.ndarray, *, iterations: int = 20, p: float = 0.7) -> np.ndarray:
    """The FP32 matrix whose re-quantization on the config's grid uses HQQ's scale (symmetric) or integer
    zero point (asymmetric): the weights clipped to the new range, its ends stored on the extreme weights."""
    k = m.shape[0]
    scale, zero_point, _, _ = form.grid(m)
    groups = _grouped(m, form.block)
    filled = np.where(np.isnan(groups), 0.0, groups)
    symmetric = form.tq.symmetric
    new_scale, new_zero = hqq_parameters(filled, scale, zero_point, form.qmin, form.qmax, symmetric=symmetric,
                                         iterations=iterations, p=p)
    if symmetric:
        hi = np.abs(new_scale) * (form.qmax - form.qmin) / 2.0
        lo = -hi
    else:
        zero = np.clip(np.round(new_zero), form.qmin, form.qmax)
        lo, hi = (form.qmin - zero) * scale, (form.qmax - zero) * scale
    stored = np.clip(groups, lo[:, None, :], hi[:, None, :])
    columns = np.arange(groups.shape[2])
    index = np.arange(groups.shape[0])[:, None]
    if symmetric:
        top = np.nanargmax(np.abs(groups), axis=1)                              # [G, N]
        sign = np.where(groups[index, top, columns] < 0, -1.0, 1.0)
        stored[index, top, columns] = sign * hi
    else:
        stored[index, np.nanargmax(groups, axis=1), columns] = hi
        stored[index, np.nanargmin(groups, axis=1), columns] = lo
    return stored.reshape(-1, m.shape[1])[:k].astype(np.float32)


def apply_hqq(prepared, context: MethodContext, *, iterations: int = 20, p: float = 0.7) -> tuple[object, MethodReport]:
    """HQQ on every MatMul / Gemm with an integer per-group or per-channel weight: no calibration data."""
    graph = Graph(prepared)
    chosen, skipped = _chosen(graph, context)
    rows_out = []
    for index, (layer, form) in enumerate(chosen):
        _cancelled(context)
        m = form.matrix(graph.array(layer.weight))
        rtn_values, _ = requantized_matrix(graph, form, m)
        candidate = hqq_stored(form, m, iterations=iterations, p=p)
        hqq_values, _ = requantized_matrix(graph, form, candidate)
        better = _lp_per_group(m, hqq_values, form.block, p) < _lp_per_group(m, rtn_values, form.block, p)
        choose = form.rows(better, m.shape[0])
        stored = np.where(choose, candidate, m).astype(np.float32)
        final, _ = requantized_matrix(graph, form, stored)
        before = float(_lp_per_group(m, rtn_values, form.block, p).sum())
        after = float(_lp_per_group(m, final, form.block, p).sum())
        if better.any():
            graph.set_array(layer.weight, form.weight(stored))
        rows_out.append((layer.name, form.tq.format.name, form.block, float(np.mean(better)), before, after))
        _progress(context, index + 1, len(chosen))
    changed = ([f"HQQ's grid taken by {np.mean([row[3] for row in rows_out]):.0%} of the groups of {len(rows_out)} "
                "layer(s) (lower lp error than the config's min-max grid); the rest keep it"]
               if rows_out else ["no MatMul / Gemm with an integer per-group or per-channel weight: nothing changed"])
    report = MethodReport("hqq", (("iterations", iterations), ("p", p)), tuple(changed), tuple(skipped),
                          ("layer", "format", "group", "groups on HQQ's grid", f"lp error (p={p:g}) min-max",
                           "lp error HQQ"), tuple(rows_out))
    return graph.prepared(), report


# -- RTN -----------------------------------------------------------------------------------------------

def apply_rtn(prepared, context: MethodContext) -> tuple[object, MethodReport]:
    """Round to nearest: the config's own rounding, so nothing changes (named for comparisons)."""
    graph = Graph(prepared)
    chosen, skipped = _chosen(graph, context)
    changed = (f"{len(chosen)} layer(s) round to nearest on the config's grid, as without a method: nothing changed",)
    return prepared, MethodReport("rtn", (), changed, tuple(skipped))

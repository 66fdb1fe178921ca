"""The Language model page: a weight-only method on every MatMul weight, its perplexity beside FP32's,
and greedy generation by the FP32 and the quantized model side by side (quant_core.engine.language_model)."""
from __future__ import annotations

import time

import onnxruntime as ort
import plotly.graph_objects as go
import streamlit as st

from quant_core.engine.language_model import (LayerInputs, largest_matmul_weight, WeightOnlySpec, collect_layer_inputs, decode, encode,
                                       greedy_continuation, measure_weight_only, model_perplexity)
from quant_core.engine.tasks import TaskKind, infer_task
from quant_core.numerics.weight_only import BITS, BLOCK_SIZES, WeightOnlyMethod, weight_sqnr_table
from ui.jobs import heavy_job
from ui.setup import LabContext

CALIBRATION_WINDOWS = 64     # windows whose layer inputs feed GPTQ / AWQ (8,192 token positions)
DEFAULT_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
METHOD_HELP = ("RTN rounds each group to nearest (onnxruntime's formula). HQQ optimises each group's zero "
               "point (or scale) without data. GPTQ rounds one input row at a time and spreads the error over "
               "the rows left, using the calibration inputs. AWQ scales input channels by their mean |x|^α "
               "before rounding, α searched on the calibration inputs.")


def is_language_model(ctx: LabContext) -> bool:
    task = ctx.task or infer_task(ctx.info)
    return task.kind == TaskKind.LANGUAGE_MODEL


def context_length(ctx: LabContext) -> int:
    shape = ctx.info.inputs[0].shape
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else 128


def controls() -> tuple[WeightOnlySpec, str, int]:
    """Draw the method, bits, group size, symmetry, prompt and length; return (spec, prompt, tokens)."""
    left, middle, right, last = st.columns(4)
    # Opens on RTN int3 g128: no calibration (fast), and the largest loss of the table, which GPTQ then
    # recovers (docs/language_models.md).
    method = left.selectbox("Method", [m.value for m in WeightOnlyMethod], index=0, key="lm_method",
                            format_func=str.upper, help=METHOD_HELP)
    bits = middle.selectbox("Weight bits", list(BITS), index=0, key="lm_bits",
                            help="4 and 8 bits export as MatMulNBits; 3 bits is simulated only")
    block = right.selectbox("Group size (inputs per scale)", list(BLOCK_SIZES), index=2, key="lm_block")
    symmetric = last.checkbox("Symmetric", value=True, key="lm_symmetric",
                              help="symmetric: zero point 2^(bits-1); asymmetric: one zero point per group")
    prompt = st.text_area("Prompt", DEFAULT_PROMPT, key="lm_prompt", height=90)
    steps = st.slider("Tokens to generate (bytes)", 20, 400, 200, step=20, key="lm_steps")
    return WeightOnlySpec(method, bits, block, symmetric), prompt, steps


def _tokens(data):
    return data.inputs[next(iter(data.inputs))]


@st.cache_resource(max_entries=2, show_spinner="Collecting the calibration inputs of every layer…")
def layer_inputs(model_key: str, data_key: str, _ctx: LabContext) -> dict[str, LayerInputs]:
    with heavy_job("collecting the layers' calibration inputs"):
        return collect_layer_inputs(_ctx.prepared.model, _tokens(_ctx.calibration_data)[:CALIBRATION_WINDOWS])


@st.cache_data(max_entries=4, show_spinner=False)
def fp32_perplexity(model_key: str, data_key: str, _ctx: LabContext) -> float:
    data = _ctx.evaluation_data
    return model_perplexity(_ctx.prepared.model, _tokens(data), data.labels)


@st.cache_resource(max_entries=6, show_spinner="Quantizing every MatMul weight and measuring perplexity…")
def quantized(model_key: str, data_key: str, spec: WeightOnlySpec, _ctx: LabContext):
    """Return (WeightOnlyResult, the simulated model's session) of `spec` (shared, never mutated)."""
    inputs = layer_inputs(model_key, data_key, _ctx) if spec.needs_calibration else None
    data = _ctx.evaluation_data
    with heavy_job("weight-only quantization"):
        result, simulated = measure_weight_only(_ctx.prepared.model, spec, _tokens(data), data.labels, inputs=inputs,
                                                fp32_perplexity=fp32_perplexity(model_key, data_key, _ctx))
    return result, ort.InferenceSession(simulated.SerializeToString(), providers=["CPUExecutionProvider"])


@st.cache_resource(max_entries=4, show_spinner=False)
def fp32_session(model_key: str, _ctx: LabContext) -> ort.InferenceSession:
    return ort.InferenceSession(_ctx.prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])


@st.cache_data(max_entries=64, show_spinner="Generating…")
def generations(model_key: str, data_key: str, spec: WeightOnlySpec, prompt: str, steps: int,
                _ctx: LabContext) -> tuple[str, str]:
    """Greedy continuations of `prompt` by FP32 and by `spec` (deterministic: no sampling)."""
    ids = encode(prompt, vocab=_ctx.info.outputs[0].shape[-1])
    context = context_length(_ctx)
    _, session = quantized(model_key, data_key, spec, _ctx)
    return (decode(greedy_continuation(fp32_session(model_key, _ctx), ids, steps, context=context)),
            decode(greedy_continuation(session, ids, steps, context=context)))


def show(ctx: LabContext, spec: WeightOnlySpec, prompt: str, steps: int) -> None:
    """Perplexity, size and time of `spec`, then the two generations side by side."""
    result, _ = quantized(ctx.model_key, ctx.data_key, spec, ctx)
    ppl, size, quantize_time = st.columns(3)
    ppl.metric(f"Perplexity ({spec.label})", f"{result.perplexity:.3f}",
               f"{result.perplexity_increase:+.3f} vs FP32 {result.fp32_perplexity:.3f}", delta_color="inverse")
    size.metric("MatMul weights", f"{result.weight_bytes / 2**20:.2f} MiB",
                f"{result.weight_bytes / result.fp32_weight_bytes:.1%} of FP32 "
                f"{result.fp32_weight_bytes / 2**20:.2f} MiB", delta_color="off")
    quantize_time.metric("Time to quantize", f"{result.seconds:.1f} s",
                         "calibration inputs excluded" if spec.needs_calibration else "no data needed",
                         delta_color="off")
    fp32_text, quantized_text = generations(ctx.model_key, ctx.data_key, spec, prompt, steps, ctx)
    left, right = st.columns(2)
    left.markdown("**FP32**")
    left.code(prompt + fp32_text, language=None)
    right.markdown(f"**{spec.label}**")
    right.code(prompt + quantized_text, language=None)
    same = next((i for i, (a, b) in enumerate(zip(fp32_text, quantized_text)) if a != b), None)
    st.caption("The two continuations are identical." if same is None else
               f"They part after {same} generated bytes. Greedy decoding: the most likely next byte each step, "
               "so any difference comes from the quantized weights.")


@st.cache_resource(max_entries=8, show_spinner=False)
def _largest_weight(model_key: str, _ctx: LabContext):
    return largest_matmul_weight(_ctx.prepared.model)


@st.cache_data(max_entries=64, show_spinner=False)
def _weight_rows(model_key: str, method: str, bits: int, _weight) -> list:
    return weight_sqnr_table(_weight, methods=(method,), bits=(bits,))


def weight_table(model_key: str, _ctx: LabContext, on_method=None):
    """(layer name, rows of weight_sqnr_table) of the model's largest MatMul / Gemm weight, or None.

    Cached per method and bits; a progress bar shows while cells are computed (HQQ on a large weight takes
    seconds), drawn only once computing takes longer than 0.2 s (no flash when cached). `on_method(layer,
    rows)` is called with the rows so far each time a method is complete but the last (RTN first: fast)."""
    found = _largest_weight(model_key, _ctx)
    if found is None:
        return None
    layer, weight = found
    methods = (WeightOnlyMethod.RTN, WeightOnlyMethod.HQQ)
    cells = [(method.value, bits) for method in methods for bits in BITS]
    slot, started, rows = st.empty(), time.perf_counter(), []
    for index, (method, bits) in enumerate(cells):
        if index and method != cells[index - 1][0] and on_method is not None:
            on_method(layer, rows)
        if time.perf_counter() - started > 0.2:
            slot.progress(index / len(cells), text=f"Quantizing {layer} ({weight.size:,} weights): {method.upper()} "
                                                   f"{bits} bits, every group size…")
        rows = rows + _weight_rows(model_key, method, bits, weight)
    slot.empty()
    return layer, rows


def _weight_figure(layer: str, rows: list) -> go.Figure:
    figure = go.Figure()
    for method in dict.fromkeys(row[0] for row in rows):
        for block in BLOCK_SIZES:
            points = [(bits, sqnr) for name, bits, size, sqnr in rows if name == method and size == block]
            figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                        name=f"{method.upper()} g{block}",
                                        line={"dash": "solid" if method == "rtn" else "dot"}))
    figure.update_layout(title=f"Group-wise weight-only error of {layer} (symmetric)", xaxis_title="weight bits",
                         yaxis_title="SQNR of the weight (dB, higher is better)", height=360,
                         margin={"l": 10, "r": 10, "t": 50, "b": 10})
    figure.update_xaxes(tickvals=list(BITS))
    return figure


def weight_chart(ctx: LabContext) -> None:
    """SQNR of the largest MatMul / Gemm weight for RTN and HQQ × bits × group size (no data needed).

    RTN's lines are drawn as soon as they are known; HQQ's follow (behind the table's progress bar)."""
    chart = st.empty()
    found = weight_table(ctx.model_key, ctx, on_method=lambda layer, rows: chart.plotly_chart(
        _weight_figure(layer, rows)))
    if found is None:
        chart.caption("This model has no MatMul or Gemm weight to quantize group-wise.")
        return
    chart.plotly_chart(_weight_figure(*found), key="lm_weight_chart")


# -- perplexity vs size vs latency ------------------------------------------------------------------

_TRADEOFFS = "_lab_lm_tradeoffs"     # session state: {(model, data, spec): [VariantMeasure]}
TRADEOFF_WINDOWS = 32                # evaluation windows for the variants' perplexity (latency: 1 and 8 windows)


def _tradeoff_specs(spec: WeightOnlySpec) -> dict:
    fixed = {"int8 g32 RTN": WeightOnlySpec(WeightOnlyMethod.RTN, 8, 32, True),
             "int4 g32 RTN": WeightOnlySpec(WeightOnlyMethod.RTN, 4, 32, True)}
    if spec not in fixed.values():
        fixed[f"current: {spec.label}"] = spec
    return fixed


def _measure_tradeoffs(key, spec: WeightOnlySpec, ctx: LabContext) -> None:
    from quant_core.export.lm_variants import exported_variants, measure_variants

    data = ctx.evaluation_data
    tokens, labels = _tokens(data)[:TRADEOFF_WINDOWS], data.labels[:TRADEOFF_WINDOWS]
    inputs = layer_inputs(ctx.model_key, ctx.data_key, ctx) if spec.needs_calibration else None
    bar = st.progress(0.0, text="Exporting the variants and timing them with onnxruntime…")
    with heavy_job("the latency measurement"):
        variants = exported_variants(ctx.prepared.model, _tradeoff_specs(spec), inputs)
        measured = measure_variants(variants, tokens, labels, progress=lambda f: bar.progress(min(f, 1.0)))
    bar.empty()
    st.session_state.setdefault(_TRADEOFFS, {})[key] = measured


def tradeoffs(ctx: LabContext, spec: WeightOnlySpec) -> None:
    """FP32 / int8 / int4 / the current choice exported: perplexity, size and measured latency (on request)."""
    st.subheader("Perplexity vs size vs latency")
    context = context_length(ctx)
    st.caption(f"Each variant exported (MatMulNBits with our integers; 3 bits has no kernel: simulated only, no "
               f"latency) and run by onnxruntime on this machine: one run on 1 and on 8 windows of {context} "
               "tokens, 1 intra-op thread, 2 warm-up runs, the variants timed round-robin twice (median of the "
               f"medians). Perplexity on the first {TRADEOFF_WINDOWS} evaluation windows, by the exported model.")
    key = (ctx.model_key, ctx.data_key, spec)
    if st.button("Measure perplexity, size and latency", key="lm_measure_tradeoffs"):
        _measure_tradeoffs(key, spec, ctx)
    measured = st.session_state.get(_TRADEOFFS, {}).get(key)
    if measured is None:
        st.caption("Press the button: about half a minute on an idle machine.")
        return
    fp32 = next(m for m in measured if m.label == "FP32")
    rows = []
    for m in measured:
        row = {"variant": m.label,
               "how": "exported, run by onnxruntime" if m.latency_ms else
                      "simulated only (no kernel): no file, no latency",
               "perplexity": round(m.perplexity, 4),
               "file MiB": None if m.file_bytes is None else round(m.file_bytes / 2**20, 2),
               "MatMul weights MiB": round(m.weight_bytes / 2**20, 2)}
        for batch, (median, p10, p90) in m.latency_ms.items():
            row[f"batch {batch} ms (median)"] = round(median, 2)
            row[f"batch {batch} × FP32"] = round(median / fp32.latency_ms[batch][0], 2)
        rows.append(row)
    st.dataframe(rows, width="stretch", hide_index=True)
    figure = go.Figure()
    for batch, symbol in ((1, "circle"), (8, "diamond")):
        points = [m for m in measured if batch in m.latency_ms]
        figure.add_trace(go.Scatter(x=[m.latency_ms[batch][0] for m in points], y=[m.perplexity for m in points],
                                    mode="markers+text", text=[m.label for m in points], textposition="top center",
                                    marker={"size": [8 + 20 * m.weight_bytes / fp32.weight_bytes for m in points],
                                            "symbol": symbol},
                                    error_x={"type": "data", "symmetric": False,
                                             "array": [m.latency_ms[batch][2] - m.latency_ms[batch][0] for m in points],
                                             "arrayminus": [m.latency_ms[batch][0] - m.latency_ms[batch][1] for m in points]},
                                    name=f"batch {batch}"))
    figure.update_layout(title="Perplexity against measured latency (marker size: MatMul weight bytes)",
                         xaxis_title="median latency of one run (ms, p10–p90 bars)", xaxis_type="log",
                         yaxis_title="perplexity (lower is better)", height=420,
                         margin={"l": 10, "r": 10, "t": 50, "b": 10})
    st.plotly_chart(figure, key="lm_tradeoff_chart")

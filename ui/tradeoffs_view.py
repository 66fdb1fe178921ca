"""Trade-offs page: accuracy vs MEASURED onnxruntime latency and vs size of the standard variants.

Each variant (quant_core.export.latency.standard_variants) is timed with quant_core.export.latency.measure_latency
and its accuracy is measured by running the exported model itself on the evaluation split. "Accuracy"
is the task's headline metric (quant_core.engine.tasks, the sidebar's Task): the frame's "metric" column names it.
Exports, accuracies and timings are cached (st.cache_data) per model, data, config and settings.

On a shared server a measurement is a heavy job (`ui.jobs.heavy_job`: one at a time, so concurrent
measurements neither slow down nor skew each other), each variant's timing stops after
LATENCY_BUDGET_S seconds (the page says when that cut the timed runs), and the timed runs are capped
so that runs × batch size stays under MAX_TIMED_SAMPLES.
"""
from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pandas as pd
import streamlit as st

from quant_core.config import QuantConfig
from ui import cache, engine_figures, report, run_log
from ui.jobs import heavy_job, job_stopped, resume_job, stoppable_progress, waiting_notice
from ui.report import MeasurementSettings

TRADEOFF_BATCH = "tradeoff_batch"
TRADEOFF_THREADS = "tradeoff_threads"
TRADEOFF_REPEATS = "tradeoff_repeats"
TRADEOFF_MEASURE = "tradeoff_measure"
TRADEOFF_STOP = "tradeoff_stop"
_RESULTS = "_tradeoff_results"  # settings key -> (frame, notes); this session's measurements
_MAX_RESULTS = 8

BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
WARMUP = 5
DEFAULT_REPEATS = 20  # modest: the first visit measures by itself and should take seconds
AUTO_MEASURE_MAX_PARAMS = 1_000_000  # above this, exporting and timing every variant waits for Measure (ocr_rec, 2.7 M: 47 s)
_AUTO_TRIED = "_tradeoff_auto_tried"  # settings keys measured (or tried) without a click in this session
CURRENT_PREFIX = "Current config"
LATENCY_BUDGET_S = 2.0  # timed runs per variant stop after this long (at least 3 runs): 7 variants in ~15 s
MAX_TIMED_SAMPLES = 16_384  # timed runs x batch size per variant: batch 256 gets 64 runs, batch 16 gets 1000


def measurement_controls() -> MeasurementSettings:
    """Batch size, threads and repeats chosen by the user."""
    batch, threads, repeats = st.columns(3)
    batch_size = batch.select_slider("Batch size", BATCH_SIZES, value=1, key=TRADEOFF_BATCH)
    max_threads = max(1, os.cpu_count() or 1)
    thread_count = threads.slider("Threads (intra-op)", 1, max_threads, 1, key=TRADEOFF_THREADS,
                                  disabled=max_threads == 1)
    repeat_count = repeats.number_input("Timed runs per variant", 3, 1000, DEFAULT_REPEATS, step=10,
                                        key=TRADEOFF_REPEATS,
                                        help=f"At most {MAX_TIMED_SAMPLES:,} samples (runs × batch size) and "
                                             f"{LATENCY_BUDGET_S:g} s of timed runs per variant on this shared server.")
    allowed = max_repeats(int(batch_size))
    if repeat_count > allowed:
        st.caption(f"At batch size {batch_size}, at most {allowed} timed runs per variant "
                   f"({MAX_TIMED_SAMPLES:,} samples on this shared server): {allowed} will be timed.")
    return MeasurementSettings(batch_size=int(batch_size), threads=int(thread_count), warmup=WARMUP,
                               repeats=min(int(repeat_count), allowed), cpu_count=os.cpu_count() or 0)


def max_repeats(batch_size: int) -> int:
    """Timed runs allowed per variant at `batch_size`: runs x batch <= MAX_TIMED_SAMPLES, at least 3, at most 1000."""
    return min(1000, max(3, MAX_TIMED_SAMPLES // batch_size))


def default_settings() -> MeasurementSettings:
    """The settings the page opens with: the ones measured without a click."""
    return MeasurementSettings(batch_size=1, threads=1, warmup=WARMUP, repeats=DEFAULT_REPEATS,
                               cpu_count=os.cpu_count() or 0)


def is_cheap(ctx) -> bool:
    """A model small enough to export and time every variant without asking (seconds)."""
    return ctx.info.total_params <= AUTO_MEASURE_MAX_PARAMS


def _settings_key(ctx, config: QuantConfig, settings: MeasurementSettings) -> tuple:
    return (ctx.model_key, ctx.data_key, config.to_json(), settings, cache.task_key(ctx))


# A resource, not data: the exported models are immutable bytes, and copying up to 7 models on
# every read (st.cache_data) would cost memory and time on a large upload.
@st.cache_resource(max_entries=2, show_spinner=False)
def _variants(model_key: str, data_key: str, config_json: str, _ctx, _config: QuantConfig, _calibration):
    from quant_core.export.latency import standard_variants

    return standard_variants(_ctx.prepared, _calibration, _config, calibration_data=_ctx.calibration_data)


# Each entry holds one variant's outputs on the scored samples (at most `evaluate.EVALUATION_OUTPUT_BYTES`):
# two configs' worth of the standard variants.
@st.cache_data(max_entries=12, show_spinner=False)
def _scored_outputs(model_key: str, data_key: str, variant_key: str, index: int, streaming: bool, samples: int,
                    batch_size: int, _model: bytes, _ctx) -> np.ndarray:
    """The exported model's output number `index` (the task's) on the first `samples` evaluation samples (those the
    Evaluator scores: `Evaluator.sample_note`), run by onnxruntime (per frame, or as a stream carrying its own
    state) in batches of `batch_size`."""
    from quant_core.export.latency import model_outputs

    return model_outputs(_model, _ctx.evaluation_data, _ctx.info, index=index, streaming=streaming,
                         samples=samples, batch_size=batch_size)


def _output_runs(ctx, calibration) -> tuple[int, int]:
    """(samples, batch size) of the exported models' runs: the Evaluator's samples, in batches whose FP32
    activations stay within the Evaluator's batch budget (a batch of 256 text lines held 11 GB)."""
    from quant_core.engine.evaluate import EVALUATION_BATCH_BYTES

    per_sample = getattr(calibration, "sample_bytes", None) or 1
    return cache.scored_samples(ctx), int(max(1, min(256, EVALUATION_BATCH_BYTES // per_sample)))


@st.cache_data(max_entries=64, show_spinner=False)
def _latency(model_key: str, data_key: str, variant_key: str, batch_size: int, threads: int, warmup: int,
             repeats: int, time_budget_s: float, token: str, _model: bytes, _data):
    from quant_core.export.latency import measure_latency

    return measure_latency(_model, _data, batch_size=batch_size, threads=threads, warmup=warmup, repeats=repeats,
                           time_budget_s=time_budget_s)


def _task(ctx):
    from quant_core.engine.tasks import infer_task

    return ctx.task if ctx.task is not None else infer_task(ctx.info)


def sizes_and_accuracies(ctx, config: QuantConfig, progress) -> tuple[list[dict], list[str], list[tuple]]:
    """Export every standard variant and run it on the evaluation split: rows without latency yet.

    Returns (rows, notes, to_time): `to_time` holds (row, variant, variant_key) of each exported
    variant, whose row `time_variants` completes. Exports and outputs are cached.
    """
    config_json = config.to_json()
    # Outside the cached export (it may wait for the job slot); the export may quantize Conv outputs.
    calibration = cache.get_calibration(ctx, layer_outputs=True)
    progress(0.0, "Exporting the variants with onnxruntime.quantization…")
    variants = _variants(ctx.model_key, ctx.data_key, config_json, ctx, config, calibration)
    from quant_core.engine.tasks import TaskScorer, output_index

    labels, task = ctx.evaluation_data.labels, _task(ctx)
    scored = output_index(task, ctx.info)
    cache.get_evaluator(ctx)  # its FP32 run decides how many samples are scored (the same as on every page)
    runs = _output_runs(ctx, calibration)
    rows, notes, to_time = [], [], []
    scorer = stream_scorer = None
    for index, variant in enumerate(variants):
        progress((index + 0.5) / len(variants), f"Running {variant.name} on the evaluation data…")
        if variant.model is None:
            notes.append(f"{variant.name}: {variant.note}")
            continue
        variant_key = f"{variant.name}|{config_json if variant.name.startswith(CURRENT_PREFIX) else ''}"
        outputs = _scored_outputs(ctx.model_key, ctx.data_key, variant_key, scored, False, *runs, variant.model, ctx)
        if scorer is None:  # FP32 comes first: every variant is scored against it
            scorer = TaskScorer(outputs, task, None if labels is None else np.asarray(labels)[:len(outputs)],
                                name=ctx.info.outputs[scored].name)
        score = scorer.score(outputs)
        name = variant.name + (" — exported, simulated-only layers kept FP32" if variant.simulated else "")
        row = {"variant": name, "kind": "onnxruntime", "simulated": False,
               "accuracy": score.headline_value, "metric": score.headline, "size_kb": len(variant.model) / 1024,
               "latency_ms": np.nan, "latency_p10_ms": np.nan, "latency_p90_ms": np.nan, "kernels": "not timed yet"}
        if ctx.evaluation_data.streaming:  # beside per frame: the exported model carrying its own state
            streamed = _scored_outputs(ctx.model_key, ctx.data_key, variant_key, scored, True, *runs, variant.model, ctx)
            if stream_scorer is None:
                stream_scorer = TaskScorer(streamed, task, None if labels is None else np.asarray(labels)[:len(streamed)],
                                           name=ctx.info.outputs[scored].name)
            row["streaming_accuracy"] = stream_scorer.score(streamed).headline_value
        rows.append(row)
        to_time.append((row, variant, variant_key))
        if variant.note:
            notes.append(f"{variant.name}: {variant.note}")
        if variant.simulated and variant.name.startswith(CURRENT_PREFIX):
            rows.append(_simulated_row(ctx, config))
    return rows, notes, to_time


def time_variants(ctx, to_time: list[tuple], settings: MeasurementSettings, progress, *,
                  token: str = "") -> list[str]:
    """Time each exported variant with `settings` and fill in its row (cached per settings and `token`).

    Returns a note per variant whose timing LATENCY_BUDGET_S cut short (fewer timed runs than asked).
    """
    notes = []
    for index, (row, variant, variant_key) in enumerate(to_time):
        progress(index / len(to_time), f"Timing {variant.name} ({index + 1} of {len(to_time)}): "
                                       f"{settings.warmup} warm-up + up to {settings.repeats} timed runs…")
        timing = _latency(ctx.model_key, ctx.data_key, variant_key, settings.batch_size, settings.threads,
                          settings.warmup, settings.repeats, LATENCY_BUDGET_S, token, variant.model,
                          ctx.evaluation_data)
        row.update(size_kb=timing.size_bytes / 1024, latency_ms=timing.median_ms, latency_p10_ms=timing.p10_ms,
                   latency_p90_ms=timing.p90_ms, kernels=", ".join(timing.kernels))
        if timing.repeats < settings.repeats:
            notes.append(f"{variant.name}: timed {timing.repeats} of {settings.repeats} runs (the {LATENCY_BUDGET_S:g} s "
                         "time limit per variant on this shared server); its median is over those runs.")
    progress(1.0, "Done")
    return notes


def measure(ctx, config: QuantConfig, settings: MeasurementSettings, progress, *, token: str = "",
            on_sizes=None) -> tuple[pd.DataFrame, list[str]]:
    """Export, run and time every standard variant; return the table and notes (one per variant caveat).

    `on_sizes(frame)` is called with the sizes and accuracies before the timing starts. `token`
    other than "" times again instead of reusing a cached timing of the same settings.
    """
    rows, notes, to_time = sizes_and_accuracies(ctx, config, lambda f, text: progress(0.3 * f, text))
    if on_sizes is not None:
        on_sizes(_with_ratios(pd.DataFrame(rows)))
    notes += time_variants(ctx, to_time, settings, lambda f, text: progress(0.3 + 0.7 * f, text), token=token)
    return _with_ratios(pd.DataFrame(rows)), notes


def _simulated_row(ctx, config: QuantConfig) -> dict:
    # The config as simulated: its own formats everywhere, so accuracy and packed size, but no latency.
    result = cache.evaluate_cached(ctx, config)
    result = cache.evaluate_cached(ctx, config)
    row = {"variant": f"{CURRENT_PREFIX} ({config.name})", "kind": "simulated", "simulated": True,
           "accuracy": result.score.headline_value, "metric": result.score.headline,
           "size_kb": result.size_bytes / 1024, "latency_ms": np.nan, "latency_p10_ms": np.nan,
           "latency_p90_ms": np.nan, "kernels": "none (simulated)", "fp32_size_kb": result.fp32_size_bytes / 1024}
    stream = cache.get_evaluator(ctx).streaming()
    if stream is not None:
        row["streaming_accuracy"] = stream.evaluate(config, task=ctx.task).score.headline_value
    return row


def _with_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    fp32 = frame.iloc[0]  # standard_variants lists FP32 first
    frame["accuracy_change_pp"] = (frame["accuracy"] - fp32["accuracy"]) * 100
    # A simulated row's size is the packed size of its weights: compare it with the packed FP32 size.
    reference = frame.get("fp32_size_kb", pd.Series(np.nan, index=frame.index)).fillna(fp32["size_kb"])
    frame["size_ratio"] = frame["size_kb"] / reference
    frame["speedup"] = fp32["latency_ms"] / frame["latency_ms"]
    return frame.drop(columns=["fp32_size_kb"], errors="ignore")


def _remember(key: tuple, value) -> None:
    results = st.session_state.setdefault(_RESULTS, {})
    results[key] = value
    while len(results) > _MAX_RESULTS:
        results.pop(next(iter(results)))


def _measure_now(ctx, config: QuantConfig, settings: MeasurementSettings, *, token: str = "") -> None:
    """Measure with a progress bar per variant and a Stop, the size chart drawn as soon as sizes are known; keep it."""
    job = ("tradeoffs", _settings_key(ctx, config, settings))
    resume_job(job)
    with stoppable_progress(job, stop_key=TRADEOFF_STOP, stop_label="Stop measuring") as progress:
        preview = st.empty()

        def show_sizes(frame: pd.DataFrame) -> None:
            preview.plotly_chart(engine_figures.tradeoff_figure(frame, x="size_kb"), key="tradeoff_size_preview")

        try:
            # Calibration first (its own heavy job), then exports and timings as one job: timings taken
            # while another user's job runs would measure the contention, not the model.
            cache.get_calibration(ctx, layer_outputs=True)  # the export may quantize Conv outputs
            with heavy_job("the latency measurement", notify=waiting_notice()):
                result = measure(ctx, config, settings, progress, token=token, on_sizes=show_sizes)
        finally:
            preview.empty()
    _remember(_settings_key(ctx, config, settings), result)
    current = result[0][result[0]["variant"].str.startswith(CURRENT_PREFIX)]["latency_ms"].dropna()
    if len(current):  # the current config was exported and timed: its run in the history gets the latency
        run_log.record_latency(ctx, config, float(current.iloc[0]))


def stopped_note(ctx, config: QuantConfig, settings: MeasurementSettings) -> None:
    """Say so when the user stopped the measurement of these settings (Measure starts it again)."""
    if job_stopped(("tradeoffs", _settings_key(ctx, config, settings))):
        st.info("Measurement stopped: nothing was kept. Press Measure to start again.")


def measure_button(ctx, config: QuantConfig, settings: MeasurementSettings) -> None:
    """The Measure button: times every variant again with these settings (a fresh measurement)."""
    if st.button("Measure", key=TRADEOFF_MEASURE, type="primary"):
        _measure_now(ctx, config, settings, token=uuid.uuid4().hex)


def current_results(ctx, config: QuantConfig, settings: MeasurementSettings):
    """(frame, notes) measured for this model, data, config and settings in this session, or None.

    With the default settings on a small model, measures once by itself (shared timings are cached
    per model, data, config and settings, so another session gets them at once).
    """
    key = _settings_key(ctx, config, settings)
    results = st.session_state.get(_RESULTS, {})
    if key not in results and settings == default_settings() and is_cheap(ctx):
        tried = st.session_state.setdefault(_AUTO_TRIED, set())
        if key not in tried:
            tried.add(key)  # once: a failure is shown once, not retried on every rerun
            _measure_now(ctx, config, settings)
    return st.session_state.get(_RESULTS, {}).get(key)


def show_preview(ctx, config: QuantConfig, settings: MeasurementSettings) -> None:
    """Settings not measured yet: the size-vs-accuracy chart (no timing needed) and what Measure adds."""
    if not is_cheap(ctx):
        st.caption(f"This model has {ctx.info.total_params:,} parameters: press Measure to export, run and time "
                   "every variant (this can take minutes).")
        return
    st.caption(f"Not timed yet with these settings ({settings.describe()}): press Measure. Sizes and accuracies "
               "do not depend on them:")
    config_json = config.to_json()
    # The bar appears only when the exports are not cached yet: no flash on every rerun.
    slot, started = st.empty(), time.perf_counter()

    def progress(fraction: float, text: str) -> None:
        if time.perf_counter() - started > 0.2:
            slot.progress(fraction, text=text)

    rows, _, _ = sizes_and_accuracies(ctx, config, progress)
    slot.empty()
    latency_column, size_column = st.columns(2)  # where the results will put their two charts
    latency_column.info("Accuracy vs measured latency: press Measure to time every variant with these settings.")
    size_column.plotly_chart(_preview_figure(ctx.model_key, ctx.data_key, config_json, cache.task_key(ctx),
                                             pd.DataFrame(rows)),
                             key="tradeoff_size")


@st.cache_resource(max_entries=8, show_spinner=False)
def _preview_figure(model_key: str, data_key: str, config_json: str, task_json: str, _rows: pd.DataFrame):
    return engine_figures.tradeoff_figure(_with_ratios(_rows), x="size_kb")


def show_results(ctx, config: QuantConfig, settings: MeasurementSettings, frame: pd.DataFrame,
                 notes: list[str]) -> None:
    """How it was measured, both charts, the before/after table and its downloads."""
    metric = frame["metric"].iloc[0] if "metric" in frame else "accuracy"
    st.info(f"Measured: {settings.describe()}. {metric[:1].upper() + metric[1:]} (the task's metric, sidebar "
            f"Task): each exported model run by onnxruntime on the {cache.scored_samples(ctx)} evaluation "
            "samples.")
    view = _results_view(repr(_settings_key(ctx, config, settings)), frame, notes, ctx.model_name, config, settings)
    latency_figure, size_figure, table, csv, markdown = view
    latency_column, size_column = st.columns(2)
    latency_column.plotly_chart(latency_figure, key="tradeoff_latency")
    size_column.plotly_chart(size_figure, key="tradeoff_size")
    simulated = frame.loc[frame["simulated"], "variant"].tolist()
    if simulated:
        st.caption("Simulated (no onnxruntime kernel, so no latency; size = packed weights and parameters): "
                   + ", ".join(simulated))
    st.dataframe(table, hide_index=True, width="stretch", column_config=compact_columns(table))
    for note in notes:
        st.caption(note)
    csv_column, markdown_column = st.columns(2)
    csv_column.download_button("Table (CSV)", data=csv, file_name="tradeoffs.csv", mime="text/csv",
                               on_click="ignore", key="tradeoff_download_csv")
    markdown_column.download_button("Report (Markdown, with the config JSON)", data=markdown,
                                    file_name="tradeoffs.md", mime="text/markdown", on_click="ignore",
                                    key="tradeoff_download_report")


# Short headings for the narrow columns of the results table (the CSV and the report keep the long ones).
_SHORT_HEADINGS = {"latency median (ms)": "median (ms)", "latency p10 (ms)": "p10 (ms)", "latency p90 (ms)": "p90 (ms)",
                   "speed-up vs FP32": "speed-up", "size vs FP32": "size ×", "size (KB)": "KB"}


def compact_columns(table: pd.DataFrame) -> dict:
    """Column settings that fit the results table in a 1400-px window: numbers in small columns under short
    headings (the full heading as the column's help), names and kernels wider."""
    columns = {}
    for name in table.columns:
        if name in ("variant", "kernels"):
            columns[name] = st.column_config.TextColumn(name, width="medium")
        else:
            columns[name] = st.column_config.Column(_SHORT_HEADINGS.get(name, name), help=name, width="small")
    return columns


# Built once per measurement (figures with one trace per variant cost ~50 ms each) and shared:
# st.plotly_chart, st.dataframe and st.download_button only read them.
@st.cache_resource(max_entries=8, show_spinner=False)
def _results_view(key: str, _frame: pd.DataFrame, _notes, _model_name: str, _config: QuantConfig,
                  _settings: MeasurementSettings):
    table = report.report_table(_frame)
    table["kernels"] = _frame["kernels"].to_numpy()
    markdown = report.tradeoffs_markdown(_frame, model_name=_model_name, config=_config, settings=_settings,
                                         notes=list(_notes))
    return (engine_figures.tradeoff_figure(_frame, x="latency_ms"), engine_figures.tradeoff_figure(_frame, x="size_kb"),
            table, report.tradeoffs_csv(_frame), markdown)

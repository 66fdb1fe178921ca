"""Sensitivity page: a cancellable per-layer sweep, its heatmap and ranking, and the size-budget suggestion.

The sweep runs one layer at a time and stores each finished layer in session state, so a Stop
click (which interrupts the script run) or any other rerun keeps what was already measured. Each
layer's rows are also cached (st.cache_data) per (model, data, formats, scope, layer), so a sweep
already run in this or another session comes back at once. On the first visit of a model whose
default sweep is cheap (layers x formats <= AUTO_SWEEP_MAX_CONFIGS) the default weights-only sweep
starts by itself; a larger model waits for Run sweep and shows an empty heatmap of its layers.

Sweeps and suggestions are heavy jobs (`ui.jobs.heavy_job`): a sweep takes the server's slot one
layer at a time (another user's job can start between two layers), and stops by itself after
SWEEP_TIME_BUDGET_S seconds of measuring, keeping the finished layers. A suggestion holds the slot for
its whole search, so it stops after SUGGESTION_TIME_BUDGET_S seconds of searching with the best config
found so far (`suggest_config(time_budget_s=...)`), and the page says so.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS, LayerQuant
from quant_core.errors import QuantLabError
from quant_core.model.validate import validate_config
from quant_core.numerics.formats import parse_format
from quant_core.search.suggest import DEFAULT_CANDIDATES as SUGGESTION_FORMATS
from ui import cache, engine_figures, state, task_view
from ui.activations_view import calibrate_with_progress
from ui.jobs import heavy_job, waiting_notice

SENS_FORMATS = "sens_formats"
SENS_ACTIVATIONS = "sens_activations"
SENS_RUN = "sens_run"
SENS_STOP = "sens_stop"
SENS_METRIC = "sens_metric"
SENS_PICK_LAYER = "sens_pick_layer"
SENS_PICK_FORMAT = "sens_pick_format"
SENS_APPLY_CELL = "sens_apply_cell"
SENS_BUDGET_KIND = "sens_budget_kind"
SENS_SIZE_BUDGET = "sens_size_budget"
SENS_MIN_ACCURACY = "sens_min_accuracy"
SENS_MAX_PERPLEXITY = "sens_max_perplexity_increase"
SENS_SUGGEST = "sens_suggest"
SENS_APPLY_SUGGESTION = "sens_apply_suggestion"
SENS_CANCEL_SUGGESTION = "sens_cancel_suggestion"
_JOB = "_sens_job"
_SUGGESTION = "_sens_suggestion"
_MESSAGE = "_sens_message"
_SUGGESTION_MESSAGE = "_sens_suggestion_message"
_APPLIED = "_sens_applied"
_APPLIED_SUGGESTION = "_sens_applied_suggestion"

SWEEP_FORMATS = ["int8", "int6", "int5", "int4", "int3", "int2", "uint8", "fp16", "bf16", "fp8_e4m3fn",
                 "fp8_e5m2", "binary", "ternary", "kmeans2", "kmeans3", "kmeans4",
                 "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "mxfp4_up", "mxint8", "nvfp4"]  # block formats: simulated
DEFAULT_SWEEP_FORMATS = list(SUGGESTION_FORMATS)  # so that the sweep also speeds up the suggestion
WEIGHTS_ONLY, WEIGHTS_AND_ACTIVATIONS = "weights only", "weights + activations"
DROP, SQNR = "accuracy drop (pp)", "SQNR (dB)"
SIZE_BUDGET, MIN_ACCURACY = "size budget", "minimum accuracy"
FP32 = PRESETS["FP32"]
AUTO_SWEEP_MAX_CONFIGS = 100  # layers x formats of the default sweep run on a first visit (demos: 15 to 70)
SWEEP_TIME_BUDGET_S = 300.0  # measuring time per sweep (waits for the server's job slot not counted)
SUGGESTION_TIME_BUDGET_S = 120.0  # searching time per suggestion (the wait for the job slot not counted)
_AUTO_STARTED = "_sens_auto_started"  # (model_key, data_key) pairs whose default sweep this session started


@dataclass
class SweepJob:
    """A sweep in progress or finished: what was asked, and the rows measured so far."""

    key: tuple  # (model_key, data_key, task key): a job belongs to one model, its data and the task
    formats: tuple[str, ...]
    activations: bool
    layers: tuple[str, ...]
    rows: list = field(default_factory=list)
    done_layers: int = 0
    stopped: bool = False
    measured_s: float = 0.0  # time spent measuring its layers
    out_of_time: bool = False  # stopped by SWEEP_TIME_BUDGET_S, not by the user

    @property
    def finished(self) -> bool:
        return self.stopped or self.done_layers >= len(self.layers)


def load_evaluator(ctx):
    """(Evaluator, FP32 result) of the current model and data; calibrates once (with a progress bar).

    Stops the page with a one-line error when the model cannot be evaluated.
    """
    calibrate_with_progress(ctx)  # outside the cached Evaluator, so its bar can move (as Mixed precision does)
    try:
        # Then a spinner: the Evaluator is built inside a cached function, and an element created outside
        # it cannot be updated from inside (Streamlit replays cached effects).
        with st.spinner("Building the simulation session and running FP32 (once per model)…"):
            evaluator = cache.get_evaluator(ctx)
            baseline = cache.evaluate_cached(ctx, FP32)
    except QuantLabError as err:
        st.error(str(err))
        st.stop()
    except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
        st.error(f"Could not evaluate this model: {type(err).__name__}: {err}. Try another model or data.")
        st.stop()
    return evaluator, baseline


def _ctx_key(ctx) -> tuple:
    """What a sweep or a suggestion was measured for: the model, its data and the task (its metric)."""
    return ctx.model_key, ctx.data_key, cache.task_key(ctx)


def _job(ctx) -> SweepJob | None:
    job = st.session_state.get(_JOB)
    return job if job is not None and job.key == _ctx_key(ctx) else None


def _start(ctx_key: tuple, layers: tuple[str, ...]) -> None:
    formats = tuple(st.session_state[SENS_FORMATS])
    st.session_state[_MESSAGE] = None
    if not formats:
        st.session_state[_MESSAGE] = "Pick at least one format to sweep."
        return
    st.session_state[_JOB] = SweepJob(ctx_key, formats, st.session_state[SENS_ACTIVATIONS] == WEIGHTS_AND_ACTIVATIONS,
                                      layers)


def start_default_sweep(ctx, evaluator) -> bool:
    """On the first visit of a model, start the default weights-only sweep when it is cheap; say if it was.

    Runs once per (model, data) in a session: after a Stop, or once the user ran their own sweep,
    nothing restarts by itself.
    """
    ctx_key = _ctx_key(ctx)
    started = st.session_state.setdefault(_AUTO_STARTED, set())
    layers = tuple(evaluator.layers)
    if ctx_key in started or _job(ctx) is not None or not is_cheap(len(layers), len(DEFAULT_SWEEP_FORMATS)):
        return False
    started.add(ctx_key)
    st.session_state[_JOB] = SweepJob(ctx_key, tuple(DEFAULT_SWEEP_FORMATS), False, layers)
    return True


def is_cheap(layer_count: int, format_count: int) -> bool:
    """A sweep small enough to run without asking (a few seconds on this machine)."""
    return layer_count * format_count <= AUTO_SWEEP_MAX_CONFIGS


def _stop() -> None:
    job = st.session_state.get(_JOB)
    if job is not None:
        job.stopped = True


def sweep_controls(ctx, evaluator) -> None:
    """Formats, scope, Run and Stop."""
    st.multiselect("Formats to try", SWEEP_FORMATS, default=DEFAULT_SWEEP_FORMATS, key=SENS_FORMATS)
    st.radio("Quantize", [WEIGHTS_ONLY, WEIGHTS_AND_ACTIVATIONS], key=SENS_ACTIVATIONS, horizontal=True,
             help="weights + activations also quantizes the layer's input activation (integer and float "
                  "formats; binary, ternary and k-means stay weight-only)")
    run, stop = st.columns(2)
    run.button("Run sweep", key=SENS_RUN, type="primary", on_click=_start,
               args=(_ctx_key(ctx), tuple(evaluator.layers)))
    job = _job(ctx)
    stop.button("Stop sweep", key=SENS_STOP, on_click=_stop, disabled=job is None or job.finished)
    if message := st.session_state.get(_MESSAGE):
        st.warning(message)


def run_pending(ctx, evaluator) -> SweepJob | None:
    """Continue the current sweep one layer at a time (each layer's rows are kept as soon as done)."""
    job = _job(ctx)
    if job is None or job.finished:
        return job
    total = len(job.layers)
    bar = st.progress(job.done_layers / total, text="Sweeping…")
    notify = waiting_notice()
    while job.done_layers < total and not job.stopped:
        if job.measured_s >= SWEEP_TIME_BUDGET_S:
            job.stopped = job.out_of_time = True
            break
        layer = job.layers[job.done_layers]
        bar.progress(job.done_layers / total, text=f"Sweeping layer {job.done_layers + 1} of {total}: {layer}")
        try:
            # One layer per slot: between two layers another user's heavy job may start.
            with heavy_job("the sensitivity sweep", notify=notify):
                started = time.perf_counter()
                rows = _layer_rows(ctx.model_key, ctx.data_key, cache.task_key(ctx), job.formats, job.activations,
                                   layer, evaluator, ctx.task)
                job.measured_s += time.perf_counter() - started
        except Exception:
            job.stopped = True  # shown once by the page; not retried on every rerun
            raise
        job.rows.extend(rows)
        job.done_layers += 1
    bar.empty()
    # Stop was drawn enabled above the sweep: draw the page again so that it shows the finished state.
    st.rerun()
    return job


# Per layer, so a Stop keeps every finished layer cached too; rows are small frozen dataclasses.
@st.cache_data(max_entries=2048, show_spinner=False)
def _layer_rows(model_key: str, data_key: str, task_json: str, formats: tuple[str, ...], activations: bool,
                layer: str, _evaluator, _task) -> list:
    from quant_core.search.sensitivity import run_sweep

    return run_sweep(_evaluator, list(formats), activations=activations, layers=[layer], task=_task)


def show_placeholder(ctx, evaluator, baseline=None) -> None:
    """Before any sweep: the empty heatmap (the model's layers × the chosen formats) and what it will show."""
    from quant_core.search.budget import budget_unit

    formats = tuple(st.session_state.get(SENS_FORMATS) or DEFAULT_SWEEP_FORMATS)
    layers = tuple(evaluator.layers)
    st.info(f"{len(layers)} layers × {len(formats)} formats = {len(layers) * len(formats)} evaluations: press "
            "Run sweep to measure them (progress is shown and Stop keeps the finished layers).")
    perplexity = baseline is not None and budget_unit(baseline.score).is_perplexity
    metric = "perplexity" if perplexity else task_view.short_headline(ctx.task)
    st.plotly_chart(_placeholder_figure(ctx.model_key, layers, formats, metric), key="sens_heatmap")


@st.cache_resource(max_entries=8, show_spinner=False)
def _placeholder_figure(model_key: str, layers: tuple[str, ...], formats: tuple[str, ...], metric: str):
    return engine_figures.sensitivity_placeholder(list(layers), list(formats), metric)


def sweep_frame(rows, fp32_score: float, unit=None) -> pd.DataFrame:
    """One row per (layer, format): SQNR, the task's headline metric (`score`) and its drop vs FP32 in pp;
    for a language model (`unit` a perplexity BudgetUnit) also the perplexity increase vs FP32."""
    frame = pd.DataFrame([row.to_dict() for row in rows])
    frame["drop_pp"] = (fp32_score - frame["score"].astype(float)) * 100
    if unit is not None and unit.is_perplexity:
        frame["perplexity_increase"] = [unit.from_headline(float(v)) for v in frame["score"]]
    return frame


def ranking(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Layers from most to least sensitive: the worst drop over the swept formats, then the lowest SQNR."""
    worst = frame.sort_values(["drop_pp", "sqnr_db"], ascending=[False, True]).groupby("layer", sort=False).head(1)
    table = worst[["layer", "format", "drop_pp", "sqnr_db"]].reset_index(drop=True).round(2)
    table.index = table.index + 1
    return table.rename(columns={"format": "worst format", "drop_pp": f"{metric} drop (pp)", "sqnr_db": "SQNR (dB)"})


def show_sweep(ctx, job: SweepJob, baseline) -> None:
    """Status line, the heatmap (drop of the task's headline metric, or SQNR) and the ranked list."""
    from quant_core.search.budget import budget_unit

    fp32 = baseline.score
    unit = budget_unit(fp32)
    metric = task_view.metric_name(fp32.headline, ctx.task)
    status = "stopped" if job.stopped and job.done_layers < len(job.layers) else "finished"
    if job.out_of_time:
        status = (f"stopped after {job.measured_s:.0f} s (the time limit of a sweep on this shared server is "
                  f"{SWEEP_TIME_BUDGET_S:.0f} s: sweep fewer formats, or fewer layers at a time)")
    st.caption(f"Sweep {status}: {job.done_layers} of {len(job.layers)} layers × {len(job.formats)} formats "
               f"({'weights + activations' if job.activations else 'weights only'}); every other layer FP32. "
               + (f"Each cell: perplexity with that one layer quantized, minus FP32's {unit.fp32_perplexity:.3f}."
                  if unit.is_perplexity else
                  f"Drop = {metric} lost vs FP32 (FP32: {task_view.metric_text(fp32.headline, fp32.headline_value)}).")
               + (f" Labels not scored: {fp32.labels_note}." if fp32.labels_note else ""))
    drop_label = "perplexity increase vs FP32" if unit.is_perplexity else f"{metric} drop (pp)"
    shown = st.radio("Heatmap shows", [DROP, SQNR], key=SENS_METRIC, horizontal=True,
                     format_func=lambda option: drop_label if option == DROP else option)
    key = (*_ctx_key(ctx), job.formats, job.activations, job.done_layers, len(job.rows))
    figure, ranked_table = _sweep_view(key, shown, metric, job.rows, fp32.headline_value, unit)
    st.plotly_chart(figure, key="sens_heatmap")
    st.markdown("**Most sensitive layers** (worst drop over the swept formats)")
    st.dataframe(ranked_table, width="stretch")


# Cached and shared (st.plotly_chart / st.dataframe only read them): a rerun caused by another
# widget does not rebuild the Plotly figures (~10 ms each).
@st.cache_resource(max_entries=16, show_spinner=False)
def _sweep_view(key: tuple, shown: str, metric: str, _rows, _fp32_score, _unit=None):
    frame = sweep_frame(_rows, _fp32_score, _unit)
    if shown == DROP and "perplexity_increase" in frame:
        figure = engine_figures.sensitivity_heatmap(frame, value="perplexity_increase",
                                                    label="perplexity increase vs FP32", higher_is_worse=True)
        table = ranking(frame, metric)
        worst = frame.groupby("layer")["perplexity_increase"].max()
        table.insert(3, "perplexity increase", [round(float(worst[layer]), 4) for layer in table["layer"]])
        return figure, table
    if shown == DROP:
        figure = engine_figures.sensitivity_heatmap(frame, value="drop_pp", label=f"{metric} drop (pp)",
                                                    higher_is_worse=True)
    else:
        figure = engine_figures.sensitivity_heatmap(frame, value="sqnr_db", label=SQNR, higher_is_worse=False)
    return figure, ranking(frame, metric)


def cell_choice(evaluator, current: LayerQuant, layer: str, fmt: str, *, activations: bool) -> LayerQuant:
    """The swept cell as a layer choice: exactly the weights (and activations) the sweep measured.

    After a weights-only sweep the layer keeps its current activation setting.
    """
    from quant_core.search.sensitivity import sweep_config

    swept = sweep_config(evaluator, layer, parse_format(fmt), activations=activations).for_layer(layer)
    return LayerQuant(swept.weights, swept.activations if activations else current.activations)


def _apply_cell(evaluator, info, activations: bool) -> None:
    layer, fmt = st.session_state[SENS_PICK_LAYER], st.session_state[SENS_PICK_FORMAT]
    config = state.get_config()
    new_config = config.with_layer(layer, cell_choice(evaluator, config.for_layer(layer), layer, fmt,
                                                      activations=activations))
    try:
        validate_config(new_config, info)
    except QuantLabError as err:
        st.session_state[_APPLIED] = None
        st.session_state[_MESSAGE] = f"Cannot apply {fmt} to {layer}: {err}"
        return
    state.set_config(new_config)
    st.session_state[_MESSAGE] = None
    st.session_state[_APPLIED] = f"Applied {fmt} to {layer}: the current config is now '{new_config.name}'."


def apply_cell_controls(ctx, evaluator, job: SweepJob) -> None:
    """Pick a (layer, format) cell of the sweep and apply it to the current config."""
    layer_column, format_column, button_column = st.columns([3, 2, 2], vertical_alignment="bottom")
    layer_column.selectbox("Layer", list(job.layers[:job.done_layers]), key=SENS_PICK_LAYER)
    format_column.selectbox("Format", list(job.formats), key=SENS_PICK_FORMAT)
    button_column.button("Apply to config", key=SENS_APPLY_CELL, on_click=_apply_cell,
                         args=(evaluator, ctx.info, job.activations))
    if applied := st.session_state.pop(_APPLIED, None):
        st.success(applied)
    config = state.get_config()
    if layer := st.session_state.get(SENS_PICK_LAYER):
        choice = config.for_layer(layer)
        current = choice.weights.format.name if choice.weights else "fp32"
        st.caption(f"{layer} currently uses {current} weights in the config '{config.name}'.")




# --- suggestion ----------------------------------------------------------------------------------

def budget_controls(baseline, task=None) -> tuple[str, float]:
    """The constraint of the suggestion: ('size budget', fraction of FP32) or ('minimum accuracy', headline
    floor), the quality budget set in the unit of the task's headline metric (`search.budget`): a
    percentage, or for a language model a perplexity increase ("at most +0.5 perplexity")."""
    from quant_core.search.budget import budget_unit

    unit = budget_unit(baseline.score)
    choice = st.radio("Constraint", [SIZE_BUDGET, MIN_ACCURACY], key=SENS_BUDGET_KIND, horizontal=True,
                      format_func=lambda option: "maximum perplexity increase"
                      if option == MIN_ACCURACY and unit.is_perplexity else option)
    if choice == SIZE_BUDGET:
        percent = st.slider("Size budget (% of the FP32 size)", 5, 100, 15, step=1, key=SENS_SIZE_BUDGET,
                            help=f"FP32 size: {baseline.fp32_size_bytes / 1024:.1f} KB")
        st.caption(f"= at most {baseline.fp32_size_bytes * percent / 100 / 1024:.1f} KB")
        return SIZE_BUDGET, percent / 100
    if unit.is_perplexity:
        increase = st.number_input("Maximum perplexity increase", 0.0, 100.0, 0.5, step=0.05, format="%.2f",
                                   key=SENS_MAX_PERPLEXITY,
                                   help=f"FP32 perplexity on the evaluation windows: {unit.fp32_perplexity:.3f}")
        floor = unit.to_headline(increase)
        st.caption(f"= perplexity at most {unit.fp32_perplexity + increase:.3f} (FP32 {unit.fp32_perplexity:.3f}); "
                   f"the search keeps {unit.metric} ≥ {floor:.4f}")
        return MIN_ACCURACY, floor
    reference = baseline.score.headline_value
    what = task_view.metric_name(baseline.score.headline, task)
    default = max(50.0, round(reference * 100 - 1.0, 1))
    percent = st.slider(f"Minimum {what} (%)", 50.0, 100.0, default, step=0.1, key=SENS_MIN_ACCURACY,
                        help=f"FP32: {reference:.2%}")
    return MIN_ACCURACY, percent / 100


def _request_suggestion(ctx_key: tuple, unit) -> None:
    st.session_state[_SUGGESTION_MESSAGE] = None
    # Read the budget now, not when the button was drawn: a slider moved in the same rerun counts.
    kind = st.session_state[SENS_BUDGET_KIND]
    if kind == SIZE_BUDGET:
        kind, value = SIZE_BUDGET, st.session_state[SENS_SIZE_BUDGET] / 100
    elif unit.is_perplexity:
        kind, value = MIN_ACCURACY, unit.to_headline(st.session_state.get(SENS_MAX_PERPLEXITY, 0.5))
    else:
        kind, value = MIN_ACCURACY, st.session_state[SENS_MIN_ACCURACY] / 100
    st.session_state[_SUGGESTION] = {"key": ctx_key, "request": (kind, value), "suggestion": None,
                                     "token": uuid.uuid4().hex}


def suggestion_button(ctx, baseline=None) -> None:
    if sweep_rows_for_suggestion(ctx) is not None:
        st.caption("The search ranks its steps with the sweep's measurements where they cover them "
                   f"(candidates {', '.join(SUGGESTION_FORMATS)}); run a weights-only sweep of those formats for "
                   "the fastest search.")
    else:
        st.caption(f"Candidates {', '.join(SUGGESTION_FORMATS)}, weight-only, per-channel. Every candidate step is "
                   "measured; a weights-only sweep of these formats first makes the search much faster.")
    from quant_core.search.budget import budget_unit

    unit = budget_unit(None if baseline is None else baseline.score)
    st.button("Suggest a mixed-precision config", key=SENS_SUGGEST, type="primary", on_click=_request_suggestion,
              args=(_ctx_key(ctx), unit))
    if message := st.session_state.get(_SUGGESTION_MESSAGE):
        st.info(message)


def run_suggestion(ctx, evaluator, baseline):
    """Compute the requested suggestion (once; kept in session state) and return it, or None."""
    entry = st.session_state.get(_SUGGESTION)
    if entry is None or entry["key"] != _ctx_key(ctx):
        return None
    if entry["suggestion"] is None:
        from quant_core.search.suggest import suggest_config

        kind, value = entry["request"]
        # A click on Cancel interrupts this run; its callback then drops the request (a search
        # cannot resume half-way, and any other rerun would start it again).
        cancel = st.empty()
        cancel.button("Cancel the search", key=SENS_CANCEL_SUGGESTION, on_click=_cancel_suggestion)
        bar = st.progress(0.0, text="Searching (greedy, measured at every step)…")
        budget = ({"max_size_bytes": int(baseline.fp32_size_bytes * value)} if kind == SIZE_BUDGET
                  else {"min_accuracy": value})
        with heavy_job("the mixed-precision search", notify=waiting_notice()):
            entry["suggestion"] = suggest_config(evaluator, sweep_rows=sweep_rows_for_suggestion(ctx),
                                                 progress=lambda f: bar.progress(min(max(f, 0.0), 1.0)),
                                                 time_budget_s=SUGGESTION_TIME_BUDGET_S, task=ctx.task, **budget)
        bar.empty()
        cancel.empty()
    return entry["suggestion"]


def _cancel_suggestion() -> None:
    st.session_state.pop(_SUGGESTION, None)
    st.session_state[_SUGGESTION_MESSAGE] = "Search cancelled: press Suggest to start again."


def sweep_rows_for_suggestion(ctx):
    """The rows of a weights-only sweep of this model, or None: they rank the greedy steps without
    measuring every candidate (each chosen step is still measured)."""
    job = _job(ctx)
    return list(job.rows) if job is not None and job.rows and not job.activations else None


def steps_frame(suggestion, unit=None) -> pd.DataFrame:
    """The step-by-step trace of a suggestion, sizes in KB and the metric in % (a language model: perplexity)."""
    frame = pd.DataFrame([vars(step) for step in suggestion.steps],
                         columns=["step", "action", "layer", "from_format", "to_format", "size_bytes", "accuracy",
                                  "reason"])
    frame["size_bytes"] = (frame["size_bytes"] / 1024).round(2)
    if unit is not None and unit.is_perplexity:
        frame["accuracy"] = [round(unit.fp32_perplexity + unit.from_headline(v), 4) for v in frame["accuracy"]]
        metric = "perplexity"
    else:
        frame["accuracy"] = (frame["accuracy"] * 100).round(2)
        metric = f"{suggestion.metric} (%)"
    return frame.rename(columns={"from_format": "from", "to_format": "to", "size_bytes": "size (KB)",
                                 "accuracy": metric}).set_index("step")


def pareto_frame(suggestion) -> pd.DataFrame:
    return pd.DataFrame({"size_kb": [p.size_bytes / 1024 for p in suggestion.pareto],
                         "accuracy": [p.accuracy for p in suggestion.pareto],
                         "label": [p.label for p in suggestion.pareto]})


def _apply_suggestion() -> None:
    entry = st.session_state.get(_SUGGESTION)
    if entry and entry["suggestion"] is not None:
        state.set_config(entry["suggestion"].config.with_methods(state.get_config().methods))  # found on them
        st.session_state[_APPLIED_SUGGESTION] = True


def show_suggestion(suggestion, baseline) -> None:
    """Outcome, the Pareto chart, the trace table and 'Apply suggestion'."""
    from quant_core.search.budget import budget_unit

    result = suggestion.result
    metric = result.score.headline_value
    unit = budget_unit(baseline.score)
    outcome = "meets the constraint" if suggestion.met else "does NOT meet the constraint (the closest measured)"
    (st.success if suggestion.met else st.warning)(
        f"Suggestion {outcome}: {result.size_bytes / 1024:.1f} KB "
        f"({result.size_bytes / result.fp32_size_bytes:.1%} of FP32), {unit.describe(metric)} "
        f"in {len(suggestion.steps)} steps.")
    if suggestion.stopped:
        st.caption(f"Search {suggestion.stopped} (the time limit of a search on this shared server is "
                   f"{SUGGESTION_TIME_BUDGET_S:g} s: sweep first, so the search measures fewer candidates, or "
                   f"use `python -m quant_core suggest` without --time-budget).")
    if suggestion.chosen:
        st.caption(f"Returned: {suggestion.chosen}.")
    st.button("Apply suggestion", key=SENS_APPLY_SUGGESTION, on_click=_apply_suggestion)
    if st.session_state.pop(_APPLIED_SUGGESTION, False):
        st.success("The suggestion is now the current config (see the Mixed precision page).")
    chart, trace = st.columns([2, 3])
    token = st.session_state[_SUGGESTION]["token"]
    figure, steps = _suggestion_view(token, suggestion, (result.size_bytes / 1024, metric), unit)
    chart.plotly_chart(figure, key="sens_pareto")
    trace.dataframe(steps, width="stretch")


@st.cache_resource(max_entries=8, show_spinner=False)
def _suggestion_view(token: str, _suggestion, _chosen, _unit=None):
    # Keyed by a token made when the suggestion was computed (it then stays unchanged in session state).
    return (engine_figures.pareto_figure(pareto_frame(_suggestion), chosen=_chosen, metric=_suggestion.metric,
                                         unit=_unit),
            steps_frame(_suggestion, _unit))


def sweep_rows(ctx) -> list:
    """The rows measured so far by this session's sweep of the current model, data and task ([] without one)."""
    job = _job(ctx)
    return list(job.rows) if job is not None else []

"""Mixed precision page: the per-layer table ⇄ QuantConfig, live metrics, error charts, downloads.

The table is an `st.data_editor` (key `MIXED_TABLE`) whose input is built from the current config;
each edit becomes a new config through `ui.state.set_config`, so it survives page switches.
"""
from __future__ import annotations

import functools
from dataclasses import replace

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.errors import QuantLabError
from quant_core.model.validate import validate_config
from quant_core.numerics.formats import Granularity, RangeMethod, parse_format
from ui import cache, engine_figures, state, task_view
from ui.jobs import heavy_job, job_stopped, resume_job, stoppable_progress, waiting_notice

MIXED_TABLE = "mixed_table"
MIXED_PRESET = "mixed_preset"
MIXED_APPLY_PRESET = "mixed_apply_preset"
MIXED_EXPORT = "mixed_export"
MIXED_LAYER_CHART = "mixed_layer_chart"
MIXED_STOP = "mixed_stop"
MIXED_RESUME = "mixed_resume"
MIXED_ERRORS_STOP = "mixed_errors_stop"
MIXED_ERRORS_RESUME = "mixed_errors_resume"
_GENERATION = "_mixed_generation"  # bumped to start a fresh editor (its edits are dropped)
_LAST_CONFIG = "_mixed_last_config"  # (model_key, config) this page last produced from the table
_CHARTED = "_mixed_charted"  # (model_key, data_key, config JSON) whose per-layer chart this session has drawn
_EXPORTS = "_mixed_exports"  # (model_key, data_key, config JSON) -> ExportResult; this session, the last one

NO_ACTIVATION = "none"
WEIGHT_FORMATS = ["fp32", "fp16", "bf16", "fp8_e4m3fn", "fp8_e5m2", "int8", "int7", "int6", "int5", "int4", "int3",
                  "int2", "uint8", "binary", "ternary", "kmeans2", "kmeans3", "kmeans4",
                  # block formats (simulated only: the export keeps these layers FP32)
                  "mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxfp4_up", "mxint8", "nvfp4"]
ACTIVATION_FORMATS = [NO_ACTIVATION, "uint8", "int8", "uint16", "int16", "int4", "uint4", "fp16", "bf16",
                      "fp8_e4m3fn", "fp8_e5m2"]
GRANULARITIES = [g.value for g in Granularity]
RANGE_METHODS = [m.value for m in RangeMethod]

# Table columns (also the keys of an edit state's "edited_rows" entries).
LAYER, OP_TYPE, FALLBACK = "layer", "op type", "FP32 fallback"
WEIGHT_FORMAT, GRANULARITY, WEIGHT_RANGE = "weight format", "granularity", "weight range"
ACTIVATION_FORMAT, ACTIVATION_RANGE = "activation format", "activation range"
COLUMNS = [LAYER, OP_TYPE, WEIGHT_FORMAT, GRANULARITY, WEIGHT_RANGE, ACTIVATION_FORMAT, ACTIVATION_RANGE, FALLBACK]

_DEFAULT_WEIGHTS = TensorQuant(parse_format("int8"), granularity=Granularity.PER_CHANNEL)
_DEFAULT_ACTIVATIONS = TensorQuant(parse_format("uint8"), symmetric=False)


# --- table <-> config ---------------------------------------------------------------------------

def table_row(name: str, op_type: str, choice: LayerQuant, template: LayerQuant) -> dict:
    """One layer's row of the table (also the Graph page's format selectors).

    An FP32 (fallback) layer shows the formats it would get without the fallback: the default's."""
    shown = template if choice.is_fp32 else choice
    weights, activations = shown.weights, shown.activations
    return {LAYER: name, OP_TYPE: op_type,
            WEIGHT_FORMAT: weights.format.name if weights else "fp32",
            GRANULARITY: (weights or _DEFAULT_WEIGHTS).granularity.value,
            WEIGHT_RANGE: (weights or _DEFAULT_WEIGHTS).range_method.value,
            ACTIVATION_FORMAT: activations.format.name if activations else NO_ACTIVATION,
            ACTIVATION_RANGE: (activations or _DEFAULT_ACTIVATIONS).range_method.value,
            FALLBACK: choice.is_fp32 and not template.is_fp32}


def config_table(config: QuantConfig, info) -> pd.DataFrame:
    """One row per quantizable layer (graph order) with its formats in `config`."""
    rows = [table_row(layer.name, getattr(layer, "op_type", ""), config.for_layer(layer.name), config.default)
            for layer in info.layers]
    return pd.DataFrame(rows, columns=COLUMNS)


def _tensor_quant(fmt: str, granularity: str, range_method: str, previous: TensorQuant | None,
                  template: TensorQuant) -> TensorQuant:
    # Keep what the table does not show (symmetry, axis, block size, percentile) from before.
    base = previous or template
    return replace(base, format=parse_format(fmt), granularity=Granularity(granularity),
                   range_method=RangeMethod(range_method))


def layer_choice(row: pd.Series, previous: LayerQuant) -> LayerQuant:
    """The LayerQuant one table row asks for; `previous` supplies the fields the table hides."""
    if bool(row[FALLBACK]):
        return LayerQuant()
    weights = None
    if row[WEIGHT_FORMAT] != "fp32":
        weights = _tensor_quant(row[WEIGHT_FORMAT], row[GRANULARITY], row[WEIGHT_RANGE], previous.weights,
                                _DEFAULT_WEIGHTS)
    activations = None
    if row[ACTIVATION_FORMAT] != NO_ACTIVATION:
        # Activations are always per-tensor in this table.
        activations = _tensor_quant(row[ACTIVATION_FORMAT], Granularity.PER_TENSOR.value, row[ACTIVATION_RANGE],
                                    previous.activations, _DEFAULT_ACTIVATIONS)
    return LayerQuant(weights, activations)


def config_from_table(table: pd.DataFrame, config: QuantConfig) -> QuantConfig:
    """The config the (edited) table describes; overrides only where a layer differs from the default."""
    overrides = []
    for _, row in table.iterrows():
        previous = config.for_layer(row[LAYER])
        if previous.is_fp32:
            previous = config.default
        choice = layer_choice(row, previous)
        if choice != config.default:
            overrides.append((row[LAYER], choice))
    if tuple(sorted(overrides)) == config.overrides:
        return config
    return preset_named(QuantConfig(config.default, tuple(overrides), target=config.target, methods=config.methods))


def preset_named(config: QuantConfig) -> QuantConfig:
    """`config` named after the preset it equals (the sidebar then shows that name), else "custom"."""
    for name, preset in PRESETS.items():
        if replace(config, name=name, target=preset.target, methods=()) == preset:
            return replace(preset, target=config.target, methods=config.methods)
    return replace(config, name="custom")


def _column_config() -> dict:
    return {
        # Widths chosen so that the eight columns fit a 1400-px window with the sidebar open.
        LAYER: st.column_config.TextColumn(LAYER, disabled=True, help="ONNX node name", width="medium"),
        OP_TYPE: st.column_config.TextColumn(OP_TYPE, disabled=True, width="small"),
        WEIGHT_FORMAT: st.column_config.SelectboxColumn("weight", options=WEIGHT_FORMATS, required=True,
                                                         width="small", help="weight format"),
        GRANULARITY: st.column_config.SelectboxColumn(GRANULARITY, options=GRANULARITIES, required=True,
                                                      width="small", help="weight granularity"),
        WEIGHT_RANGE: st.column_config.SelectboxColumn("w. range", options=RANGE_METHODS, required=True,
                                                       width="small", help="weight range method"),
        ACTIVATION_FORMAT: st.column_config.SelectboxColumn("activation", options=ACTIVATION_FORMATS,
                                                            required=True, width="small",
                                                            help="input activation format (none: weight-only)"),
        ACTIVATION_RANGE: st.column_config.SelectboxColumn("a. range", options=RANGE_METHODS, required=True,
                                                           width="small", help="activation range method"),
        FALLBACK: st.column_config.CheckboxColumn("FP32", help="FP32 fallback: keep this layer in FP32 whatever its "
                                                  "formats", width="small"),
    }


def _apply_preset() -> None:
    state.set_config(PRESETS[st.session_state[MIXED_PRESET]].with_methods(state.get_config().methods))
    st.session_state[_GENERATION] = st.session_state.get(_GENERATION, 0) + 1


def preset_controls() -> None:
    """A preset picker and an 'apply preset to all layers' button (drops the table's edits)."""
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    current = state.preset_label(state.get_config())
    default = current if current in PRESETS else state.DEFAULT_PRESET
    left.selectbox("Preset", list(PRESETS), key=MIXED_PRESET, index=list(PRESETS).index(default))
    right.button("Apply preset to all layers", key=MIXED_APPLY_PRESET, on_click=_apply_preset)


def edit_config(ctx) -> QuantConfig:
    """Draw the per-layer table and return the config it describes (made current when valid)."""
    config = state.get_config()
    if st.session_state.get(_LAST_CONFIG) != (ctx.model_key, config):
        # The model or the config changed elsewhere (sidebar, loaded JSON, another page): start a fresh
        # editor so stale cell edits are not laid over it. A fixed-rows editor's identity is its
        # schema, and the (hidden) index name is part of it.
        st.session_state[_GENERATION] = st.session_state.get(_GENERATION, 0) + 1
    table = config_table(config, ctx.info)
    table.index.name = f"edit {st.session_state.get(_GENERATION, 0)}"
    edited = st.data_editor(table, key=MIXED_TABLE, column_config=_column_config(), hide_index=True,
                            num_rows="fixed", width="stretch", on_change=_table_edited, args=(ctx.info, ctx.model_key))
    try:
        new_config = config_from_table(edited, config)
        validate_config(new_config, ctx.info)
    except (QuantLabError, ValueError) as err:
        st.error(f"That edit cannot apply: {err}. The previous config is kept.")
        new_config = config
    if new_config != config:
        state.set_config(new_config)
    st.session_state[_LAST_CONFIG] = (ctx.model_key, new_config)
    return new_config


def _table_edited(info, model_key: str) -> None:
    # Runs before the script: the sidebar (drawn first) then already shows the edited config and
    # its "Download config" button serves it. The script's own pass below gives the same config.
    config = state.get_config()
    table = config_table(config, info)
    for row, changes in (st.session_state.get(MIXED_TABLE) or {}).get("edited_rows", {}).items():
        for column, value in changes.items():
            if column in table.columns and int(row) < len(table):
                table.at[int(row), column] = value
    try:
        new_config = config_from_table(table, config)
        validate_config(new_config, info)
    except (QuantLabError, ValueError):
        return  # the script shows the error
    if new_config != config:
        state.set_config(new_config)
        # Not an outside change: keep the editor and its edits.
        st.session_state[_LAST_CONFIG] = (model_key, new_config)




# --- results ------------------------------------------------------------------------------------

def evaluate_with_baseline(ctx, config: QuantConfig):
    """(result of `config`, result of FP32) on the evaluation split; the first call calibrates, with a progress bar.

    Work not done yet runs behind a progress bar with a Stop: the model's first evaluation (its FP32 reference
    run), and a config this session has not evaluated yet. A config already evaluated comes from the cache."""
    from ui.activations_view import calibrate_with_progress

    calibrate_with_progress(ctx)  # outside the cached evaluation, so its bar can move (and a rerun stops it)
    first_view = _first_view(ctx)
    if not cache.has_evaluator(ctx):
        return _first_evaluation(ctx, config)
    if cache.was_evaluated(ctx, config) and cache.was_evaluated(ctx, PRESETS["FP32"]):
        baseline = cache.evaluate_cached(ctx, PRESETS["FP32"])
        return cache.evaluate_cached(ctx, config), baseline
    job = ("mixed_evaluation", ctx.model_key, ctx.data_key, config.to_json())
    _offer_restart(job, "The evaluation of this config was stopped.")
    with stoppable_progress(job, stop_key=MIXED_STOP) as progress:
        progress(0.0, "Scoring FP32…")
        baseline = cache.evaluate_cached(ctx, PRESETS["FP32"])
        if first_view:
            # The page's first view of this model: the metrics first (one run of the config); the per-layer
            # chart below measures its errors behind its own bar.
            progress(0.2, f"Evaluating {config.name} on {cache.scored_samples(ctx)} samples…")
        else:
            progress(0.2, f"Evaluating {config.name} and its per-layer errors (one pass over "
                          f"{cache.scored_samples(ctx)} samples)…")
            _with_layer_errors(ctx, config, lambda done: progress(0.2 + 0.8 * done, (
                f"Evaluating {config.name} and its per-layer errors (one pass over "
                f"{cache.scored_samples(ctx)} samples): {done:.0%}")))
        result = cache.evaluate_cached(ctx, config)
        progress(1.0, "Done")
    return result, baseline


_SHOWN = "_mixed_shown"  # (model_key, data_key) of the model whose metrics this page has shown in this session


def _first_view(ctx) -> bool:
    """True the first time this page evaluates for the model and data in this session (then False)."""
    key = (ctx.model_key, ctx.data_key)
    first = st.session_state.get(_SHOWN) != key
    st.session_state[_SHOWN] = key
    return first


def _offer_restart(job: tuple, message: str) -> None:
    """After a Stop of `job`: say so, offer to start it again, and end the page's script here."""
    if job_stopped(job):
        st.info(message)
        st.button("Evaluate", key=MIXED_RESUME, on_click=resume_job, args=(job,), type="primary")
        st.stop()


def _with_layer_errors(ctx, config: QuantConfig, progress) -> None:
    """When the page will chart the per-layer errors of a config, measure them with its outputs in one pass
    over the split (`Evaluator.evaluate_with_errors`, `progress(fraction)` after each batch): the evaluation
    below then finds its result cached."""
    if config != PRESETS["FP32"] and st.session_state.get(MIXED_LAYER_CHART, True):
        cache.get_evaluator(ctx).evaluate_with_errors(config, task=ctx.task, progress=progress)
        _charted().add((ctx.model_key, ctx.data_key, config.to_json()))


def _charted() -> set:
    """Keys (model_key, data_key, config JSON) whose per-layer errors this session has measured (bounded)."""
    charted = st.session_state.setdefault(_CHARTED, set())
    if len(charted) > 256:
        charted.clear()
    return charted


def _first_evaluation(ctx, config: QuantConfig):
    """The model's first evaluation (its FP32 reference run, then FP32 and `config` scored), with a progress
    bar and a Stop; after a Stop the page says so and offers to start again."""
    job = ("mixed_first_evaluation", ctx.model_key, ctx.data_key)
    _offer_restart(job, "The first evaluation was stopped. It runs the model once in FP32 on the evaluation split "
                        "(the reference every config is compared with), then the config.")
    with stoppable_progress(job, stop_key=MIXED_STOP) as progress:
        progress(0.0, f"Running {ctx.model_name} in FP32 on the evaluation split (the reference)…")
        cache.get_evaluator(ctx)
        progress(0.5, "Scoring FP32…")
        baseline = cache.evaluate_cached(ctx, PRESETS["FP32"])
        progress(0.7, f"Evaluating {config.name}…")
        # Not with its per-layer errors here: the first metrics show as soon as they are known; the chart
        # (and its error session's build) follows below them.
        result = cache.evaluate_cached(ctx, config)
        progress(1.0, "Done")
    return result, baseline


def show_evaluation_note(ctx) -> None:
    """Say so when fewer samples than the evaluation split holds are scored (`Evaluator.sample_note`)."""
    note = cache.get_evaluator(ctx).sample_note if cache.has_evaluator(ctx) else None
    if note:
        st.caption(f"Metrics {note}.")


def show_metrics(result, baseline, task=None) -> None:
    """The task's metrics (headline first) and the size as st.metric, each with its change vs FP32.

    A metric the data cannot give (no labels, or labels that do not fit the scored output) shows "—"
    and says why; it is never shown as a number."""
    score, reference = result.score, baseline.score
    names = task_view.ordered_metrics(score)
    cells = len(names) + 1
    columns = [column for start in range(0, cells, 5) for column in st.columns(5)]
    for column, name in zip(columns, names):
        value = score.value(name)
        reason = score.labels_note or "the data has no labels"
        column.metric(task_view.metric_label(name, task), task_view.metric_text(name, value),
                      delta=task_view.metric_delta(name, value, reference.value(name)),
                      delta_color=task_view.delta_color(name),
                      help=reason if value is None else _METRIC_HELP.get(name))
    if score.labels_note:
        st.caption(f"Labels not scored: {score.labels_note}.")
    ratio = result.size_bytes / result.fp32_size_bytes
    columns[len(names)].metric("Size", f"{result.size_bytes / 1024:.1f} KB", delta=f"{(ratio - 1) * 100:+.1f}% vs FP32",
                      delta_color="inverse", help=f"{1 / ratio:.2f}× smaller than FP32 "
                                                  f"({result.fp32_size_bytes / 1024:.1f} KB)")


_METRIC_HELP = {"SQNR dB": "signal-to-quantization-noise ratio of the scored output vs FP32"}


def layer_error_frame(layer_errors, simulated_only) -> pd.DataFrame:
    """Tidy frame of the per-layer SQNR; simulated-only layers get ' (simulated)' in their label."""
    simulated = set(simulated_only)
    frame = pd.DataFrame([e.to_dict() for e in layer_errors],
                         columns=["layer", "isolated_sqnr_db", "accumulated_sqnr_db"])
    frame["simulated"] = frame["layer"].isin(simulated)
    frame["layer"] = [f"{name} (simulated)" if name in simulated else name for name in frame["layer"]]
    return frame


def per_class_frame(result, baseline) -> pd.DataFrame | None:
    """Per-class accuracy (FP32 and quantized) and the change in percentage points, or None without labels."""
    if result.per_class_accuracy is None or baseline.per_class_accuracy is None:
        return None
    frame = pd.DataFrame({"class": range(len(result.per_class_accuracy)),
                          "fp32_accuracy": baseline.per_class_accuracy, "accuracy": result.per_class_accuracy})
    frame = frame.dropna()
    frame["change_pp"] = (frame["accuracy"] - frame["fp32_accuracy"]) * 100
    return frame


def show_layer_errors(ctx, config: QuantConfig, result) -> None:
    """The isolated vs accumulated per-layer SQNR chart (simulated-only layers labelled), unless turned off."""
    if not st.toggle("Per-layer error chart", value=True, key=MIXED_LAYER_CHART,
                     help="Isolated: each layer alone quantized, run on its FP32 input; accumulated: the whole "
                          "config. One onnxruntime run per batch computes both (about 3-6 forwards of the model): "
                          "turn it off for faster edits on large models."):
        return
    if config == PRESETS["FP32"]:
        st.info("Every layer is FP32: there is no quantization error to show.")
        return
    key = (ctx.model_key, ctx.data_key, config.to_json())
    charted = _charted()
    if key in charted:
        figure = _layer_error_chart(*key, ctx, config, result.simulated_only)
    else:  # not measured in this session yet: behind a bar, under the metrics already shown
        job = ("mixed_layer_errors", *key)
        if job_stopped(job):
            st.info("The per-layer errors were stopped.")
            st.button("Measure the per-layer errors", key=MIXED_ERRORS_RESUME, on_click=resume_job, args=(job,))
            return
        with stoppable_progress(job, stop_key=MIXED_ERRORS_STOP) as progress:
            text = (f"Measuring each layer's error (isolated and accumulated) on "
                    f"{cache.scored_samples(ctx)} samples…")
            progress(0.0, text)
            # Measured here, not inside the cached chart: a cached function may not draw (the bar moves).
            cache.get_evaluator(ctx).layer_errors(config, progress=lambda done: progress(done, f"{text} {done:.0%}"))
            figure = _layer_error_chart(*key, ctx, config, result.simulated_only)
        charted.add(key)
    st.plotly_chart(figure, key="mixed_layer_errors")


# Figures are cached per model, data and config (building a Plotly figure costs ~10 ms) and shared:
# st.plotly_chart only reads them.
@st.cache_resource(max_entries=64, show_spinner=False)
def _layer_error_chart(model_key: str, data_key: str, config_json: str, _ctx, _config: QuantConfig, _simulated):
    errors = cache.get_evaluator(_ctx).layer_errors(_config)
    return engine_figures.layer_error_figure(layer_error_frame(errors, _simulated))


@st.cache_resource(max_entries=64, show_spinner=False)
def _per_class_chart(model_key: str, data_key: str, config_json: str, task_json: str, _result, _baseline):
    frame = per_class_frame(_result, _baseline)
    return None if frame is None else engine_figures.per_class_change_figure(frame)


def show_per_class(ctx, config: QuantConfig, result, baseline) -> None:
    figure = _per_class_chart(ctx.model_key, ctx.data_key, config.to_json(), cache.task_key(ctx), result, baseline)
    if figure is None:
        st.caption(f"Per-class accuracy: {result.score.labels_note}." if result.score.labels_note
                   else "Per-class accuracy needs labels in the data (classification only).")
        return
    st.plotly_chart(figure, key="mixed_per_class")


def show_simulated(result) -> None:
    if result.simulated_only:
        st.warning("Simulated only (these formats have no onnxruntime kernel, so their accuracy is simulated): "
                   + ", ".join(f"{layer} (simulated)" for layer in result.simulated_only))


# --- downloads -----------------------------------------------------------------------------------

def _file_stem(ctx, config: QuantConfig) -> str:
    text = f"{ctx.model_name.removesuffix('.onnx')}_{config.name}"
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)


def _overrides_json(ctx, config: QuantConfig) -> str:
    from quant_core.export.overrides import overrides_to_json, tensor_quant_overrides

    # Conv outputs may need ranges too: the layer outputs' calibration runs on the click, not on every view.
    calibration = cache.get_calibration(ctx, layer_outputs=True)
    return overrides_to_json(tensor_quant_overrides(ctx.prepared, config, calibration))


def show_downloads(ctx, config: QuantConfig) -> None:
    """Config JSON, onnxruntime TensorQuantOverrides JSON, and the quantized ONNX (exported on click)."""
    stem = _file_stem(ctx, config)
    config_column, overrides_column, export_column = st.columns(3)
    config_column.download_button("Config JSON", data=config.to_json(), file_name=f"{stem}.json",
                                  mime="application/json", on_click="ignore", key="mixed_download_config")
    with overrides_column:
        # Deferred: built when the user clicks, not on every edit of the table.
        overrides = functools.partial(_overrides_json, ctx, config)
        st.download_button("TensorQuantOverrides JSON", data=overrides, file_name=f"{stem}_overrides.json",
                           mime="application/json", on_click="ignore", key="mixed_download_overrides",
                           help="for onnxruntime.quantization.quantize_static(extra_options="
                                "{'TensorQuantOverrides': ...}); only layers exported with integer kernels")
    with export_column:
        show_export(ctx, config, stem)
    show_export_plan(ctx, config)



def show_export_plan(ctx, config: QuantConfig) -> None:
    """Which layers the export cannot run as configured (kept FP32 there), grouped by reason."""
    from quant_core.engine.plan import ExportKind, plan_export

    reasons: dict[str, list[str]] = {}
    for entry in plan_export(ctx.prepared, config):
        if entry.kind == ExportKind.SIMULATED_ONLY:
            reasons.setdefault(entry.reason, []).append(entry.layer)
    for reason, layers in reasons.items():
        st.caption(f"In the exported model these layers stay FP32 ({reason}): {', '.join(layers)}")


def show_export(ctx, config: QuantConfig, stem: str) -> None:
    """'Export quantized ONNX' runs onnxruntime.quantization once per config (a heavy job); then a download button."""
    key = (ctx.model_key, ctx.data_key, config.to_json())
    exports = st.session_state.setdefault(_EXPORTS, {})
    if st.button("Export quantized ONNX", key=MIXED_EXPORT):
        from quant_core.export.ort_export import export_model

        # A heavy job (one at a time on the server), taken before the calibration's own lock.
        with heavy_job("the ONNX export", notify=waiting_notice()), \
                st.spinner("Exporting with onnxruntime.quantization…"):
            result = export_model(ctx.prepared, config, cache.get_calibration(ctx, layer_outputs=True),
                                  calibration_data=ctx.calibration_data)
        exports.clear()  # one export kept per session: models can be large
        exports[key] = result
    result = exports.get(key)
    if result is None:
        st.caption("The export runs onnxruntime's static QDQ quantizer with this config's scales and zero points.")
        return
    st.download_button(f"Download {stem}.onnx ({len(result.model) / 1024:.1f} KB)", data=result.model,
                       file_name=f"{stem}.onnx", mime="application/octet-stream", on_click="ignore",
                       key="mixed_download_onnx")
    for note in result.notes:
        st.caption(note)

"""The Graph page: the model's layers laid out top to bottom, coloured by an overlay; the selected layer's panel.

The layout (`quant_core.model.graph_layout.layer_graph`) is computed once per model (cached). A click on a
node, or the layer picker (which also searches by name), selects a layer: its panel shows what it is,
its errors, its weight and activation histograms (the Weights and Activations pages' views) and its
format selectors, which change the current config (so the graph is coloured again with the new errors).
"""
from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import streamlit as st

from quant_core.config import PRESETS, QuantConfig
from quant_core.errors import QuantLabError
from quant_core.model.graph_layout import LayerGraph, layer_graph
from quant_core.export.model_explorer import NodeKey, Threshold, node_data, node_data_json
from quant_core.search.run_history import layer_format
from quant_core.model.validate import validate_config
from ui import cache, graph_figures, mixed_view, state
from ui.activations_view import calibrate_with_progress
from ui.graph_figures import BAD_COLOR, FAIR_COLOR, GOOD_COLOR, Overlay
from ui.jobs import job_stopped, resume_job, stoppable_progress

GRAPH_CHART = "graph_chart"
GRAPH_LAYER = "graph_layer"
GRAPH_COLOR = "graph_color"
GRAPH_GOOD = "graph_good"
GRAPH_BAD = "graph_bad"
GRAPH_SWEEP_FORMAT = "graph_sweep_format"
GRAPH_FOCUS = "graph_focus"
GRAPH_EXPAND = "graph_expand"
GRAPH_WEIGHT_FORMAT = "graph_weight_format"
GRAPH_ACTIVATION_FORMAT = "graph_activation_format"
GRAPH_FP32 = "graph_fp32"
GRAPH_EXPORT_KEY = "graph_export_key"
GRAPH_EXPORT = "graph_export"
GRAPH_STOP = "graph_stop"
GRAPH_RESUME = "graph_resume"
_ERRORS_DONE = "_graph_errors_done"  # (model_key, data_key, config JSON) whose errors this session computed
_SYNCED = "_graph_synced"  # (layer, config JSON) the format selectors were last set from

ISOLATED, ACCUMULATED, SENSITIVITY, EXPORT_STATUS, FORMAT = (
    "isolated SQNR", "accumulated SQNR", "sweep sensitivity", "export status", "format")
NUMERIC_MODES = (ISOLATED, ACCUMULATED, SENSITIVITY)
MODES_WITHOUT_DATA = (EXPORT_STATUS, FORMAT)
# Default thresholds: SQNR in dB (higher is better), a sweep's metric drop in percentage points (lower is better).
DEFAULT_THRESHOLDS = {"dB": (30.0, 15.0), "pp": (0.5, 2.0)}
FOCUS_LEVELS = 14
EXPORT_COLORS = {"integer kernel": GOOD_COLOR, "weight-only (int8)": "#7fbf7f", "weight-only (fp16)": "#a6cee3",
                 "FP32": "#9aa3b2", "simulated only (FP32 in the export)": BAD_COLOR}


# --- layout ---------------------------------------------------------------------------------------

def graph(ctx, *, expanded: bool = False) -> LayerGraph:
    """The model's layer graph (`expanded`: every op drawn), laid out once per model (shared by every session)."""
    return _graph(ctx.model_key, expanded, ctx.prepared)


@st.cache_resource(max_entries=16, show_spinner="Laying out the graph…")
def _graph(model_key: str, expanded: bool, _prepared) -> LayerGraph:
    return layer_graph(_prepared.model, [layer.name for layer in _prepared.info.layers], expanded=expanded)


# --- overlays -------------------------------------------------------------------------------------

def modes(ctx) -> list[str]:
    """The colourings this model and data allow (errors need data)."""
    return [*((ISOLATED, ACCUMULATED, SENSITIVITY) if ctx.evaluation_data is not None else ()), EXPORT_STATUS, FORMAT]


def mode_unit(mode: str) -> str:
    return "pp" if mode == SENSITIVITY else "dB"


def layer_errors(ctx, config: QuantConfig) -> dict[str, tuple[float, float]]:
    """Layer → (isolated, accumulated) SQNR in dB of `config` ({} for FP32: nothing is quantized)."""
    if config == PRESETS["FP32"]:
        return {}
    return {e.layer: (e.isolated_sqnr_db, e.accumulated_sqnr_db) for e in _errors(ctx, config)}


def _errors(ctx, config: QuantConfig):
    key = (ctx.model_key, ctx.data_key, config.to_json())
    done = st.session_state.setdefault(_ERRORS_DONE, set())
    if key in done:
        return _cached_errors(*key, ctx, config)
    # First time in this session: a progress bar and a Stop (a large model takes a while).
    job = ("graph_errors", *key)
    if job_stopped(job):
        st.info("The per-layer errors of this config were stopped. Colour by export status or format, or start again.")
        st.button("Compute the errors", key=GRAPH_RESUME, on_click=resume_job, args=(job,), type="primary")
        raise _Stopped
    calibrate_with_progress(ctx)
    with stoppable_progress(job, stop_key=GRAPH_STOP) as progress:
        progress(0.1, f"Running {ctx.model_name} in FP32 on the evaluation split (once per model)…")
        cache.get_evaluator(ctx)
        text = "Per-layer errors of this config (isolated and accumulated; one run per batch)…"
        progress(0.5, text)
        # Measured here, not inside the cached function: a cached function may not draw (the bar moves).
        cache.get_evaluator(ctx).layer_errors(config, progress=lambda done: progress(0.5 + 0.5 * done,
                                                                                   f"{text} {done:.0%}"))
        errors = _cached_errors(*key, ctx, config)
        progress(1.0, "Done")
    done.add(key)
    return errors


class _Stopped(Exception):
    """The user stopped the per-layer errors: the page colours by something that needs no run."""


@st.cache_resource(max_entries=64, show_spinner=False)
def _cached_errors(model_key: str, data_key: str, config_json: str, _ctx, _config):
    return cache.get_evaluator(_ctx).layer_errors(_config)


def export_status(ctx, config: QuantConfig) -> dict[str, tuple[str, str]]:
    """Layer → (status, why) in the exported model (the export plan: `quant_core.export.overrides.plan_export`)."""
    from quant_core.export.overrides import ExportKind, plan_export

    words = {ExportKind.INTEGER: "integer kernel", ExportKind.WEIGHT_INT8: "weight-only (int8)",
             ExportKind.WEIGHT_FP16: "weight-only (fp16)", ExportKind.WEIGHT_NBITS: "weight-only (MatMulNBits)",
             ExportKind.FP32: "FP32",
             ExportKind.SIMULATED_ONLY: "simulated only (FP32 in the export)"}
    return {entry.layer: (words[entry.kind], entry.reason) for entry in plan_export(ctx.prepared, config)}


def sweep_drops(ctx, fmt: str) -> dict[str, float]:
    """Layer → drop of the task's metric (pp) with only that layer in `fmt`, from this session's sweep."""
    from ui import sensitivity_view

    rows = [row for row in sensitivity_view.sweep_rows(ctx) if row.format == fmt and row.score is not None]
    if not rows:
        return {}
    fp32 = cache.evaluate_cached(ctx, PRESETS["FP32"]).score.headline_value
    return {row.layer: (fp32 - row.score) * 100 for row in rows}


def swept_formats(ctx) -> list[str]:
    from ui import sensitivity_view

    return list(dict.fromkeys(row.format for row in sensitivity_view.sweep_rows(ctx)))


def overlay(ctx, config: QuantConfig, mode: str, *, good: float, bad: float, sweep_format: str | None = None) -> tuple[
        Overlay, dict[str, float | None]]:
    """The colouring of `mode` and, for numeric modes, the value per layer (what the Model Explorer export writes)."""
    names = [layer.name for layer in ctx.info.layers]
    status = export_status(ctx, config)
    formats = {name: layer_format(config.for_layer(name)) for name in names}
    try:
        errors = layer_errors(ctx, config) if mode in (ISOLATED, ACCUMULATED) else {}
    except _Stopped:
        mode, errors = EXPORT_STATUS, {}
    hover = {}
    for name in names:
        lines = [f"format: {formats[name]}", f"export: {status[name][0]}" + (f" ({status[name][1]})"
                                                                            if status[name][1] else "")]
        if name in errors:
            lines.append(f"SQNR isolated {_db(errors[name][0])}, accumulated {_db(errors[name][1])}")
        hover[name] = "<br>".join(lines)
    if mode in NUMERIC_MODES:
        if mode == SENSITIVITY:
            drops = sweep_drops(ctx, sweep_format) if sweep_format else {}
            values = {name: drops.get(name) for name in names}
            for name, drop in drops.items():
                hover[name] += f"<br>sweep: {sweep_format} alone drops the metric {drop:.2f} pp"
            title = f"Metric drop (pp) with only that layer in {sweep_format or '—'}"
            group, colors = graph_figures.bands(values, good=good, bad=bad, unit="pp", higher_is_better=False)
        else:
            index = 0 if mode == ISOLATED else 1
            values = {name: errors[name][index] if name in errors else None for name in names}
            title = f"{mode[:1].upper() + mode[1:]} at each layer's output (higher is better)"
            group, colors = graph_figures.bands(values, good=good, bad=bad, unit="dB")
        return Overlay(title, group, colors, hover), values
    if mode == EXPORT_STATUS:
        group = {name: status[name][0] for name in names}
        colors = graph_figures.categories(group, fixed=EXPORT_COLORS)
        return Overlay("How each layer is exported (onnxruntime kernels)", group, colors, hover), {}
    group = dict(formats)
    return Overlay("Format in the current config", group, graph_figures.categories(group), hover), {}


def _db(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


# --- selection ------------------------------------------------------------------------------------

def _clicked() -> None:
    """The chart's click: select the clicked layer (the picker shows it, the panel follows)."""
    event = st.session_state.get(GRAPH_CHART)
    points = (event or {}).get("selection", {}).get("points", [])
    names = [point.get("customdata") for point in points if point.get("customdata")]
    if names:
        name = names[0][0] if isinstance(names[0], list) else names[0]
        st.session_state[GRAPH_LAYER] = name


def pick_layer(ctx) -> str:
    """The layer picker (type to search by name); a click on the graph sets it too."""
    names = [layer.name for layer in ctx.info.layers]
    if st.session_state.get(GRAPH_LAYER) not in names:
        st.session_state[GRAPH_LAYER] = names[0]
    return st.selectbox("Layer (click a node, or type to search)", names, key=GRAPH_LAYER)


def show_graph(ctx, figure_graph: LayerGraph, shown: Overlay, selected: str, *, focus: bool) -> None:
    """The graph, clickable: a click selects the layer (`_clicked`)."""
    # The overlay is keyed by its content (a few hundred short strings): equal overlays share one figure.
    overlay_key = repr((shown.title, sorted(shown.group.items()), list(shown.colors.items()), sorted(shown.hover.items())))
    figure = _figure(ctx.model_key, len(figure_graph.nodes), overlay_key, selected, focus, figure_graph, shown)
    st.plotly_chart(figure, key=GRAPH_CHART, on_select=_clicked, selection_mode="points",
                    config={"scrollZoom": True, "displaylogo": False})


# Building the Plotly figure of a few hundred nodes costs 30-600 ms: cached per model, overlay and selection
# (st.plotly_chart only reads it).
@st.cache_resource(max_entries=32, show_spinner=False)
def _figure(model_key: str, nodes: int, overlay_key: str, selected: str, focus: bool, _graph: LayerGraph,
            _overlay: Overlay):
    return graph_figures.graph_figure(_graph, _overlay, selected=selected, focus_levels=FOCUS_LEVELS if focus else None)


# --- the selected layer's panel --------------------------------------------------------------------

def _sync_selectors(layer: str, config: QuantConfig) -> None:
    """Set the format selectors from the config when the layer or the config changed since they were drawn."""
    if st.session_state.get(_SYNCED) == (layer, config.to_json()):
        return
    row = mixed_view.table_row(layer, "", config.for_layer(layer), config.default)
    choice = config.for_layer(layer)
    st.session_state[GRAPH_WEIGHT_FORMAT] = row[mixed_view.WEIGHT_FORMAT]
    st.session_state[GRAPH_ACTIVATION_FORMAT] = row[mixed_view.ACTIVATION_FORMAT]
    st.session_state[GRAPH_FP32] = choice.is_fp32 and not config.default.is_fp32
    st.session_state[_SYNCED] = (layer, config.to_json())


def _formats_changed(layer: str, info) -> None:
    """A format selector changed: the layer's new choice becomes the current config (if valid)."""
    config = state.get_config()
    row = mixed_view.table_row(layer, "", config.for_layer(layer), config.default)
    row[mixed_view.WEIGHT_FORMAT] = st.session_state[GRAPH_WEIGHT_FORMAT]
    row[mixed_view.ACTIVATION_FORMAT] = st.session_state[GRAPH_ACTIVATION_FORMAT]
    row[mixed_view.FALLBACK] = bool(st.session_state[GRAPH_FP32])
    previous = config.for_layer(layer)
    choice = mixed_view.layer_choice(pd.Series(row), config.default if previous.is_fp32 else previous)
    overrides = dict(config.overrides)
    if choice == config.default:
        overrides.pop(layer, None)
    else:
        overrides[layer] = choice
    new_config = mixed_view.preset_named(replace(config, overrides=tuple(overrides.items()), name="custom"))
    try:
        validate_config(new_config, info)
    except (QuantLabError, ValueError) as err:
        st.session_state["_graph_message"] = f"{layer} cannot take that format: {err}"
        return
    st.session_state["_graph_message"] = None
    state.set_config(new_config)


def format_selectors(ctx, layer_name: str, config: QuantConfig) -> None:
    """Weight format, activation format and FP32 fallback of the selected layer (they edit the current config)."""
    _sync_selectors(layer_name, config)
    args = (layer_name, ctx.info)
    left, right = st.columns(2)
    left.selectbox("Weight format", mixed_view.WEIGHT_FORMATS, key=GRAPH_WEIGHT_FORMAT, on_change=_formats_changed,
                   args=args)
    right.selectbox("Activation format", mixed_view.ACTIVATION_FORMATS, key=GRAPH_ACTIVATION_FORMAT,
                    on_change=_formats_changed, args=args)
    st.toggle("Keep this layer FP32 (fallback)", key=GRAPH_FP32, on_change=_formats_changed, args=args)
    message = st.session_state.get("_graph_message")
    if message:
        st.error(message)


def layer_facts(ctx, layer_name: str, config: QuantConfig, figure_graph: LayerGraph) -> pd.DataFrame:
    """What the layer is: op, weight, input and output tensors with their shapes, and its neighbours."""
    layer = ctx.info.layer(layer_name)
    shapes = tensor_shapes(ctx)
    rows = [("op type", layer.op_type), ("format", layer_format(config.for_layer(layer_name))),
            *layer_error_rows(ctx, layer_name, config)]
    if layer.weight is not None:
        rows.append(("weight", f"{layer.weight.name} {_shape(layer.weight.shape)}"))
    if layer.activation_input:
        rows.append(("input", f"{layer.activation_input} {_shape(shapes.get(layer.activation_input))}"))
    for output in layer.outputs[:1]:
        rows.append(("output", f"{output} {_shape(shapes.get(output))}"))
    for edge in figure_graph.predecessors(layer_name):
        rows.append(("from", f"{figure_graph.node(edge.source).label} (via {edge.describe()})"))
    for edge in figure_graph.successors(layer_name):
        rows.append(("to", f"{figure_graph.node(edge.target).label} (via {edge.describe()})"))
    return pd.DataFrame(rows, columns=["", "value"])


def tensor_shapes(ctx) -> dict[str, tuple]:
    return _tensor_shapes(ctx.model_key, ctx.prepared)


@st.cache_resource(max_entries=16, show_spinner=False)
def _tensor_shapes(model_key: str, _prepared) -> dict[str, tuple]:
    graph = _prepared.model.graph
    shapes = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor_type is None or not tensor_type.HasField("shape"):
            continue  # rank unknown: shown as "(shape unknown)"
        shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                   for d in tensor_type.shape.dim)
    return shapes


def _shape(shape) -> str:
    if shape is None:
        return "(shape unknown)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def layer_error_rows(ctx, layer_name: str, config: QuantConfig) -> list[tuple[str, str]]:
    """The layer's isolated and accumulated SQNR (with data) and its export status, as table rows."""
    status, reason = export_status(ctx, config)[layer_name]
    rows = []
    if ctx.evaluation_data is not None:
        try:
            errors = layer_errors(ctx, config).get(layer_name)
        except _Stopped:
            errors = None
        rows.append(("isolated SQNR", "— (FP32)" if errors is None else f"{_db(errors[0])} (only this layer quantized)"))
        rows.append(("accumulated SQNR", "— (FP32)" if errors is None else f"{_db(errors[1])} (every layer up to here)"))
    rows.append(("export", status + (f": {reason}" if reason else "")))
    return rows


def histograms(ctx, layer_name: str, config: QuantConfig) -> None:
    """The weight and input-activation histograms with every range method's clipping range."""
    from ui import activations_view, weights_view

    layer = ctx.info.layer(layer_name)
    choice = config.for_layer(layer_name)
    if layer.weight is not None:
        int_weights = choice.weights is not None and choice.weights.format.kind in ("int", "uint")
        bits = min(max(choice.weights.format.bits, 2), 8) if int_weights else 8
        view = weights_view.weights_view(ctx, weights_view.WeightChoice(layer=layer_name, bits=int(bits)))
        view.histogram.update_layout(height=300, title_font_size=13)
        st.plotly_chart(view.histogram, key="graph_weight_histogram")
    if ctx.evaluation_data is None or not layer.activation_input:
        return
    calibration = cache.get_calibration(ctx)
    if layer.activation_input not in calibration.tensors:
        st.caption(f"Input {layer.activation_input} was not calibrated (not a float activation).")
        return
    view = activations_view.activations_view(ctx, calibration,
                                             activations_view.ActivationChoice(tensor=layer.activation_input))
    view.histogram.update_layout(height=300, title_font_size=13)
    st.plotly_chart(view.histogram, key="graph_activation_histogram")


# --- Model Explorer export ------------------------------------------------------------------------

def model_explorer_download(ctx, mode: str, shown: Overlay, values: dict[str, float | None], *, good: float,
                            bad: float) -> None:
    """Download the colouring as Model Explorer node data JSON (numeric overlays: the values and thresholds)."""
    key_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
    key = key_column.radio("Match nodes in Model Explorer by", ["node name", "output tensor name"], horizontal=True,
                           key=GRAPH_EXPORT_KEY)
    text = model_explorer_json(ctx, mode, shown, values, good=good, bad=bad,
                               key=NodeKey.NODE_NAME if key == "node name" else NodeKey.OUTPUT_TENSOR)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{ctx.model_name}_{mode}")
    button_column.download_button("Model Explorer node data (JSON)", data=text, file_name=f"{stem}.json",
                                  mime="application/json", on_click="ignore", key=GRAPH_EXPORT)


def model_explorer_json(ctx, mode: str, shown: Overlay, values: dict[str, float | None], *, good: float, bad: float,
                        key: NodeKey) -> str:
    outputs = {layer.name: layer.outputs for layer in ctx.info.layers}
    if mode in NUMERIC_MODES:
        # Model Explorer colours a value ≤ a threshold with that threshold's colour: SQNR bad → fair → good.
        if mode == SENSITIVITY:
            thresholds = [Threshold(good, GOOD_COLOR), Threshold(bad, FAIR_COLOR), Threshold(1e308, BAD_COLOR)]
        else:
            thresholds = [Threshold(bad, BAD_COLOR), Threshold(good, FAIR_COLOR), Threshold(1e308, GOOD_COLOR)]
        data = node_data(values, outputs=outputs, key=key, thresholds=thresholds)
    else:
        # Categories: the value is the category's index in the legend, the colour set per node.
        index = {name: position for position, name in enumerate(shown.colors)}
        data = node_data({layer: index[group] for layer, group in shown.group.items()}, outputs=outputs, key=key,
                         colors={layer: shown.colors[group] for layer, group in shown.group.items()})
    return node_data_json(data)

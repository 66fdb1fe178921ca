"""Integer-only page: the current config exported as the app exports it, which nodes still compute in float
once onnxruntime has optimized it, and (when its ops allow) its integer-only form with fixed-point
requantization, scored against the exported model on the evaluation split.

One export + check per model, data, config and multiplier width (st.cache_data, a heavy job); small
models are checked on the first visit, larger ones wait for the button.
"""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from quant_core.export.ort_export import export_model
from quant_core.export.integer_only import compare_integer_only
from ui import cache, figures
from ui.jobs import heavy_job, waiting_notice

INTEGER_BITS = "integer_multiplier_bits"
INTEGER_CHECK = "integer_check"
AUTO_MAX_PARAMS = 2_000_000
_DONE = "_integer_checked"  # keys checked in this session (shown without a click afterwards)


def controls(ctx) -> tuple[int, bool]:
    """The multiplier width and the Check button; returns (bits, run now)."""
    left, right = st.columns([3, 1])
    bits = left.select_slider("Fixed-point multiplier bits", options=[8, 10, 12, 16, 20, 24, 31], value=31,
                              key=INTEGER_BITS,
                              help="Each layer's float scale s_x·s_w/s_y becomes an integer multiplier of this many "
                                   "bits and a right shift. 31 bits (int32) represent float32 scales exactly; a "
                                   "proof system with narrower field elements may need fewer.")
    clicked = right.button("Check", key=INTEGER_CHECK, type="primary")
    key = _key(ctx, bits)
    done = st.session_state.setdefault(_DONE, set())
    run = clicked or key in done or ctx.info.total_params <= AUTO_MAX_PARAMS
    if run:
        done.add(key)
    return bits, run


def _key(ctx, bits: int) -> tuple:
    return ctx.model_key, ctx.data_key, ctx.config.to_json(), bits


def comparison(ctx, bits: int) -> dict:
    """The check and comparison as plain data (cached), with the integer-only model's bytes."""
    calibration = cache.get_calibration(ctx, layer_outputs=True)  # the export may quantize Conv outputs
    with heavy_job("the integer-only check", notify=waiting_notice()):
        return _comparison(*_key(ctx, bits), ctx.prepared, calibration, ctx.calibration_data, ctx.evaluation_data,
                           ctx.config)


@st.cache_data(max_entries=16, show_spinner=False)
def _comparison(model_key, data_key, config_json, bits, _prepared, _calibration, _calibration_data,
                _evaluation_data, _config) -> dict:
    exported = export_model(_prepared, _config, _calibration, calibration_data=_calibration_data)
    result = compare_integer_only(exported.model, _evaluation_data.inputs, _evaluation_data.labels,
                                  multiplier_bits=bits)
    document = result.to_dict()
    document["model_bytes"] = None if result.model is None else result.model.SerializeToString()
    document["simulated_only"] = list(exported.simulated_only)
    return document


_KIND_COLORS = {"integer": "#2A9D55", "data movement": "#8FA9C9", "boundary": "#E9A23B", "float": "#D8572A"}


def nodes_figure(nodes: list[dict]):
    """Nodes of the optimized graph by op type, one colour per kind (float in red)."""
    frame = pd.DataFrame(nodes)
    counts = frame.groupby(["kind", "op_type"]).size().reset_index(name="nodes")
    order = list(frame["op_type"].value_counts().index)
    traces = [dict(type="bar", name=kind, x=list(rows["op_type"]), y=[int(n) for n in rows["nodes"]],
                   marker=dict(color=_KIND_COLORS.get(kind, "#444444")))
              for kind, rows in counts.groupby("kind", sort=False)]
    fig = figures.figure(traces, title="Nodes after onnxruntime's optimizations, by op", y_title="nodes")
    fig.update_layout(barmode="stack", bargap=0.2, xaxis=dict(categoryorder="array", categoryarray=order))
    return fig


def show(ctx, document: dict, bits: int) -> None:
    """Verdict, float nodes, per-layer requantization error, accuracies, download."""
    floats = document["float_nodes"]
    total = len(document["nodes"])
    if document["integer_only"]:
        st.success(f"Integer-only: yes. After onnxruntime's optimizations none of the {total} nodes computes in float "
                   "(quantizing the input and dequantizing the output are the boundary, outside a proof).")
    else:
        st.error(f"Integer-only: no. {len(floats)} of {total} nodes still compute in float after onnxruntime's "
                 "optimizations.")
        st.dataframe(pd.DataFrame([{"op": n["op_type"], "layer / node": n["node"], "why": n["reason"]}
                                   for n in floats]), hide_index=True, key="integer_float_nodes")
    st.plotly_chart(nodes_figure(document["nodes"]), key="integer_nodes_chart")
    if document["simulated_only"]:
        st.caption("Kept FP32 in the export (no onnxruntime kernel for their format): "
                   + ", ".join(document["simulated_only"]))
    with st.expander(f"Every node ({total})"):
        st.dataframe(pd.DataFrame(document["nodes"]), hide_index=True)
    if not document["integer_only_export"]:
        st.info(f"No integer-only export: {document['refused'] or 'the model computes in float'}.")
        return
    st.subheader("Fixed-point requantization")
    st.caption(f"Each layer's requantization as a {bits}-bit multiplier and a right shift, rounded once "
               "(Jacob et al. 2018), against onnxruntime's float scales on the same accumulators. gemmlowp's "
               "two-rounding form (31-bit) is shown for comparison.")
    st.dataframe(pd.DataFrame([{
        "layer": layer["layer"], "op": layer["op_type"], "multiplier rel. error": layer["max_multiplier_error"],
        "codes changed %": 100 * layer["changed_fraction"], "max change (codes)": layer["max_code_change"],
        "SQNR vs float scales (dB)": "identical" if not math.isfinite(layer["sqnr_db"]) else f"{layer['sqnr_db']:.1f}",
        "gemmlowp codes changed %": 100 * layer["gemmlowp_changed_fraction"]} for layer in document["layers"]]),
        hide_index=True, key="integer_layers")
    columns = st.columns(3)
    if document["exported_accuracy"] is not None:
        columns[0].metric("Exported model accuracy", f"{100 * document['exported_accuracy']:.2f}%")
        columns[1].metric("Integer-only accuracy", f"{100 * document['integer_accuracy']:.2f}%",
                          f"{100 * (document['integer_accuracy'] - document['exported_accuracy']):+.2f} pp")
    columns[2].metric("Argmax agreement", f"{100 * document['agreement']:.2f}%")
    st.download_button(f"Download the integer-only model ({len(document['model_bytes']) / 1024:.1f} KB)",
                       data=document["model_bytes"], file_name=f"{ctx.model_name}_integer_only.onnx",
                       mime="application/octet-stream", on_click="ignore", key="integer_download")

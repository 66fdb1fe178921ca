"""Run history: every config evaluated in this session (`ui.cache.evaluate_cached` records it: `ui/run_log.py`), kept in
session state so it survives page switches; pin two runs to compare them layer by layer; restore one.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.config import PRESETS
from quant_core.search.run_history import RunRecord, history_csv, layer_format
from ui import state
from ui.cache import get_evaluator
from ui.run_log import history

HISTORY_PINNED = "history_pinned"
HISTORY_RESTORE = "history_restore"
HISTORY_RESTORE_BUTTON = "history_restore_button"
HISTORY_DOWNLOAD = "history_download"
def model_runs(ctx) -> list[RunRecord]:
    """The runs of the current model and data."""
    return [run for run in history() if run.model_key == ctx.model_key and run.data_key == ctx.data_key]


def history_table(runs: list[RunRecord]) -> pd.DataFrame:
    return pd.DataFrame([run.to_row() for run in runs])


def show_history(ctx) -> list[RunRecord]:
    """The history table, its CSV and the restore control; return the runs shown."""
    runs = model_runs(ctx)
    others = len(history()) - len(runs)
    if not runs:
        st.info("No config evaluated yet for this model in this session: open Mixed precision (or the Graph) and "
                "every config it evaluates appears here.")
        return runs
    st.dataframe(history_table(runs), hide_index=True, width="stretch",
                 column_config={"methods": st.column_config.TextColumn("methods", width="large")})
    if others:
        st.caption(f"{others} more run(s) of other models or data in this session (switch back to see them).")
    names = [run.name for run in runs]
    restore_column, download_column = st.columns([3, 2], vertical_alignment="bottom")
    chosen = restore_column.selectbox("Run to restore as the current config", names, index=len(names) - 1,
                                      key=HISTORY_RESTORE)
    run = runs[names.index(chosen)]
    # A callback: it runs before the script, so the sidebar drawn first already shows the restored config.
    if restore_column.button("Restore", key=HISTORY_RESTORE_BUTTON, on_click=state.set_config, args=(run.config,)):
        st.success(f"{run.name} is the current config again (every page uses it).")
    download_column.download_button("History (CSV)", data=history_csv(tuple(runs)), file_name="run_history.csv",
                                    mime="text/csv", on_click="ignore", key=HISTORY_DOWNLOAD)
    return runs


def pinned_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """Up to two runs pinned by the user to compare (default: the last two)."""
    names = [run.name for run in runs]
    default = names[-2:]
    pinned = st.multiselect("Pin two runs to compare", names, default=default, max_selections=2, key=HISTORY_PINNED)
    return [runs[names.index(name)] for name in pinned]


def comparison_frame(ctx, first: RunRecord, second: RunRecord, errors: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Per layer: each run's format and accumulated SQNR (dB); `errors[run name][layer]` = accumulated SQNR."""
    a, b = first.config, second.config
    rows = []
    for layer in ctx.info.layers:
        rows.append({"layer": layer.name, f"{first.name} format": layer_format(a.for_layer(layer.name)),
                     f"{second.name} format": layer_format(b.for_layer(layer.name)),
                     f"{first.name} SQNR (dB)": errors.get(first.name, {}).get(layer.name),
                     f"{second.name} SQNR (dB)": errors.get(second.name, {}).get(layer.name)})
    frame = pd.DataFrame(rows)
    frame["differs"] = frame[f"{first.name} format"] != frame[f"{second.name} format"]
    return frame


def comparison_figure(frame: pd.DataFrame, first: str, second: str) -> go.Figure:
    """Accumulated SQNR per layer of the two runs, layers top to bottom; layers whose format differs marked."""
    labels = [f"{layer} ◆" if differs else layer for layer, differs in zip(frame["layer"], frame["differs"])]
    fig = go.Figure()
    for name in (first, second):
        fig.add_scatter(x=frame[f"{name} SQNR (dB)"], y=labels, mode="lines+markers", name=name,
                        hovertemplate="%{y}<br>" + name + ": %{x:.1f} dB<extra></extra>")
    fig.update_layout(title="Accumulated SQNR per layer (higher is better; ◆ = format differs)",
                      xaxis_title="SQNR (dB)", yaxis=dict(autorange="reversed", type="category", automargin=True),
                      height=max(360, 24 * len(frame) + 160), margin=dict(l=10, r=10, t=80, b=10),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0))
    return fig


def show_comparison(ctx, runs: list[RunRecord]) -> None:
    """Two pinned runs side by side: the headline numbers, the per-layer table and one chart."""
    pinned = pinned_runs(runs)
    if len(pinned) < 2:
        st.caption("Pin two runs to compare them layer by layer.")
        return
    first, second = pinned
    for column, run in zip(st.columns(2), pinned):
        column.metric(f"{run.name}: {run.metric}", "—" if run.metric_value is None else f"{100 * run.metric_value:.2f} %",
                      help=run.methods)
        column.caption(f"{run.size_bytes / 1024:.1f} KiB" + ("" if run.latency_ms is None
                                                             else f", {run.latency_ms:.3g} ms measured"))
    evaluator = get_evaluator(ctx)
    errors = {}
    with st.spinner("Per-layer errors of the two runs…"):
        for run in pinned:
            if run.config != PRESETS["FP32"]:  # FP32 has no error to measure: its cells stay empty
                errors[run.name] = {e.layer: e.accumulated_sqnr_db for e in evaluator.layer_errors(run.config)}
    frame = comparison_frame(ctx, first, second, errors)
    st.dataframe(frame, hide_index=True, width="stretch")
    st.plotly_chart(comparison_figure(frame, first.name, second.name), key="history_comparison")

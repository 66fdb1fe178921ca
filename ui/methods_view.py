"""Recovery page: choose the config's accuracy-recovery methods and see each one's before / after.

"Before" is the model as opened with the config without its methods; "after" the model the methods
made (`ui.setup.with_methods`, applied once per model, data and methods as a heavy job). Figures
are built from tidy frames (`method_series_figure`), results come from `ui.cache`.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from quant_core.config import MethodSpec, PRESETS
from quant_core.methods import methods
from ui import cache, state
from ui.mixed_view import layer_error_frame

METHODS_CHOICE = "methods_choice"
METHODS_ALPHA = "methods_alpha"
METHODS_APPLY = "methods_apply"
METHODS_CLEAR = "methods_clear"
METHODS_BUDGET = "methods_adaround_budget"
METHODS_ABSORB = "methods_cle_absorb"
RANGE_SEARCH = "methods_range_search"
RANGE_USE = "methods_range_use"
_SEARCH = "_methods_range_search"  # (model key, data key, config JSON) -> RangeSearch, this session's last
_MARGIN = dict(l=10, r=10, t=40, b=10)


def _titles() -> dict[str, str]:
    return {name: method.title for name, method in methods().items()}


def choose_methods(ctx) -> None:
    """Multiselect of methods (in the order picked), SmoothQuant's alpha, and the buttons that put them
    into the current config (every page then works on the transformed model)."""
    titles = _titles()
    current = [spec.name for spec in ctx.config.methods]
    chosen = st.multiselect("Methods, applied in this order", list(titles), default=current, key=METHODS_CHOICE,
                            format_func=lambda name: titles[name],
                            help="Function-preserving methods (CLE, SmoothQuant) rewrite the FP32 model without "
                                 "changing what it computes; bias correction uses the config's weight formats.")
    own = {spec.name: spec for spec in ctx.config.methods}
    alpha = own["smoothquant"].option("alpha") if "smoothquant" in own else 0.5
    if "smoothquant" in chosen:
        alpha = st.slider("SmoothQuant alpha (migration strength)", 0.0, 1.0, float(alpha), 0.05, key=METHODS_ALPHA,
                          help="0: activations keep their outliers; 1: all of the range moves into the weights.")
    absorb = own["cle"].option("high_bias_absorption") if "cle" in own else False
    if "cle" in chosen:
        absorb = st.checkbox("CLE: absorb high biases into the next layer", value=bool(absorb), key=METHODS_ABSORB,
                             help="Moves each channel's smallest output on the calibration data (when above 0) "
                                  "from a layer's bias into the next layer's: exact on that data, narrower ReLU "
                                  "outputs.")
    budget = own["adaround"].option("time_budget_s") if "adaround" in own else 60.0
    if "adaround" in chosen:
        budget = st.number_input("AdaRound time budget (s)", 1.0, 600.0, float(budget), 10.0, key=METHODS_BUDGET,
                                 help="Layers not reached within it keep round-to-nearest (the report lists them).")
    for name in chosen:
        st.caption(f"**{titles[name]}** ({methods()[name].kind}): {methods()[name].description}")
    options = {"smoothquant": {"alpha": alpha}, "adaround": {"time_budget_s": budget},
               "cle": {"high_bias_absorption": absorb}}

    def spec(name: str) -> MethodSpec:
        base = dict(own[name].options) if name in own else {}
        return MethodSpec(name, tuple({**base, **options.get(name, {})}.items()))

    specs = tuple(spec(name) for name in chosen)
    apply, clear = st.columns(2)
    if apply.button("Use these methods in the current config", key=METHODS_APPLY, type="primary",
                    disabled=specs == ctx.config.methods):
        state.set_config(ctx.config.with_methods(specs))
        st.rerun()
    if clear.button("No methods", key=METHODS_CLEAR, disabled=not ctx.config.methods):
        state.set_config(ctx.config.with_methods(()))
        st.rerun()


def before_after_frame(before, after, seconds: float) -> pd.DataFrame:
    """One row per metric of the task (headline first) and the size: before, after, change."""
    rows = []
    for name, value in before.score.metrics:
        new = after.score.value(name)
        rows.append({"metric": name, "before": value, "after": new,
                     "change": None if value is None or new is None else new - value})
    rows.append({"metric": "size KB", "before": before.size_bytes / 1024, "after": after.size_bytes / 1024,
                 "change": (after.size_bytes - before.size_bytes) / 1024})
    rows.append({"metric": "methods' time s", "before": 0.0, "after": seconds, "change": seconds})
    return pd.DataFrame(rows)


def show_before_after(ctx) -> None:
    """The task's metrics and size of the config without and with its methods, and the per-layer errors."""
    if not ctx.config.methods or ctx.methods_report is None:
        st.info("Choose methods above and press **Use these methods in the current config** to see their "
                "before / after. Below: where the current config loses accuracy today.")
        if ctx.config != PRESETS["FP32"].with_methods(ctx.config.methods):
            errors = cache.get_evaluator(ctx).layer_errors(ctx.config)
            st.plotly_chart(layer_errors_figure(layer_error_frame(errors, ()).rename(columns={
                "isolated_sqnr_db": "isolated_sqnr_db_before", "accumulated_sqnr_db": "accumulated_sqnr_db_before"}),
                title="Per-layer SQNR of the current config, no methods yet (higher is better)"),
                key="methods_layer_errors")
        return
    before_ctx = ctx.without_methods()
    with st.spinner("Evaluating before / after…"):
        before = cache.evaluate_cached(before_ctx, before_ctx.config)
        after = cache.evaluate_cached(ctx, ctx.config)
    st.subheader(f"Config {ctx.config.name}: before and after the methods")
    st.dataframe(before_after_frame(before, after, ctx.methods_report.seconds), hide_index=True,
                 column_config={name: st.column_config.NumberColumn(format="%.4f")
                                for name in ("before", "after", "change")})
    if ctx.config == PRESETS["FP32"].with_methods(ctx.config.methods):
        return
    errors_before = cache.get_evaluator(before_ctx).layer_errors(before_ctx.config)
    errors_after = cache.get_evaluator(ctx).layer_errors(ctx.config)
    frame = layer_error_frame(errors_before, ()).merge(layer_error_frame(errors_after, ()), on="layer",
                                                       suffixes=("_before", "_after"))
    st.plotly_chart(layer_errors_figure(frame), key="methods_layer_errors")
    from quant_core.methods import changes_fp32
    if changes_fp32(ctx.config):
        st.caption("Per-layer errors *after* are measured against the rewritten model's own FP32 outputs: a bias "
                   "correction's shift, or AdaRound's rounding (already in its weights, so its layers show little "
                   "error there), is not counted in them. The task's metrics above are against the original model.")


def layer_errors_figure(frame: pd.DataFrame,
                        title: str = "Per-layer SQNR before / after the methods (higher is better)") -> go.Figure:
    """Per-layer SQNR (dB) before and after the methods, isolated and accumulated, in graph order (the
    "after" columns may be absent: the config without methods alone)."""
    figure = go.Figure()
    for column, name, color, dash in (("isolated_sqnr_db_before", "isolated, before", "#9ecae1", "dot"),
                                      ("isolated_sqnr_db_after", "isolated, after", "#1f77b4", "solid"),
                                      ("accumulated_sqnr_db_before", "accumulated, before", "#fdae6b", "dot"),
                                      ("accumulated_sqnr_db_after", "accumulated, after", "#ff7f0e", "solid")):
        if column in frame:
            figure.add_trace(go.Scatter(x=frame["layer"], y=frame[column], name=name, mode="lines+markers",
                                        line=dict(color=color, dash=dash)))
    figure.update_layout(title=title, yaxis_title="dB",
                         margin=dict(l=10, r=10, t=80, b=10), height=420,
                         legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
                         xaxis=dict(tickangle=-35, automargin=True))
    return figure


def series_frame(series) -> pd.DataFrame:
    """Tidy frame of one before / after series: channel, value, when."""
    return pd.DataFrame([{"channel": i, "value": v, "when": when}
                         for when, values in (("before", series.before), ("after", series.after))
                         for i, v in enumerate(values)])


def method_series_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Per-channel values before (grey) and after (blue), log scale: CLE ranges, SmoothQuant maxima."""
    figure = go.Figure()
    for when, color in (("before", "#bbbbbb"), ("after", "#1f77b4")):
        part = frame[frame["when"] == when]
        figure.add_trace(go.Bar(x=part["channel"], y=part["value"], name=when, marker_color=color))
    figure.update_layout(title=title, barmode="group", yaxis_type="log", xaxis_title="channel", margin=_MARGIN,
                         height=280, legend=dict(orientation="h"))
    return figure


def show_reports(ctx) -> None:
    """Each method's report: what it changed, what it could not use and why, its table and charts."""
    if ctx.methods_report is None:
        return
    titles = _titles()
    for index, report in enumerate(ctx.methods_report.methods):
        with st.expander(f"{titles.get(report.name, report.name)}: {report.seconds:.2f} s", expanded=index == 0):
            for line in report.changed:
                st.markdown(f"- {line}")
            if report.skipped:
                st.caption("Not used: " + "; ".join(f"{where}: {why}" for where, why in report.skipped))
            if report.rows:
                st.dataframe(pd.DataFrame(report.rows, columns=report.columns), hide_index=True)
            if report.series:
                titles_of = [s.title for s in report.series]
                shown = st.selectbox("Per-channel before / after", titles_of, key=f"methods_series_{index}")
                series = report.series[titles_of.index(shown)]
                st.plotly_chart(method_series_figure(series_frame(series), series.title),
                                key=f"methods_series_chart_{index}")


def range_search_section(ctx) -> None:
    """A button that picks each layer's activation range method (min-max, percentiles, MSE, entropy) by its own
    output error, the table it chose from, and a button that makes the result the current config."""
    st.subheader("Per-layer activation range search")
    st.caption("For each quantized activation, the range method whose isolated error at the layer's output is "
               "smallest (one per-layer error pass per candidate). It rewrites the config's per-layer ranges.")
    key = (ctx.model_key, ctx.data_key, ctx.config.to_json())
    found = st.session_state.get(_SEARCH)
    search = found[1] if found is not None and found[0] == key else None
    if st.button("Search each layer's activation range", key=RANGE_SEARCH):
        from quant_core.methods.range_search import search_activation_ranges
        from ui.jobs import heavy_job, streamlit_notice
        bar = st.progress(0.0, text="Scoring each candidate range on every layer…")
        with heavy_job("the activation range search", notify=streamlit_notice()):
            search = search_activation_ranges(cache.get_evaluator(ctx), ctx.config,
                                              progress=lambda f: bar.progress(f, text="Scoring candidates…"))
        bar.empty()
        st.session_state[_SEARCH] = (key, search)
    if search is None:
        return
    if not search.rows:
        st.info("The config quantizes no activation: there is no range to choose.")
        return
    frame = pd.DataFrame([{"layer": layer, "chosen": chosen, **dict(zip(search.candidates, scores))}
                          for layer, chosen, scores in search.rows])
    st.dataframe(frame, hide_index=True, column_config={name: st.column_config.NumberColumn(name, format="%.2f dB")
                                                        for name in search.candidates})
    if st.button("Use these ranges in the current config", key=RANGE_USE, disabled=search.config == ctx.config):
        state.set_config(search.config)
        st.rerun()

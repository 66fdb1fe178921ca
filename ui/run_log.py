"""The session's run log: every config evaluated (recorded by `ui.cache.evaluate_cached`) with its headline
metric, size and measured latency, in session state so it survives page switches. The Run history page
(`ui/history_view.py`) shows it.
"""
from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from quant_core.search.run_history import RunRecord, add_record, make_record, with_latency
from ui.context import task_key

_HISTORY = "_lab_history"  # session state: tuple[RunRecord, ...], oldest first


def history() -> tuple[RunRecord, ...]:
    """This session's runs, oldest first."""
    return st.session_state.get(_HISTORY, ())


def record(ctx, config, result) -> None:
    """Add the evaluation of `config` to this session's history (once per model, data, config and task)."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return
    runs = history()
    key = (ctx.model_key, ctx.data_key, config.to_json(), task_key(ctx))
    if any(run.key == key for run in runs):  # the common case: a rerun of a page, nothing new
        return
    score = result.score
    entry = make_record(runs, model_key=ctx.model_key, data_key=ctx.data_key, task_key=key[3], config=config,
                        metric=score.headline if score else "accuracy",
                        metric_value=score.headline_value if score else result.accuracy,
                        size_bytes=result.size_bytes, fp32_size_bytes=result.fp32_size_bytes)
    st.session_state[_HISTORY] = add_record(runs, entry)


def record_latency(ctx, config, latency_ms: float) -> None:
    """Attach a measured latency (Trade-offs) to the run of `config`, if it is in the history."""
    key = (ctx.model_key, ctx.data_key, config.to_json(), task_key(ctx))
    st.session_state[_HISTORY] = with_latency(history(), key, latency_ms)

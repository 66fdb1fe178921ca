"""The first call of every page: page config, the shared sidebar (ui/sidebar.py), and the page's LabContext."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import streamlit as st

from quant_core.errors import QuantLabError
from ui import cache, navigation, sidebar, task_view
from ui.context import LabContext


def setup_page(title: str) -> LabContext:
    """Configure the page, draw the shared sidebar and return the page's context.

    Stops the script (st.stop) with a message when no model can be used.
    """
    navigation.leave_pages_folder_mode()
    st.set_page_config(page_title=f"{title} · Quantization Lab", page_icon="🔬", layout="wide")
    with st.sidebar:
        st.header("Model")
        prepared, source = sidebar.model_section()
        st.header("Data")
        data, data_key, data_name = sidebar.data_section(prepared, source)
        calibration_data = evaluation_data = None
        if data is not None:
            calibration_data, evaluation_data = cache.split_data(source.key, data_key, data)
            st.caption(f"{data_name}: {calibration_data.num_samples} calibration / "
                       f"{evaluation_data.num_samples} evaluation samples")
        else:
            st.caption("No data: accuracy, calibration and activations need a .npz with the model's inputs.")
        st.header("Quantization config")
        config = sidebar.config_section(prepared.info, model_key=source.key)
        st.header("Task")
        task = task_view.task_section(prepared.info, source.key)
    ctx = LabContext(model_key=source.key, model_name=source.name, prepared=prepared, info=prepared.info,
                     data=data, calibration_data=calibration_data, evaluation_data=evaluation_data,
                     config=config, data_key=data_key, data_name=data_name, is_demo=source.demo is not None,
                     task=task)
    return with_methods(ctx)


METHODS_STOP = "methods_stop"
_STOPPED = "_lab_methods_stopped"  # the message shown once after a stop


def _stop_methods() -> None:
    from ui import state
    state.set_config(state.get_config().with_methods(()))
    st.session_state[_STOPPED] = "The methods were stopped and removed from the config."


def with_methods(ctx: LabContext) -> LabContext:
    """`ctx` on the model the config's methods make (applied once per model, data and methods), or `ctx`
    itself without methods; without data the methods cannot run and the sidebar says so."""
    stopped = st.session_state.pop(_STOPPED, None)
    if stopped:
        st.sidebar.warning(stopped)
    if not ctx.config.methods:
        return ctx
    if ctx.calibration_data is None:
        st.sidebar.warning("The config's methods need data (calibration inputs): shown without them.")
        return ctx
    from quant_core.methods import changes_fp32
    with page_errors("the config's accuracy-recovery methods"):
        bar, stop = st.empty(), st.empty()
        if not cache.methods_ready(ctx.model_key, ctx.data_key, ctx.config):
            # A click reruns the script, which ends this run at its next progress update (between layers).
            stop.button("Stop the methods", key=METHODS_STOP, on_click=_stop_methods,
                        help="Ends the methods' run and removes them from the config (nothing is kept).")
        transformed, report, key = cache.methods_model(
            ctx.model_key, ctx.data_key, ctx.prepared, ctx.config, ctx.calibration_data,
            progress=lambda fraction: bar.progress(fraction, text="Applying the config's methods…"))
        bar.empty()
        stop.empty()
        names = ", ".join(spec.name for spec in ctx.config.methods)
        st.sidebar.caption(f"Methods applied to the model first: {names} ({report.seconds:.1f} s).")
        return replace(ctx, prepared=transformed, info=transformed.info, model_key=key, original=ctx.prepared,
                       original_key=ctx.model_key, reference=ctx.prepared if changes_fp32(ctx.config) else None,
                       methods_report=report)
    return replace(ctx, config=ctx.config.with_methods(()))


@contextmanager
def page_errors(what: str = "this view") -> Iterator[None]:
    """Show errors raised inside the block as one st.error line instead of a traceback."""
    try:
        yield
    except QuantLabError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
        st.error(f"Could not compute {what}: {type(err).__name__}: {err}. Try another model, data or config.")

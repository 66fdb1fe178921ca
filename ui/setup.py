"""The first call of every page: page config, the shared sidebar (ui/sidebar.py), and the page's LabContext."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from quant_core.config import QuantConfig
from quant_core.errors import QuantLabError
from ui import cache, navigation, sidebar, task_view

if TYPE_CHECKING:
    from quant_core.model.data import Dataset
    from quant_core.model.model_io import ModelInfo, PreparedModel
    from quant_core.engine.tasks import Task


@dataclass(frozen=True, eq=False)
class LabContext:
    """Everything a page needs about the current model, its data and the current config."""

    model_key: str  # content hash of the model bytes: the cache key
    model_name: str
    prepared: PreparedModel
    info: ModelInfo
    data: Dataset | None  # all the model's data (the demos: the 797 held-out digits)
    calibration_data: Dataset | None  # the calibration split of `data`
    evaluation_data: Dataset | None  # the evaluation split of `data`
    config: QuantConfig
    data_key: str = ""  # content key of the data ("" without data)
    data_name: str = ""  # e.g. "digits (held-out demo data)" or the uploaded file name
    is_demo: bool = False
    task: Task | None = None  # what the output is for, which sets the metric (None: inferred by the Evaluator)


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
    return LabContext(model_key=source.key, model_name=source.name, prepared=prepared, info=prepared.info,
                      data=data, calibration_data=calibration_data, evaluation_data=evaluation_data,
                      config=config, data_key=data_key, data_name=data_name, is_demo=source.demo is not None,
                      task=task)


@contextmanager
def page_errors(what: str = "this view") -> Iterator[None]:
    """Show errors raised inside the block as one st.error line instead of a traceback."""
    try:
        yield
    except QuantLabError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
        st.error(f"Could not compute {what}: {type(err).__name__}: {err}. Try another model, data or config.")

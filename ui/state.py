"""Session-state keys and the current quantization config (survives page switches).

Widget keys are named here once so pages, tests and the benchmark agree on them. Values that must
outlive a page switch are kept under private keys (`_lab_*`): Streamlit forgets a widget's value
when the page that rendered it is left, but keeps plain session-state entries.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import streamlit as st

from quant_core.config import PRESETS, QuantConfig
from quant_core.engine.tasks import Task

# Sidebar widget keys (every page).
MODEL_CHOICE = "model_choice"
MODEL_UPLOAD = "model_upload"
DATA_UPLOAD = "data_upload"
DATA_STATE = "data_state"  # streaming state pairs "output=input" (shown for data with a layout)
CONFIG_PRESET = "config_preset"
CONFIG_UPLOAD = "config_upload"
TASK_KIND = "task_kind"
TASK_OUTPUT = "task_output"
TASK_OPTION = "task_option"  # the kind's one option: class / channel axis, CTC blank, or k of recall@k

# Page widget keys (pages 1 and 2).
WEIGHTS_LAYER = "weights_layer"
WEIGHTS_BITS = "weights_bits"
WEIGHTS_CLIP = "weights_clip"

DEFAULT_MODEL = "cnn"
DEFAULT_PRESET = "W8A8"
CUSTOM_PRESET = "custom"

_CONFIG = "_lab_config"
_MODEL = "_lab_model"
_DATA = "_lab_data"
_HANDLED_UPLOADS = "_lab_handled_uploads"
_MESSAGES = "_lab_messages"
_TASK = "_lab_task"


@dataclass(frozen=True)
class ModelSource:
    """Where the current model comes from: a demo name, or an uploaded file (its name and content key).

    No bytes: the opened model is held by the session's pin (`ui.cache.current_prepared`), so an
    upload is kept once in memory, not twice."""

    name: str
    key: str
    demo: str | None = None


@dataclass(frozen=True)
class DataSource:
    """An uploaded .npz file for the current model (the demos bring their own data); read once and
    held by the session's pin (`ui.cache.current_data`)."""

    name: str
    key: str
    model_key: str  # the data was validated against this model


def get_config() -> QuantConfig:
    """Return the current quantization config (the W8A8 preset until the user picks another)."""
    return st.session_state.get(_CONFIG, PRESETS[DEFAULT_PRESET])


def set_config(config: QuantConfig) -> None:
    """Make `config` the current quantization config for every page."""
    if not isinstance(config, QuantConfig):
        raise TypeError(f"set_config needs a QuantConfig, got {type(config).__name__}")
    st.session_state[_CONFIG] = config


def preset_label(config: QuantConfig) -> str:
    """Name of the preset `config` equals (whatever CPU target it exports for), or "custom"."""
    preset = PRESETS.get(config.name)
    return config.name if preset is not None and replace(preset, target=config.target) == config else CUSTOM_PRESET


def get_task(model_key: str) -> Task | None:
    """The task the user chose for this model (None: the one inferred from its outputs)."""
    chosen = st.session_state.get(_TASK)
    return chosen[1] if chosen is not None and chosen[0] == model_key else None


def set_task(model_key: str, task: Task | None) -> None:
    """Make `task` the task of this model on every page (None: back to the inferred one)."""
    if task is not None and not isinstance(task, Task):
        raise TypeError(f"set_task needs a Task or None, got {type(task).__name__}")
    st.session_state[_TASK] = None if task is None else (model_key, task)


def get_model_source() -> ModelSource | None:
    return st.session_state.get(_MODEL)


def set_model_source(source: ModelSource) -> None:
    st.session_state[_MODEL] = source


def get_data_source() -> DataSource | None:
    return st.session_state.get(_DATA)


def set_data_source(source: DataSource | None) -> None:
    st.session_state[_DATA] = source


def upload_is_new(widget_key: str, file_id: str) -> bool:
    """Record that the upload `file_id` of `widget_key` is being handled; False if it already was.

    An uploaded file stays in its widget on every rerun: it must be applied once, not on every
    rerun (that would undo a preset chosen after uploading a config, for example).
    """
    handled = st.session_state.setdefault(_HANDLED_UPLOADS, {})
    if handled.get(widget_key) == file_id:
        return False
    handled[widget_key] = file_id
    return True


def push_message(widget_key: str, text: str | None) -> None:
    """Remember an error (or clear it with None) about the upload in `widget_key`."""
    messages = st.session_state.setdefault(_MESSAGES, {})
    if text is None:
        messages.pop(widget_key, None)
    else:
        messages[widget_key] = text


def get_message(widget_key: str) -> str | None:
    return st.session_state.get(_MESSAGES, {}).get(widget_key)

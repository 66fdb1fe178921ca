"""Cached adapters between the pages and quant_core.

`st.cache_resource` holds what is shared and never mutated (prepared models, datasets,
calibrations, evaluators); `st.cache_data` holds results (copied on each read). Every cache is
bounded with `max_entries`. Large arguments are passed with a leading underscore so Streamlit does
not hash them on every rerun: the content key computed once by the sidebar stands for them.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import streamlit as st

from quant_core.calibrate import calibrate
from quant_core.config import QuantConfig
from quant_core.data import Dataset, load_npz, split_dataset
from quant_core.demo import load_demo
from quant_core.errors import DataError
from quant_core.evaluate import Evaluator
from quant_core.model_io import PreparedModel, load_model, prepare_model

if TYPE_CHECKING:
    from ui.setup import LabContext

Progress = Callable[[float], None]

CALIBRATION_BINS = 2048
CALIBRATION_SAMPLES = 256


def content_key(content: bytes) -> str:
    """Short content hash of a file: the cache key of a model or a data file."""
    return hashlib.sha256(content).hexdigest()[:16]


@st.cache_resource(max_entries=3, show_spinner=False)
def demo_source(name: str) -> tuple[bytes, str, Dataset]:
    """Return a demo model's bytes, their content key and its held-out data."""
    model_bytes, data = load_demo(name)
    return model_bytes, content_key(model_bytes), data


def load_prepared(model_bytes: bytes, model_key: str | None = None) -> PreparedModel:
    """Open untrusted ONNX bytes once per content (`model_key` saves re-hashing them)."""
    return _prepared(model_key or content_key(model_bytes), model_bytes)


@st.cache_resource(max_entries=4, show_spinner="Opening the model…")
def _prepared(model_key: str, _model_bytes: bytes) -> PreparedModel:
    return prepare_model(load_model(_model_bytes))


@st.cache_resource(max_entries=4, show_spinner=False)
def load_data(model_key: str, data_key: str, _data_bytes: bytes, _prepared_model: PreparedModel) -> Dataset:
    """Read and validate an uploaded .npz against the model (once per model and file)."""
    return load_npz(_data_bytes, _prepared_model.info)


@st.cache_resource(max_entries=4, show_spinner=False)
def split_data(model_key: str, data_key: str, _data: Dataset) -> tuple[Dataset, Dataset]:
    """Deterministic (calibration, evaluation) split of a model's data."""
    return split_dataset(_data, calibration_samples=CALIBRATION_SAMPLES, seed=0)


@dataclass(eq=False)
class _Once:
    """A value computed once and shared by every session (see `get_calibration`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    value: object = None


@st.cache_resource(max_entries=4, show_spinner=False)
def _calibration_slot(model_key: str, data_key: str) -> _Once:
    return _Once()


def get_calibration(ctx: LabContext, progress: Progress | None = None):
    """Return the model's Calibration: one pass over the calibration split, once per model + data.

    `progress(fraction)` is called during the pass only when it actually runs. The pass runs
    outside any cached function (a cached function may not update an st.progress created by the
    page); a per-model slot from st.cache_resource holds the result, and its lock makes two
    sessions asking at once share one pass.
    """
    _require_data(ctx)
    slot = _calibration_slot(ctx.model_key, ctx.data_key)
    with slot.lock:
        if slot.value is None:
            slot.value = calibrate(ctx.prepared, ctx.calibration_data, bins=CALIBRATION_BINS, progress=progress)
    return slot.value


def get_evaluator(ctx: LabContext, progress: Progress | None = None):
    """Return the model's Evaluator (one simulation session per model + data; never mutated)."""
    calibration = get_calibration(ctx, progress)
    return _evaluator(ctx.model_key, ctx.data_key, ctx.prepared, calibration, ctx.evaluation_data)


@st.cache_resource(max_entries=4, show_spinner=False)
def _evaluator(model_key: str, data_key: str, _prepared_model, _calibration_result, _evaluation_data):
    return Evaluator(_prepared_model, _calibration_result, _evaluation_data)


def evaluate_cached(ctx: LabContext, config: QuantConfig, progress: Progress | None = None):
    """Return `Evaluator.evaluate(config)` on the evaluation split, cached per model + data + config."""
    evaluator = get_evaluator(ctx, progress)
    return _evaluation(ctx.model_key, ctx.data_key, config.to_json(), evaluator, config)


@st.cache_data(max_entries=256, show_spinner=False)
def _evaluation(model_key: str, data_key: str, config_json: str, _evaluator, _config):
    return _evaluator.evaluate(_config)


def _require_data(ctx: LabContext) -> None:
    if ctx.calibration_data is None or ctx.evaluation_data is None:
        raise DataError("this needs data: upload a .npz file with the model's inputs in the sidebar")

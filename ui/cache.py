"""Cached adapters between the pages and quant_core.

`st.cache_resource` holds what is shared and never mutated (prepared models, datasets,
calibrations, evaluators); `st.cache_data` holds results (copied on each read). Every cache is
bounded with `max_entries`. Large arguments are passed with a leading underscore so Streamlit does
not hash them on every rerun: the content key computed once by the sidebar stands for them.

Sized for a class: the per-model caches hold `MODEL_ENTRIES` models (about one per user, each for
at most `MODEL_TTL_S`), and each session also keeps its *current* model's prepared model, data,
split, calibration and evaluator referenced from its own session state (`_pinned`): a shared cache
that evicts them (more users than entries, or the ttl) never makes that user prepare or calibrate
again. Memory stays bounded: at most MODEL_ENTRIES models in the caches plus one per live session.
The calibration pass is a heavy job (`ui.jobs.heavy_job`, taken before the per-model lock).
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from quant_core.engine.calibrate import calibrate, calibration_tensors, extend_calibration, layer_input_tensors
from quant_core.config import QuantConfig
from quant_core.model.data import Dataset, load_npz, record_state, split_dataset
from quant_core.model.demo import load_demo
from quant_core.errors import DataError
from quant_core.engine.evaluate import Evaluator
from quant_core.model.model_io import PreparedModel, load_model, prepare_model
from ui import run_log
from ui.context import LabContext, task_key
from ui.jobs import Notify, heavy_job, waiting_notice


Progress = Callable[[float], None]

CALIBRATION_BINS = 2048
CALIBRATION_SAMPLES = 256
# A class of 16 to 30 users, each on their own model: one entry per user, so nobody's model is evicted
# while they work on it (4 entries made 8 users on 8 models calibrate ~100 times instead of 8). The
# ttl frees a model nobody asked for in an hour; the session pins below keep a user's current one.
MODEL_ENTRIES = 16
# An uploaded .npz is unpacked in the server's memory and kept while its user works on it: 16 users at
# the library's 2 GiB would be 32 GiB. 512 MiB still holds ~2 M MNIST-sized samples.
UPLOAD_DATA_BYTES = 512 * 2**20
MODEL_TTL_S = 3600
_PINNED = "_cache_pinned"  # session state: kind -> (key, object) of this session's current model


def _pinned(kind: str, key: tuple, compute: Callable[[], object]):
    """Return this session's pinned object of `kind` for `key`, or compute it and pin it (replacing the last).

    One object per kind and session: the session's current model (and data) stays referenced even
    when the shared cache evicts it. Outside a script run (no session) it just computes.
    """
    if get_script_run_ctx(suppress_warning=True) is None:
        return compute()
    pins = st.session_state.setdefault(_PINNED, {})
    pinned = pins.get(kind)
    if pinned is not None and pinned[0] == key:
        return pinned[1]
    value = compute()
    pins[kind] = (key, value)
    return value


def _pin(kind: str, key: tuple):
    """This session's pinned object of `kind` if it is the one for `key`, else None."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return None
    pinned = st.session_state.get(_PINNED, {}).get(kind)
    return pinned[1] if pinned is not None and pinned[0] == key else None


def current_prepared(model_key: str) -> PreparedModel | None:
    """The uploaded model this session opened with `load_prepared`, or None if it holds another one.

    The session keeps the opened model, not the uploaded bytes (which would double its memory):
    the pin is replaced only when the user opens another model (lessons pin theirs apart)."""
    return _pin("prepared", (model_key,))


def current_data(model_key: str, data_key: str) -> Dataset | None:
    """The uploaded data this session read with `load_data` for that model, or None."""
    return _pin("data", (model_key, data_key))


def content_key(content: bytes) -> str:
    """Short content hash of a file: the cache key of a model or a data file."""
    return hashlib.sha256(content).hexdigest()[:16]


@st.cache_resource(max_entries=3, show_spinner=False)
def demo_source(name: str) -> tuple[bytes, str, Dataset]:
    """Return a demo model's bytes, their content key and its held-out data."""
    model_bytes, data = load_demo(name)
    return model_bytes, content_key(model_bytes), data


def load_prepared(model_bytes: bytes, model_key: str | None = None, *, pin: str = "prepared") -> PreparedModel:
    """Open untrusted ONNX bytes once per content (`model_key` saves re-hashing them).

    `pin` names the session's slot that keeps it: "prepared" is the user's model (the sidebar);
    lessons use their own slot so that visiting them never unpins the user's upload."""
    key = model_key or content_key(model_bytes)
    return _pinned(pin, (key,), lambda: _prepared(key, model_bytes))


@st.cache_resource(max_entries=MODEL_ENTRIES, ttl=MODEL_TTL_S, show_spinner="Opening the model…")
def _prepared(model_key: str, _model_bytes: bytes) -> PreparedModel:
    return prepare_model(load_model(_model_bytes))


def load_data(model_key: str, data_key: str, data_bytes: bytes, prepared_model: PreparedModel) -> Dataset:
    """Read and validate an uploaded .npz against the model (once per model and file); not pinned:
    `pin_data` once every check passed, so a refused file never unpins the data in use."""
    return _data(model_key, data_key, data_bytes, prepared_model)


def pin_data(model_key: str, data_key: str, data: Dataset) -> None:
    """Make `data` this session's data for the model (`current_data`), replacing the previous one."""
    _pinned("data", (model_key, data_key), lambda: data)


@st.cache_resource(max_entries=MODEL_ENTRIES, ttl=MODEL_TTL_S, show_spinner=False)
def _data(model_key: str, data_key: str, _data_bytes: bytes, _prepared_model: PreparedModel) -> Dataset:
    data = load_npz(_data_bytes, _prepared_model.info, max_bytes=UPLOAD_DATA_BYTES)
    return record_state(_prepared_model, data)  # a stream's state inputs the .npz left out


def split_data(model_key: str, data_key: str, data: Dataset, *, pin: str = "split") -> tuple[Dataset, Dataset]:
    """Deterministic (calibration, evaluation) split of a model's data."""
    return _pinned(pin, (model_key, data_key), lambda: _split(model_key, data_key, data))


@st.cache_resource(max_entries=MODEL_ENTRIES, ttl=MODEL_TTL_S, show_spinner=False)
def _split(model_key: str, data_key: str, _data: Dataset) -> tuple[Dataset, Dataset]:
    return split_dataset(_data, calibration_samples=CALIBRATION_SAMPLES, seed=0)


@dataclass(eq=False)
class _Once:
    """A value computed once and shared by every session (see `get_calibration`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    value: object = None


@st.cache_resource(max_entries=MODEL_ENTRIES, ttl=MODEL_TTL_S, show_spinner=False)
def _calibration_slot(model_key: str, data_key: str) -> _Once:
    return _Once()


def get_calibration(ctx: LabContext, progress: Progress | None = None, notify: Notify | None = None, *,
                    layer_outputs: bool = False, cancel: Callable[[], bool] | None = None):
    """Return the model's Calibration: once per model + data, the layer inputs first, the rest when asked.

    The first call counts what activation quantization reads (`layer_input_tensors`); `layer_outputs=True`
    (the Activations page's outputs, the export's Conv outputs) adds every other calibration tensor with
    one more pass over the calibration split (`extend_calibration`: the same histograms as one pass over
    everything), kept in place of the first. `progress(fraction)` is called during a pass only when one
    actually runs; `cancel()` may stop it (`Cancelled`; the calibration stays as it was). A pass runs
    outside any cached function (a cached function may not update an st.progress created by the page);
    a per-model slot from st.cache_resource (pinned in the session) holds the result, and its lock makes
    two sessions asking at once share one pass. A pass is a heavy job: taken before the slot's lock
    (ui.jobs' rule), so a user waiting for another user's job sees `notify`'s message (default: an st.info
    at the current place on the page, drawn only if it has to wait).
    """
    _require_data(ctx)
    key = (ctx.model_key, ctx.data_key)
    slot = _pinned("calibration", key, lambda: _calibration_slot(*key))
    wanted = calibration_tensors(ctx.prepared) if layer_outputs else layer_input_tensors(ctx.prepared)
    if slot.value is not None and not slot.value.missing(wanted):
        return slot.value
    what = "the layer outputs' calibration" if slot.value is not None else "the calibration"
    with heavy_job(f"{what} of {ctx.model_name}", notify=notify or waiting_notice()):
        with slot.lock:
            if slot.value is None:
                slot.value = calibrate(ctx.prepared, ctx.calibration_data, tensors=wanted, bins=CALIBRATION_BINS,
                                       progress=progress, cancel=cancel)
            elif slot.value.missing(wanted):
                slot.value = extend_calibration(slot.value, ctx.prepared, ctx.calibration_data, wanted,
                                                progress=progress, cancel=cancel)
    return slot.value


def get_evaluator(ctx: LabContext, progress: Progress | None = None):
    """Return the model's Evaluator (one simulation session per model + data; never mutated).

    After a method that changes the FP32 function (bias correction: `ctx.reference` is the original
    model), metrics are taken against the original model's outputs."""
    calibration = get_calibration(ctx, progress)
    reference = getattr(ctx, "reference", None)
    return _pinned("evaluator", (ctx.model_key, ctx.data_key),
                   lambda: _evaluator(ctx.model_key, ctx.data_key, ctx.prepared, calibration, ctx.evaluation_data,
                                      reference))


def scored_samples(ctx: LabContext) -> int:
    """How many evaluation samples the metrics score: the Evaluator's (`Evaluator.sample_note`), once it is built."""
    return get_evaluator(ctx).sample_count if has_evaluator(ctx) else ctx.evaluation_data.num_samples


def has_evaluator(ctx: LabContext) -> bool:
    """Whether this session already holds the model's Evaluator (its FP32 reference run is done)."""
    return _pin("evaluator", (ctx.model_key, ctx.data_key)) is not None


@st.cache_resource(max_entries=MODEL_ENTRIES, ttl=MODEL_TTL_S, show_spinner=False)
def _evaluator(model_key: str, data_key: str, _prepared_model, _calibration_result, _evaluation_data,
               _reference=None):
    outputs = None if _reference is None else Evaluator(_reference, None, _evaluation_data).fp32_outputs
    return Evaluator(_prepared_model, _calibration_result, _evaluation_data, reference_outputs=outputs)


def methods_key(config: QuantConfig) -> str:
    """What the transformed model depends on: the methods, and the formats when a method reads them."""
    from quant_core.methods import changes_fp32
    methods = json.dumps([spec.to_dict() for spec in config.methods], sort_keys=True)
    if changes_fp32(config):
        return methods + config.with_methods(()).to_json()
    return methods


def methods_ready(model_key: str, data_key: str, config: QuantConfig) -> bool:
    """True when `config.methods` were already applied to this model and data (no heavy job to wait for)."""
    key = (model_key, data_key, methods_key(config))
    return _methods_slot(*key).value is not None


METHOD_ENTRIES = 4  # transformed models (a copy of the weights each) shared by every session


def methods_model(model_key: str, data_key: str, prepared: PreparedModel, config: QuantConfig,
                  calibration_data: Dataset, progress: Progress | None = None):
    """(transformed PreparedModel, MethodsReport, its cache key): `config.methods` applied once per model,
    data and methods (`methods_key`), as a heavy job; this session pins its current one."""
    key = (model_key, data_key, methods_key(config))
    slot = _pinned("methods", key, lambda: _methods_slot(*key))
    if slot.value is None:
        with heavy_job(f"the accuracy-recovery methods of {config.name}", notify=waiting_notice()):
            with slot.lock:
                if slot.value is None:
                    from quant_core.methods import apply_methods
                    slot.value = apply_methods(prepared, config, calibration_data, progress=progress)
    transformed, report = slot.value
    return transformed, report, f"{model_key}+methods-{content_key(key[2].encode())}"


@st.cache_resource(max_entries=METHOD_ENTRIES, ttl=MODEL_TTL_S, show_spinner=False)
def _methods_slot(model_key: str, data_key: str, methods: str) -> _Once:
    return _Once()


def evaluate_cached(ctx: LabContext, config: QuantConfig, progress: Progress | None = None):
    """Return `Evaluator.evaluate(config, task=ctx.task)` on the evaluation split, cached per model + data +
    config + task."""
    evaluator = get_evaluator(ctx, progress)
    result = _evaluation(ctx.model_key, ctx.data_key, config.to_json(), task_key(ctx), evaluator, config, ctx.task)
    run_log.record(ctx, config, result)  # every config evaluated in the session goes into its run history
    return result


def was_evaluated(ctx: LabContext, config: QuantConfig) -> bool:
    """Whether this session already evaluated `config` (model, data and task as now): its result is then cached."""
    return run_log.has(ctx, config)


@st.cache_data(max_entries=256, show_spinner=False)
def _evaluation(model_key: str, data_key: str, config_json: str, task_json: str, _evaluator, _config, _task):
    return _evaluator.evaluate(_config, task=_task)


def _require_data(ctx: LabContext) -> None:
    if ctx.calibration_data is None or ctx.evaluation_data is None:
        raise DataError("this needs data: upload a .npz file with the model's inputs in the sidebar")

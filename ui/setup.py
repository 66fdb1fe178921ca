"""The first call of every page: page config, the shared sidebar, and the page's LabContext."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import streamlit as st

from quant_core.config import PRESETS, QuantConfig
from quant_core.errors import ConfigError, QuantLabError
from ui import cache, state

if TYPE_CHECKING:
    from quant_core.data import Dataset
    from quant_core.model_io import ModelInfo, PreparedModel

MAX_UPLOAD_MB = 200  # quant_core.model_io.MAX_MODEL_BYTES; .streamlit/config.toml server.maxUploadSize


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


def setup_page(title: str) -> LabContext:
    """Configure the page, draw the shared sidebar and return the page's context.

    Stops the script (st.stop) with a message when no model can be used.
    """
    st.set_page_config(page_title=f"{title} · Quantization Lab", page_icon="🔬", layout="wide")
    with st.sidebar:
        st.header("Model")
        prepared, source = _model_section()
        st.header("Data")
        data, data_key, data_name = _data_section(prepared, source)
        calibration_data = evaluation_data = None
        if data is not None:
            calibration_data, evaluation_data = cache.split_data(source.key, data_key, data)
            st.caption(f"{data_name}: {calibration_data.num_samples} calibration / "
                       f"{evaluation_data.num_samples} evaluation samples")
        else:
            st.caption("No data: accuracy, calibration and activations need a .npz with the model's inputs.")
        st.header("Quantization config")
        config = _config_section(prepared.info)
    return LabContext(model_key=source.key, model_name=source.name, prepared=prepared, info=prepared.info,
                      data=data, calibration_data=calibration_data, evaluation_data=evaluation_data,
                      config=config, data_key=data_key, data_name=data_name, is_demo=source.demo is not None)


@contextmanager
def page_errors(what: str = "this view") -> Iterator[None]:
    """Show errors raised inside the block as one st.error line instead of a traceback."""
    try:
        yield
    except QuantLabError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page boundary: never show a raw traceback
        st.error(f"Could not compute {what}: {type(err).__name__}: {err}. Try another model, data or config.")


def _demo_names() -> list[str]:
    from quant_core.demo import DEMO_MODELS

    return list(DEMO_MODELS)


def _demo_title(name: str) -> str:
    from quant_core.demo import DEMO_MODELS

    return getattr(DEMO_MODELS[name], "title", name) or name


def _demo_source(name: str) -> state.ModelSource:
    _, key, _ = cache.demo_source(name)
    return state.ModelSource(name=name, key=key, demo=name)


def _use_demo() -> None:
    state.set_model_source(_demo_source(st.session_state[state.MODEL_CHOICE]))


def _model_section():
    names = _demo_names()
    source = state.get_model_source()
    if st.session_state.get(state.MODEL_CHOICE) not in names:
        default = source.demo if source is not None and source.demo else state.DEFAULT_MODEL
        st.session_state[state.MODEL_CHOICE] = default if default in names else names[0]
    st.selectbox("Demo model", names, format_func=_demo_title, key=state.MODEL_CHOICE, on_change=_use_demo)
    upload = st.file_uploader(f"…or upload an ONNX model (up to {MAX_UPLOAD_MB} MB)", type=["onnx"],
                              key=state.MODEL_UPLOAD)
    if upload is not None and state.upload_is_new(state.MODEL_UPLOAD, upload.file_id):
        _open_uploaded_model(upload)
    _show_message(state.MODEL_UPLOAD, upload)

    source = state.get_model_source() or _demo_source(st.session_state[state.MODEL_CHOICE])
    try:
        prepared = _prepared_for(source)
    except QuantLabError as err:
        st.error(f"Cannot open {source.name}: {err}")
        st.stop()
    state.set_model_source(source)
    st.caption(f"Current model: **{source.name}**" + (" (demo)" if source.demo else " (uploaded)"))
    return prepared, source


def _prepared_for(source: state.ModelSource):
    if source.demo is not None:
        model_bytes, key, _ = cache.demo_source(source.demo)
        return cache.load_prepared(model_bytes, key)
    return cache.load_prepared(source.model_bytes, source.key)


def _open_uploaded_model(upload) -> None:
    model_bytes = upload.getvalue()
    key = cache.content_key(model_bytes)
    try:
        cache.load_prepared(model_bytes, key)
    except QuantLabError as err:
        state.push_message(state.MODEL_UPLOAD, f"Could not open {upload.name}: {err} The previous model is still loaded.")
        return
    except Exception as err:  # noqa: BLE001 - untrusted input: report it, keep the previous model
        state.push_message(state.MODEL_UPLOAD, f"Could not open {upload.name} ({type(err).__name__}: {err}). "
                                               "The previous model is still loaded.")
        return
    state.push_message(state.MODEL_UPLOAD, None)
    state.set_model_source(state.ModelSource(name=upload.name, key=key, model_bytes=model_bytes))


def _data_section(prepared, source: state.ModelSource):
    upload = st.file_uploader("Data for this model (.npz, optional)", type=["npz"], key=state.DATA_UPLOAD,
                              help="Arrays named like the model inputs (first axis = samples), optional integer "
                                   "'labels'. Read without pickle.")
    if upload is not None and state.upload_is_new(state.DATA_UPLOAD, upload.file_id):
        _open_uploaded_data(upload, prepared, source)
    _show_message(state.DATA_UPLOAD, upload)
    data_source = state.get_data_source()
    if data_source is not None and data_source.model_key == source.key:
        data = cache.load_data(source.key, data_source.key, data_source.data_bytes, prepared)
        return data, data_source.key, data_source.name
    if source.demo is not None:
        _, _, data = cache.demo_source(source.demo)
        return data, "digits", "digits (held-out demo data)"
    return None, "", ""


def _open_uploaded_data(upload, prepared, source: state.ModelSource) -> None:
    data_bytes = upload.getvalue()
    key = cache.content_key(data_bytes)
    try:
        data = cache.load_data(source.key, key, data_bytes, prepared)
        cache.split_data(source.key, key, data)  # refuses data too small to split, before it is used
    except QuantLabError as err:
        state.push_message(state.DATA_UPLOAD, f"Could not use {upload.name}: {err} The previous data is still used.")
        return
    except Exception as err:  # noqa: BLE001 - untrusted input: report it, keep the previous data
        state.push_message(state.DATA_UPLOAD, f"Could not read {upload.name} ({type(err).__name__}: {err}). "
                                              "The previous data is still used.")
        return
    state.push_message(state.DATA_UPLOAD, None)
    state.set_data_source(state.DataSource(name=upload.name, key=key, data_bytes=data_bytes, model_key=source.key))


def _use_preset() -> None:
    name = st.session_state[state.CONFIG_PRESET]
    if name in PRESETS:
        state.set_config(PRESETS[name])


def _config_section(info) -> QuantConfig:
    preset_slot, download_slot = st.container(), st.container()
    upload = st.file_uploader("Load a config (.json)", type=["json"], key=state.CONFIG_UPLOAD)
    if upload is not None and state.upload_is_new(state.CONFIG_UPLOAD, upload.file_id):
        _open_uploaded_config(upload, info)
    _show_message(state.CONFIG_UPLOAD, upload)

    config = state.get_config()
    unknown = _unknown_layers(config, info)
    if unknown:
        state.set_config(PRESETS[state.DEFAULT_PRESET])
        st.info(f"The config named layers this model does not have ({', '.join(unknown[:3])}); "
                f"back to the {state.DEFAULT_PRESET} preset.")
        config = state.get_config()
    st.session_state[state.CONFIG_PRESET] = state.preset_label(config)
    with preset_slot:
        st.selectbox("Preset", [*PRESETS, state.CUSTOM_PRESET], key=state.CONFIG_PRESET, on_change=_use_preset,
                     help="'custom' is any config edited on the Mixed precision or Sensitivity pages, or loaded.")
    with download_slot:
        st.download_button("Download config (.json)", data=config.to_json(), file_name=_file_name(config),
                           mime="application/json", on_click="ignore")
    return config


def _open_uploaded_config(upload, info) -> None:
    try:
        config = QuantConfig.from_json(upload.getvalue())
        unknown = _unknown_layers(config, info)
        if unknown:
            raise ConfigError(f"the config names layers this model does not have: {', '.join(unknown[:5])}")
        _validate(config, info)
    except (QuantLabError, ValueError, TypeError) as err:
        state.push_message(state.CONFIG_UPLOAD, f"Could not load {upload.name}: {err}. The previous config is kept.")
        return
    state.push_message(state.CONFIG_UPLOAD, None)
    state.set_config(config)


def _validate(config: QuantConfig, info) -> None:
    try:
        from quant_core.validate import validate_config
    except ModuleNotFoundError:  # the engine's validator lands separately; layer names are checked above
        return
    validate_config(config, info)


def _unknown_layers(config: QuantConfig, info) -> list[str]:
    names = {layer.name for layer in info.layers}
    return [layer for layer, _ in config.overrides if layer not in names]


def _show_message(widget_key: str, upload) -> None:
    if upload is None:
        state.push_message(widget_key, None)
    elif (text := state.get_message(widget_key)) is not None:
        st.error(text)


def _file_name(config: QuantConfig) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in config.name)
    return f"quant_config_{safe or 'custom'}.json"

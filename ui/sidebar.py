"""The shared sidebar: model (demo or upload), data (.npz), and the quantization config.

Uploads are applied once per file (an uploaded file stays in its widget on every rerun); a bad
file leaves one error line and keeps the previous model, data or config.
"""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from quant_core.config import PRESETS, QuantConfig
from quant_core.model.demo import DEMO_MODELS
from quant_core.errors import ConfigError, DataError, QuantLabError
from quant_core.model.layout import infer_layout, parse_state
from quant_core.model.model_io import MAX_MODEL_BYTES
from quant_core.engine.tasks import check_task, config_json, read_config_json
from quant_core.model.validate import validate_config
from ui import cache, state

MAX_UPLOAD_MB = MAX_MODEL_BYTES // 2**20  # also .streamlit/config.toml server.maxUploadSize


UPLOADED = "uploaded"  # the demo selectbox's entry for the uploaded model, present while it is the current one


def _demo_source(name: str) -> state.ModelSource:
    _, key, _ = cache.demo_source(name)
    return state.ModelSource(name=name, key=key, demo=name)


def _use_demo() -> None:
    choice = st.session_state[state.MODEL_CHOICE]
    if choice in DEMO_MODELS:
        state.set_model_source(_demo_source(choice))


def model_section():
    """Demo choice and model upload; return the current (PreparedModel, ModelSource)."""
    choice_slot = st.container()  # drawn first, filled after the upload is handled so it shows the result
    upload = st.file_uploader(f"…or upload an ONNX model (up to {MAX_UPLOAD_MB} MB)", type=["onnx"],
                              key=state.MODEL_UPLOAD)
    if upload is not None and state.upload_is_new(state.MODEL_UPLOAD, upload.file_id):
        _open_uploaded_model(upload)
    source = state.get_model_source() or _demo_source(state.DEFAULT_MODEL)
    if source.demo is None and cache.current_prepared(source.key) is None:
        # Not expected (the session holds its opened upload until it opens another model), but
        # never a traceback: say so and carry on with the default demo.
        st.error(f"{source.name} is no longer held by this session: upload it again. The default demo model "
                 "is shown meanwhile.")
        source = _demo_source(state.DEFAULT_MODEL)
    _show_message(state.MODEL_UPLOAD, upload)

    try:
        prepared = _prepared_for(source)
    except QuantLabError as err:
        st.error(f"Cannot open {source.name}: {err}")
        st.stop()
    state.set_model_source(source)
    options = list(DEMO_MODELS) + ([] if source.demo else [UPLOADED])
    st.session_state[state.MODEL_CHOICE] = source.demo or UPLOADED
    with choice_slot:
        st.selectbox("Model in use (a demo, or your upload)", options, key=state.MODEL_CHOICE, on_change=_use_demo,
                     format_func=lambda name: _choice_label(name, source))
    return prepared, source


def _choice_label(name: str, source: state.ModelSource) -> str:
    return DEMO_MODELS[name].title if name in DEMO_MODELS else f"Uploaded: {source.name}"


def _prepared_for(source: state.ModelSource):
    if source.demo is not None:
        model_bytes, key, _ = cache.demo_source(source.demo)
        return cache.load_prepared(model_bytes, key)
    return cache.current_prepared(source.key)


def _open_uploaded_model(upload) -> None:
    def apply() -> None:
        model_bytes = upload.getvalue()
        key = cache.content_key(model_bytes)
        cache.load_prepared(model_bytes, key)
        state.set_model_source(state.ModelSource(name=upload.name, key=key))

    _apply_upload(state.MODEL_UPLOAD, upload.name, apply, verb="open", kept="The previous model is still loaded.")


def _apply_upload(widget_key: str, name: str, apply, *, verb: str, kept: str, other_verb: str | None = None,
                  expected: tuple[type[Exception], ...] = (QuantLabError,)) -> None:
    """Run `apply()` for an uploaded file; a failure leaves one message naming the file and saying what
    is `kept` (an error we expect gives its sentence, anything else its type too), never a traceback."""
    try:
        apply()
    except expected as err:
        state.push_message(widget_key, f"Could not {verb} {name}: {_sentence(err)} {kept}")
        return
    except Exception as err:  # noqa: BLE001 - untrusted input: report it, keep what was loaded
        state.push_message(widget_key, f"Could not {other_verb or verb} {name} ({type(err).__name__}: {err}). {kept}")
        return
    state.push_message(widget_key, None)


def data_section(prepared, source: state.ModelSource):
    """Data upload; return (Dataset or None, data key, label) for the current model."""
    upload = st.file_uploader("Data for this model (.npz, optional)", type=["npz"], key=state.DATA_UPLOAD,
                              help="Arrays named like the model inputs (first axis = samples: along the model's "
                                   "batch axis, or each a complete input), optional integer 'labels'. Read without "
                                   "pickle. docs/data.md shows the layouts.")
    if upload is not None and state.upload_is_new(state.DATA_UPLOAD, upload.file_id):
        _open_uploaded_data(upload, prepared, source)
    _show_message(state.DATA_UPLOAD, upload)
    data_source = state.get_data_source()
    if data_source is not None and data_source.model_key == source.key:
        data = cache.current_data(source.key, data_source.key)
        if data is not None:
            return (*_with_state_pairs(prepared, data, data_source.key), data_source.name)
        state.set_data_source(None)  # not expected (see model_section): say so, never a traceback
        st.error(f"{data_source.name} is no longer held by this session: upload it again.")
    if source.demo is not None:
        _, _, data = cache.demo_source(source.demo)
        return data, "digits", "digits (held-out demo data)"
    return None, "", ""


def _with_state_pairs(prepared, data, data_key: str):
    """The streaming state pairs: inferred, or as typed (data with a layout only); return (data, data key)."""
    if data.layout is None:
        return data, data_key
    inferred = ", ".join(str(pair) for pair in data.layout.state) or "none"
    text = st.text_input("Streaming state (output=input)", key=state.DATA_STATE, placeholder=f"inferred: {inferred}",
                         help="Outputs fed to an input at the next sample, e.g. stateN=state or hn=h,cn=c; "
                              "'none' turns streaming off; empty: inferred from names and shapes (docs/data.md).")
    if not text.strip():
        return data, data_key
    try:
        layout = infer_layout(prepared.info, data.inputs, state=parse_state(text))
    except DataError as err:
        st.error(f"{err}. The inferred state pairs ({inferred}) are used.")
        return data, data_key
    return replace(data, layout=layout), f"{data_key}|state={text.strip()}"


def _open_uploaded_data(upload, prepared, source: state.ModelSource) -> None:
    def apply() -> None:
        data_bytes = upload.getvalue()
        key = cache.content_key(data_bytes)
        data = cache.load_data(source.key, key, data_bytes, prepared)
        cache.split_data(source.key, key, data)  # refuses data too small to split, before it is used
        cache.pin_data(source.key, key, data)
        state.set_data_source(state.DataSource(name=upload.name, key=key, model_key=source.key))

    _apply_upload(state.DATA_UPLOAD, upload.name, apply, verb="use", other_verb="read", kept=_data_kept(source))


def _data_kept(source: state.ModelSource) -> str:
    """What a refused data file leaves in use: earlier data, the demo's own, or none at all."""
    earlier = state.get_data_source()
    if earlier is not None and earlier.model_key == source.key:
        return "The previous data is still used."
    if source.demo is not None:
        return "The previous data is still used (the demo's own)."
    return "No data is loaded for this model yet: upload a file that fits it."


def _use_preset() -> None:
    name = st.session_state[state.CONFIG_PRESET]
    if name in PRESETS:
        state.set_config(replace(PRESETS[name], target=state.get_config().target))  # the CPU target stays


def config_section(info, model_key: str = "") -> QuantConfig:
    """Preset, download and upload of the config (with the model's task under "task"); return the current config."""
    preset_slot, download_slot = st.container(), st.container()
    upload = st.file_uploader("Load a config (.json)", type=["json"], key=state.CONFIG_UPLOAD)
    if upload is not None and state.upload_is_new(state.CONFIG_UPLOAD, upload.file_id):
        _open_uploaded_config(upload, info, model_key)
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
        task = state.get_task(model_key)  # None: inferred again when read
        st.download_button("Download config (.json)", data=config_json(config, task), file_name=_file_name(config),
                           mime="application/json", on_click="ignore")
    return config


def _open_uploaded_config(upload, info, model_key: str) -> None:
    def apply() -> None:
        config, task = read_config_json(upload.getvalue())
        unknown = _unknown_layers(config, info)
        if unknown:
            raise ConfigError(f"the config names layers this model does not have: {', '.join(unknown[:5])}")
        _validate(config, info)
        if task is not None:
            check_task(task, info)
            state.set_task(model_key, task)
        state.set_config(config)

    _apply_upload(state.CONFIG_UPLOAD, upload.name, apply, verb="load", kept="The previous config is kept.",
                  expected=(QuantLabError, ValueError, TypeError))


def _validate(config: QuantConfig, info) -> None:
    validate_config(config, info)


def _unknown_layers(config: QuantConfig, info) -> list[str]:
    names = {layer.name for layer in info.layers}
    return [layer for layer, _ in config.overrides if layer not in names]


def _sentence(err: BaseException) -> str:
    """The error's message ending with a full stop, so the sentence after it does not run on."""
    text = str(err).strip() or type(err).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


def _show_message(widget_key: str, upload) -> None:
    if upload is None:
        state.push_message(widget_key, None)
    elif (text := state.get_message(widget_key)) is not None:
        st.error(text)


def _file_name(config: QuantConfig) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in config.name)
    return f"quant_config_{safe or 'custom'}.json"

"""No lost work: the config survives page switches, reruns and bad uploads; save/load restores it exactly;
exports are written atomically and always load in onnxruntime."""
from __future__ import annotations

import itertools
import os
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from quant_core.export import ort_export as export
from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.model.demo import DEMO_MODELS, load_demo
from quant_core.errors import QuantLabError
from quant_core.numerics.formats import Granularity, RangeMethod, parse_format
from quant_core.model.model_io import load_model, prepare_model
from quant_core.model.validate import validate_config
from tests.reliability import hostile
from tests.reliability.conftest import assert_no_traceback, current_model, error_texts, new_session, upload

PAGES = ["app.py", "pages/1_Weights.py", "pages/2_Activations.py", "pages/3_Mixed_precision.py",
         "pages/5_Sensitivity.py", "pages/6_Trade-offs.py", "pages/12_Learn.py"]

# Per-layer choices that exercise every field of the JSON; each layer takes the first that fits it.
CHOICES = [
    LayerQuant(TensorQuant(parse_format("int4"), granularity=Granularity.PER_CHANNEL, axis=0),
               TensorQuant(parse_format("uint8"), symmetric=False, range_method=RangeMethod.PERCENTILE,
                           percentile=99.9)),
    LayerQuant(TensorQuant(parse_format("int8"), symmetric=False, range_method=RangeMethod.MSE),
               TensorQuant(parse_format("int8"), range_method=RangeMethod.ENTROPY)),
    LayerQuant(),
    LayerQuant(TensorQuant(parse_format("fp16"))),
    LayerQuant(TensorQuant(parse_format("kmeans3"))),
    LayerQuant(TensorQuant(parse_format("int3_narrow"), granularity=Granularity.PER_GROUP, axis=-1, block_size=16)),
    LayerQuant(TensorQuant(parse_format("ternary")), TensorQuant(parse_format("fp8_e4m3fn"))),
]


def rich_config(name: str) -> QuantConfig:
    """A custom config for demo `name`: every layer its own choice, cycling through CHOICES."""
    prepared = prepare_model(load_model(DEMO_MODELS[name].path))
    config = QuantConfig(PRESETS["W8A8"].default, name=f"roundtrip-{name}")
    start = itertools.cycle(range(len(CHOICES)))
    for layer in prepared.info.quantizable_layers:
        first = next(start)
        for offset in range(len(CHOICES)):
            candidate = config.with_layer(layer.name, CHOICES[(first + offset) % len(CHOICES)])
            try:
                validate_config(candidate, prepared)
            except QuantLabError:
                continue
            config = candidate
            break
    return replace(config, name=f"roundtrip-{name}")


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_config_json_round_trip_is_exact_on_every_demo_model(name):
    config = rich_config(name)
    assert len(config.overrides) == len(prepare_model(load_model(DEMO_MODELS[name].path)).info.quantizable_layers)
    assert len({choice for _, choice in config.overrides}) >= 3  # not one choice repeated
    text = config.to_json()
    again = QuantConfig.from_json(text)
    assert again == config and hash(again) == hash(config)
    assert again.to_json() == text


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_saving_then_loading_a_config_in_the_sidebar_restores_the_same_table(name, downloads):
    config = rich_config(name)
    first = new_session()
    first.selectbox(key="model_choice").set_value(name).run()
    upload(first, "config_upload", "mine.json", config.to_json().encode())
    assert not error_texts(first)
    saved = downloads[f"quant_config_roundtrip-{name}.json"]
    assert QuantConfig.from_json(saved) == config
    first.switch_page("pages/3_Mixed_precision.py").run()
    table = first.data_editor(key="mixed_table").value

    second = new_session()  # another day, another session: load the saved file
    second.selectbox(key="model_choice").set_value(name).run()
    upload(second, "config_upload", "saved.json", saved)
    assert not error_texts(second)
    second.switch_page("pages/3_Mixed_precision.py").run()
    assert_no_traceback(second)
    assert second.data_editor(key="mixed_table").value.equals(table)
    downloads.clear()
    second.run()
    assert QuantConfig.from_json(downloads[f"quant_config_roundtrip-{name}.json"]) == config


def test_the_config_survives_every_page_reruns_and_bad_uploads(downloads):
    config = rich_config("cnn")
    at = new_session()
    upload(at, "config_upload", "mine.json", config.to_json().encode())
    served = f"quant_config_{config.name}.json"

    def assert_kept(where: str) -> None:
        assert_no_traceback(at)
        assert at.selectbox(key="config_preset").value == "custom", where
        assert QuantConfig.from_json(downloads.pop(served)) == config, where

    assert_kept("after loading")
    for page in PAGES:
        at.switch_page(page).run()
        assert_kept(page)
        at.run()
        assert_kept(f"{page}, rerun")
    at.switch_page("pages/0_Model.py").run()
    for key, name, content in [("model_upload", "bad.onnx", hostile.truncated()),
                               ("data_upload", "bad.npz", hostile.digits_like(dtype=np.float64)),
                               ("config_upload", "bad.json", b"{")]:
        upload(at, key, name, content)
        assert any(name in text for text in error_texts(at))  # each bad file keeps its error while it stays
        assert_kept(f"after {name}")


# --- exports --------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=list(DEMO_MODELS))
def demo(request):
    model_bytes, data = load_demo(request.param)
    prepared = prepare_model(load_model(model_bytes))
    return request.param, prepared, calibrate(prepared, data.subset(np.arange(64))), data.subset(np.arange(64, 96))


def _exports(name, prepared, calibration, data):
    for preset in ("W8A8", "W4A8", "W8 weight-only", "FP16", "W4 weight-only per-group"):
        yield preset, export.export_model(prepared, PRESETS[preset], calibration, calibration_data=data)
    yield "every choice per layer", export.export_model(prepared, rich_config(name), calibration, calibration_data=data)
    yield "dynamic int8", export.export_dynamic_int8(prepared)
    yield "fp16", export.export_fp16(prepared)
    if any(layer.op_type in ("MatMul", "Gemm") for layer in prepared.info.quantizable_layers):
        yield "matmul nbits", export.export_matmul_nbits(prepared)


def test_every_exported_model_loads_and_runs_in_onnxruntime(tmp_path, demo):
    name, prepared, calibration, data = demo
    image = data.inputs["image"]
    reference = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = reference.run(None, {"image": image})
    for kind, result in _exports(name, prepared, calibration, data):
        model_path, overrides_path = export.save_export(result, tmp_path / f"{name}-{kind}.onnx")
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"image": image})
        assert logits.shape == expected.shape and np.isfinite(logits).all(), kind
        assert os.path.exists(overrides_path)
    leftovers = [entry for entry in os.listdir(tmp_path) if entry.startswith(".tmp-")]
    assert leftovers == []


def _export_result(seed: int) -> export.ExportResult:
    return export.ExportResult(model=hostile.gemm_weights(np.full((3, 4), seed, np.float32)).SerializeToString(),
                               overrides={}, kind="fp16", notes=(), simulated_only=())


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_export_write_leaves_the_previous_file_whole_and_no_temporary_files(tmp_path, monkeypatch, failing):
    target = tmp_path / "out.onnx"
    export.save_export(_export_result(1), target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, handle):
                self.file = real_fdopen(handle, "wb")

            def write(self, data):
                self.file.write(data[: len(data) // 2])
                self.file.flush()
                fail()

            def __getattr__(self, name):
                return getattr(self.file, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.file.close()

        monkeypatch.setattr(os, "fdopen", lambda handle, mode="r", *a, **k: HalfWriter(handle))
    else:
        monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        export.save_export(_export_result(2), target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])  # still a whole, loadable model
    assert sorted(os.listdir(tmp_path)) == ["out.onnx", "out.overrides.json"]


def test_the_model_in_use_survives_every_page_and_bad_uploads():
    at = new_session()
    at.selectbox(key="model_choice").set_value("transformer").run()
    for page in ("pages/1_Weights.py", "pages/12_Learn.py", "app.py"):  # the cheap pages: it is the sidebar's state
        at.switch_page(page).run()
        assert_no_traceback(at)
        assert current_model(at) == "transformer", page
    at.switch_page("pages/0_Model.py").run()
    upload(at, "model_upload", "mine.onnx", hostile.good_model())
    upload(at, "model_upload", "broken.onnx", hostile.truncated())
    for page in PAGES:  # without data every page stops early, so all of them are cheap
        at.switch_page(page).run()
        assert current_model(at) == "Uploaded: mine.onnx", page

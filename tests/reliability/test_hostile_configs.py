"""Hostile and broken config JSON: one line on the command line, one error in the sidebar, the config kept.

The demo MLP (layers /fc1/Gemm, /fc2/Gemm, /fc3/Gemm; weights (128, 64), (64, 128), (10, 64)) is the
target. Structural problems are refused while reading the file; problems only the model can tell
(a layer it does not have, a format a layer cannot take) are refused when the config meets the model.
"""
from __future__ import annotations

import json

import pytest

from quant_core.config import PRESETS, QuantConfig
from quant_core.model.demo import DEMO_MODELS
from tests.reliability import hostile
from tests.reliability.conftest import (
    assert_no_traceback, assert_one_line_error, error_texts, new_session, run_cli, upload, write)

MLP = DEMO_MODELS["mlp"].path
FP32_LAYER = {"weights": None, "activations": None}


def _config(default=None, layers=None, **extra) -> bytes:
    document = {"name": "hostile", "default": FP32_LAYER if default is None else default, **extra}
    if layers is not None:
        document["layers"] = layers
    return json.dumps(document).encode()


def _int8(**fields) -> dict:
    return {"format": "int8", **fields}


# (case id, file content, fragments the message must hold)
REFUSED = [
    ("malformed", b"{not json", ["the config is not valid JSON"]),
    ("not-text", b"\xff\xfe\x00garbage", ["the config is not valid JSON"]),
    ("array", b"[1, 2]", ["a config must be a JSON object with 'default'"]),
    ("no-default", json.dumps({"name": "x"}).encode(), ["a config must be a JSON object with 'default'"]),
    ("layers-not-object", _config(layers=[1]), ["'layers' must map ONNX node names to layer entries"]),
    ("layer-entry-not-object", _config(layers={"/fc1/Gemm": "int4"}),
     ["a layer entry must be an object with 'weights' and 'activations'"]),
    ("unknown-layer-key", _config({"weights": None, "activations": None, "bias": _int8()}),
     ["unknown layer keys ['bias']"]),
    ("unknown-format", _config({"weights": {"format": "int9x"}}),
     ["unknown number format 'int9x'", "expected int2..int16"]),
    ("too-many-bits", _config({"weights": {"format": "int17"}}), ["integer formats have 2 to 16 bits"]),
    ("no-format", _config({"weights": {"symmetric": True}}), ["needs a 'format'"]),
    ("unknown-tensor-key", _config({"weights": _int8(bits=3)}), ["unknown tensor-quantization keys ['bits']"]),
    ("block-size", _config({"weights": _int8(granularity="per_group", block_size=8)}),
     ["block_size must be between 16 and 256, got 8"]),
    ("percentile", _config({"weights": _int8(range_method="percentile", percentile=30)}),
     ["percentile must be in (50, 100], got 30"]),
    ("granularity", _config({"weights": _int8(granularity="per_row")}),
     ["unknown granularity 'per_row'", "expected one of per_tensor, per_channel, per_group"]),
    ("range-method", _config({"weights": _int8(range_method="magic")}),
     ["unknown range_method 'magic'", "expected one of minmax, percentile, mse, entropy"]),
    # Values of the wrong JSON type: named with the type expected, never coerced.
    ("percentile-string", _config({"weights": _int8(range_method="percentile", percentile="99.9")}),
     ["percentile must be a number", "'99.9' (a string)"]),
    ("granularity-number", _config({"weights": _int8(granularity=1)}),
     ["granularity must be one of per_tensor, per_channel, per_group", "got 1 (a number)"]),
    ("symmetric-number", _config({"weights": _int8(symmetric=0)}), ["symmetric must be true or false", "got 0"]),
    ("axis-boolean", _config({"weights": _int8(granularity="per_channel", axis=True)}),
     ["axis must be an integer or null", "True (a boolean)"]),
    ("activations-list", _config({"weights": None, "activations": ["uint8"]}),
     ["'activations' must be an object such as {\"format\": \"int8\"} or null", "['uint8'] (a list)"]),
    # Known only against the model:
    ("unknown-layer", _config(layers={"/nope/Gemm": {"weights": _int8()}}), ["/nope/Gemm"]),
    ("binary-activations", _config({"weights": None, "activations": {"format": "binary"}}),
     ["binary cannot quantize activations", "expected an int/uint, fp16, bf16 or fp8 format"]),
    ("per-channel-activations",
     _config({"weights": None, "activations": {"format": "uint8", "granularity": "per_channel"}}),
     ["activations are quantized per_tensor"]),
    ("axis-out-of-range", _config({"weights": _int8(granularity="per_channel", axis=5)}),
     ["axis 5 is out of range", "expected an axis in [-2, 1]"]),
    ("kmeans-activations", _config(layers={"/fc3/Gemm": {"weights": _int8(), "activations": {"format": "kmeans3"}}}),
     ["/fc3/Gemm", "kmeans3 cannot quantize activations"]),
    ("axis-not-integer", _config({"weights": _int8(granularity="per_channel", axis="0")}),
     ["axis must be an integer or null", "'0'"]),
]
IDS = [case[0] for case in REFUSED]


@pytest.mark.parametrize(("case", "content", "fragments"), REFUSED, ids=IDS)
def test_evaluate_refuses_the_config_with_one_line(tmp_path, digits_npz, case, content, fragments):
    config = write(tmp_path / f"{case}.json", content)
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), *fragments)


@pytest.fixture(scope="module")
def lab():
    """One session on the demo MLP with a custom config (W4A8 with the last layer FP32), kept across the cases."""
    at = new_session()
    at.selectbox(key="model_choice").set_value("mlp").run()
    custom = PRESETS["W4A8"].with_layer("/fc3/Gemm", PRESETS["FP32"].default)
    upload(at, "config_upload", "mine.json", custom.to_json().encode())
    assert not error_texts(at) and at.selectbox(key="config_preset").value == "custom"
    at.custom = custom
    return at


@pytest.mark.parametrize(("case", "content", "fragments"), REFUSED, ids=IDS)
def test_the_app_refuses_the_config_and_keeps_the_previous_one(lab, downloads, case, content, fragments):
    upload(lab, "config_upload", f"{case}.json", content)
    assert_no_traceback(lab)
    (message,) = error_texts(lab)
    assert f"{case}.json" in message and "previous config is kept" in message
    for fragment in fragments:
        assert fragment in message
    assert lab.selectbox(key="config_preset").value == "custom"
    assert QuantConfig.from_json(downloads["quant_config_custom.json"]) == lab.custom


TYPED = [
    ("format-number", {"weights": {"format": 8}}, ["'format'"]),
    ("block-size-string", {"weights": {"format": "int8", "block_size": "16"}}, ["block_size"]),
    ("symmetric-string", {"weights": {"format": "int8", "symmetric": "no"}}, ["symmetric"]),
]


@pytest.mark.parametrize(("case", "default", "fragments"), TYPED, ids=[c[0] for c in TYPED])
def test_config_values_of_the_wrong_type_are_one_line(tmp_path, digits_npz, case, default, fragments):
    config = write(tmp_path / "c.json", json.dumps({"default": default}).encode())
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), *fragments)
    at = new_session()
    upload(at, "config_upload", "c.json", config.read_bytes())
    assert_no_traceback(at)
    assert len(error_texts(at)) == 1 and at.selectbox(key="config_preset").value == "W8A8"


def test_deeply_nested_json_is_one_line(tmp_path, digits_npz):
    content = b"[" * 100000 + b"]" * 100000
    config = write(tmp_path / "deep.json", content)
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), "JSON")
    at = new_session()
    upload(at, "config_upload", "deep.json", content)
    assert_no_traceback(at)
    assert len(error_texts(at)) == 1


def test_a_config_over_one_mebibyte_is_refused_from_its_size(tmp_path, digits_npz):
    content = _config(layers={f"/layer{i}/Gemm": {"weights": _int8()} for i in range(40000)})
    assert len(content) > 2**20
    config = write(tmp_path / "huge.json", content)
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config),
                          f"{len(content)} bytes", "over the 1 MiB limit")


def test_a_format_string_where_an_object_is_expected_is_named(tmp_path, digits_npz):
    config = write(tmp_path / "c.json", json.dumps({"default": {"weights": "int8"}}).encode())
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), "'weights'", "int8")


def test_a_config_for_another_model_is_refused_by_the_current_one(tmp_path, digits_npz):
    cnn_only = PRESETS["W8A8"].with_layer("/conv1/Conv", PRESETS["FP32"].default)
    config = write(tmp_path / "cnn.json", cnn_only.to_json().encode())
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), "/conv1/Conv",
                          "/fc1/Gemm")


def test_a_config_file_that_does_not_exist_is_one_line(tmp_path, digits_npz):
    result = run_cli("evaluate", MLP, "--data", digits_npz, "--config", tmp_path / "missing.json")
    assert_one_line_error(result, "missing.json")


def test_a_good_config_after_bad_ones_is_applied(lab):
    upload(lab, "config_upload", "bad.json", b"{")
    upload(lab, "config_upload", "w8.json", PRESETS["W8 weight-only"].to_json().encode())
    assert_no_traceback(lab)
    assert not error_texts(lab)
    assert lab.selectbox(key="config_preset").value == "W8 weight-only"


def test_json_is_data_not_code(tmp_path, digits_npz):
    """A config whose strings look like code or paths is only ever compared against known names."""
    marker = tmp_path / "ran"
    payload = _config({"weights": {"format": f"__import__('os').system('touch {marker}')"}})
    config = write(tmp_path / "code.json", payload)
    assert_one_line_error(run_cli("evaluate", MLP, "--data", digits_npz, "--config", config), "unknown number format")
    at = new_session()
    upload(at, "config_upload", "code.json", payload)
    assert len(error_texts(at)) == 1 and not marker.exists()
    named = write(tmp_path / "path.json", _config(layers={"../../etc/passwd": {"weights": _int8()}}))
    model, data = write(tmp_path / "m.onnx", hostile.good_model()), write(tmp_path / "d.npz", hostile.good_data())
    assert_one_line_error(run_cli("evaluate", model, "--data", data, "--config", named), "'../../etc/passwd'")


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_every_shipped_preset_applies_to_every_demo_model(name):
    """A preset picked in the sidebar never meets a refusal on a shipped model."""
    from quant_core.model.model_io import load_model, prepare_model
    from quant_core.model.validate import validate_config

    prepared = prepare_model(load_model(DEMO_MODELS[name].path))
    for preset in PRESETS.values():
        validate_config(preset, prepared)


def test_an_unforeseen_error_reading_a_config_is_one_line_and_keeps_the_config(monkeypatch):
    """The sidebar's last resort: whatever a config file makes the reader raise, the session goes on."""
    at = new_session()

    def explode(cls, text):
        raise RuntimeError("boom")

    monkeypatch.setattr(QuantConfig, "from_json", classmethod(explode))
    upload(at, "config_upload", "odd.json", b"{}")
    assert_no_traceback(at)
    (message,) = error_texts(at)
    assert message == "Could not load odd.json (RuntimeError: boom). The previous config is kept."
    assert at.selectbox(key="config_preset").value == "W8A8"

"""Hostile and broken ONNX files: a one-line message on the command line and in the app, nothing else read.

Each refused file is fed to `inspect` and `evaluate` (exit status 2, one `error:` line) and to the
sidebar's model uploader of one long-lived session (one error naming the file, no traceback, the
previous model and config still loaded). Files the lab can open but not run (custom ops) must open and
then fail with a message on the page that runs them; NaN or Inf in a layer's weight is refused when the
model is prepared, naming the weight (calibration would otherwise only report NaN activations downstream).
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.model.model_io import load_model
from tests.reliability import hostile
from tests.reliability.conftest import (
    CNN_LAYERS, OpenRecorder, assert_no_traceback, assert_one_line_error, current_model, error_texts, fifo_was_opened,
    layer_names, new_session, run_cli, upload, write)

# (case id, bytes builder, fragments the message must hold: what is wrong and what is expected)
REFUSED = [
    ("not-onnx", hostile.not_onnx, ["is not a valid ONNX model", "corrupt or truncated"]),
    ("text-file", hostile.text_file, ["is not a valid ONNX model"]),
    ("truncated", hostile.truncated, ["is not a valid ONNX model", "truncated"]),
    ("tensor-not-model", hostile.tensor_proto, ["is not a valid ONNX model"]),
    ("cycle", hostile.cycle, ["is not a valid ONNX model", "topologically sorted", "'g'"]),
    ("dangling-input", hostile.dangling_input, ["is not a valid ONNX model", "'ghost'"]),
    ("external-parent", lambda: hostile.external_data("../../etc/passwd"),
     ["external file ('../../etc/passwd')", "save the model as one file"]),
    ("external-absolute", lambda: hostile.external_data("/etc/passwd"),
     ["external file ('/etc/passwd')", "save the model as one file"]),
    ("external-in-constant", lambda: hostile.external_data_in_constant("/etc/shadow"),
     ["external file ('/etc/shadow')", "not supported"]),
    ("empty-file", lambda: b"", ["is empty", "expected an ONNX model"]),
    ("empty-graph", hostile.empty_graph, ["has an empty graph (no nodes and no outputs)", "at least one node"]),
    ("external-in-function", lambda: hostile.external_data_in_function("/etc/shadow"),
     ["function local.fn.AddSecret", "external file ('/etc/shadow')"]),
    ("external-in-training", lambda: hostile.external_data_in_training("/etc/shadow"),
     ["external file ('/etc/shadow')", "not supported"]),
    ("lying-header", hostile.lying_header,
     ["tensor 'w' is corrupt", "declares shape (3, 4000000000)", "but it stores 48 bytes"]),
    ("nan-weight", hostile.nan_weights, ["weight 'w' of layer 'fc' holds NaN or Inf values", "1 NaN and 0 Inf"]),
    ("inf-weight", hostile.inf_weights, ["weight 'w' of layer 'fc' holds NaN or Inf values", "0 NaN and 1 Inf"]),
]
IDS = [case[0] for case in REFUSED]


@pytest.mark.parametrize(("case", "build", "fragments"), REFUSED, ids=IDS)
def test_inspect_refuses_with_one_line(tmp_path, case, build, fragments):
    model = write(tmp_path / f"{case}.onnx", build())
    assert_one_line_error(run_cli("inspect", model), *fragments)


@pytest.mark.parametrize(("case", "build", "fragments"), REFUSED, ids=IDS)
def test_evaluate_refuses_with_one_line(tmp_path, digits_npz, case, build, fragments):
    model = write(tmp_path / f"{case}.onnx", build())
    assert_one_line_error(run_cli("evaluate", model, "--data", digits_npz), *fragments)


@pytest.fixture(scope="module")
def lab():
    """One user session on the Model page with the demo CNN and the W4A8 preset, kept across the cases."""
    at = new_session()
    at.selectbox(key="config_preset").set_value("W4A8").run()
    return at


@pytest.mark.parametrize(("case", "build", "fragments"), REFUSED, ids=IDS)
def test_app_upload_refuses_and_keeps_the_previous_model_and_config(lab, case, build, fragments):
    upload(lab, "model_upload", f"{case}.onnx", build())
    assert_no_traceback(lab)
    errors = error_texts(lab)
    assert len(errors) == 1, errors
    assert f"{case}.onnx" in errors[0] and errors[0].endswith("The previous model is still loaded.")
    assert re.search(r"[.!?] The previous model", errors[0]), errors[0]  # two sentences, not run together
    for fragment in fragments:
        assert fragment in errors[0]
    assert layer_names(lab) == CNN_LAYERS
    assert current_model(lab) == "cnn"
    assert lab.selectbox(key="config_preset").value == "W4A8"


def test_the_session_still_works_after_every_refused_upload():
    lab = new_session()
    for case, build, _ in REFUSED[:4]:
        upload(lab, "model_upload", f"{case}.onnx", build())
    lab.selectbox(key="model_choice").set_value("mlp").run()
    assert_no_traceback(lab)
    assert layer_names(lab) == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]
    upload(lab, "model_upload", "good.onnx", hostile.good_model())
    assert not error_texts(lab) and layer_names(lab) == ["fc"]


# --- external data: refused before the named file is ever opened ----------------------------------

@pytest.fixture
def secret(tmp_path):
    """A FIFO standing for a secret file: opening it for reading would block (detected)."""
    path = tmp_path / "secret"
    os.mkfifo(path)
    return path


def test_the_fifo_guard_sees_a_reader(secret):
    """The guard below is meaningful: a plain read of the FIFO is detected (and released)."""
    assert fifo_was_opened(secret, lambda: secret.read_bytes()) == (True, b"")
    assert fifo_was_opened(secret, lambda: "not opened") == (False, "not opened")


@pytest.mark.parametrize("where", ["relative", "absolute", "parent", "symlink"])
def test_external_data_is_refused_without_opening_the_target(tmp_path, secret, monkeypatch, where):
    folder = tmp_path / "upload" / "inner"
    folder.mkdir(parents=True)
    if where == "symlink":
        (folder / "weights.bin").symlink_to(secret)
    location = {"relative": "weights.bin", "symlink": "weights.bin", "absolute": str(secret),
                "parent": "../../secret"}[where]
    if where == "relative":
        os.link(secret, folder / "weights.bin")  # a plain name in the model's folder: the same FIFO
    model = write(folder / "model.onnx", hostile.external_data(location))
    recorder = OpenRecorder().install(monkeypatch)

    opened, result = fifo_was_opened(secret, lambda: run_cli("inspect", model))
    assert not opened, "the external-data file was opened"
    assert_one_line_error(result, f"external file ('{location}')")
    data = write(tmp_path / "data.npz", hostile.good_data())
    opened, result = fifo_was_opened(secret, lambda: run_cli("evaluate", model, "--data", data))
    assert not opened
    assert_one_line_error(result, "external file")
    opened, result = fifo_was_opened(secret, lambda: load_model((folder / "model.onnx").read_bytes()))
    assert not opened and "external file" in str(result)
    assert not recorder.opened(secret) and not recorder.opened(folder / "weights.bin")


def test_external_data_in_a_constant_node_is_refused_without_opening_it(tmp_path, secret, monkeypatch):
    model = write(tmp_path / "model.onnx", hostile.external_data_in_constant(str(secret)))
    recorder = OpenRecorder().install(monkeypatch)
    opened, result = fifo_was_opened(secret, lambda: run_cli("inspect", model))
    assert not opened and not recorder.opened(secret)
    assert_one_line_error(result, "bias_const", "external file")


def test_an_uploaded_model_with_external_data_is_refused_in_the_app(lab, secret):
    opened, _ = fifo_was_opened(secret, lambda: upload(lab, "model_upload", "exfil.onnx",
                                                        hostile.external_data(str(secret))))
    assert not opened
    assert_no_traceback(lab)
    (message,) = error_texts(lab)
    assert "exfil.onnx" in message and "external file" in message and "previous model is still loaded" in message
    assert layer_names(lab) == CNN_LAYERS


# --- size limit -------------------------------------------------------------------------------------

def test_a_model_over_the_size_limit_is_refused_before_reading_it(tmp_path, monkeypatch):
    model = write(tmp_path / "big.onnx", hostile.big_model(2.0))
    recorder = OpenRecorder().install(monkeypatch)
    assert_one_line_error(run_cli("inspect", model, "--max-mb", "1"), "'big.onnx' is 2.0 MiB, over the 1 MiB limit")
    assert not recorder.opened(model)  # refused from its size alone


def test_the_app_refuses_an_upload_over_the_model_size_limit(lab, monkeypatch):
    monkeypatch.setitem(load_model.__kwdefaults__, "max_bytes", 2**20)
    upload(lab, "model_upload", "big.onnx", hostile.big_model(2.0))
    assert_no_traceback(lab)
    (message,) = error_texts(lab)
    assert "big.onnx" in message and "over the 1 MiB limit" in message
    assert layer_names(lab) == CNN_LAYERS


def test_the_upload_size_limit_is_stated_in_the_sidebar(lab):
    assert "up to 200 MB" in lab.file_uploader(key="model_upload").label


# --- files the lab opens but cannot run ------------------------------------------------------------

RUNTIME_REFUSED = [
    ("custom-domain", hostile.custom_domain_op, "com.example.evil:Exfiltrate"),
    ("no-kernel", hostile.op_runtime_cannot_run, "Erf"),
]


@pytest.mark.parametrize(("case", "build", "fragment"), RUNTIME_REFUSED, ids=[c[0] for c in RUNTIME_REFUSED])
def test_ops_onnxruntime_cannot_run_open_but_evaluate_fails_with_one_line(tmp_path, case, build, fragment):
    model = write(tmp_path / f"{case}.onnx", build())
    data = write(tmp_path / "data.npz", hostile.good_data())
    report = run_cli("inspect", model, "--json")
    assert report.status == 0 and [layer["layer"] for layer in json.loads(report.out)["layers"]][0] == "fc"
    assert_one_line_error(run_cli("evaluate", model, "--data", data), "onnxruntime cannot run the model", fragment)


@pytest.mark.parametrize(("case", "build", "fragment"), RUNTIME_REFUSED, ids=[c[0] for c in RUNTIME_REFUSED])
def test_ops_onnxruntime_cannot_run_give_one_message_per_page(case, build, fragment):
    at = new_session()
    upload(at, "model_upload", f"{case}.onnx", build())
    assert not error_texts(at) and layer_names(at) == ["fc"]
    upload(at, "data_upload", "data.npz", hostile.good_data())
    assert_no_traceback(at)
    assert any("onnxruntime cannot run the model" in text and fragment in text for text in error_texts(at))
    for page in ("pages/2_Activations.py", "pages/3_Mixed_precision.py", "pages/5_Sensitivity.py"):
        at.switch_page(page).run()
        assert_no_traceback(at)
        assert error_texts(at) and all(fragment in text for text in error_texts(at)), (page, error_texts(at))
    at.switch_page("pages/6_Trade-offs.py").run()
    at.button(key="tradeoff_measure").click().run()
    assert_no_traceback(at)
    assert error_texts(at) and all(fragment in text for text in error_texts(at))
    at.switch_page("pages/0_Model.py").run()
    assert layer_names(at) == ["fc"] and at.selectbox(key="config_preset").value == "W8A8"


def test_a_model_whose_output_needs_an_input_the_data_lacks(tmp_path):
    model = write(tmp_path / "masked.onnx", hostile.output_needs_missing_input())
    data = write(tmp_path / "x_only.npz", hostile.good_data())
    assert_one_line_error(run_cli("evaluate", model, "--data", data), "('x', 'mask')", "it holds 'x', 'labels'")
    at = new_session()
    upload(at, "model_upload", "masked.onnx", model.read_bytes())
    upload(at, "data_upload", "x_only.npz", data.read_bytes())
    assert_no_traceback(at)
    (message,) = error_texts(at)
    assert "x_only.npz" in message and "'mask'" in message
    # No data was loaded for this model before: the message must not claim earlier data is still used.
    assert "previous data" not in message and "No data is loaded for this model yet" in message


# --- degenerate weights ----------------------------------------------------------------------------

def test_non_finite_weights_are_named_in_the_message(tmp_path):
    model = write(tmp_path / "nan.onnx", hostile.nan_weights())
    data = write(tmp_path / "d.npz", hostile.good_data())
    assert_one_line_error(run_cli("evaluate", model, "--data", data), "'w'")


def test_weight_array_names_a_non_finite_weight_of_an_unprepared_model():
    """What the Weights page and the QAT lesson call: a NaN weight read directly is named too."""
    from quant_core.errors import QuantLabError
    from quant_core.model.model_io import weight_array

    with pytest.raises(QuantLabError, match=r"^weight 'w' holds NaN or Inf values: 0 NaN and 1 Inf out of 12;"):
        weight_array(load_model(hostile.inf_weights()), "w")


def test_non_finite_values_outside_layer_weights_open(tmp_path):
    """-Inf in a mask constant is common in exported attention models: only layer weights and biases are checked."""
    from onnx import helper, numpy_helper

    model = hostile.gemm_weights()
    model.graph.node[0].output[0] = "h"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, -np.inf, 0], np.float32), "mask"))
    model.graph.node.append(helper.make_node("Add", ["h", "mask"], ["y"], name="masked"))
    path = write(tmp_path / "mask.onnx", model.SerializeToString())
    result = run_cli("inspect", path)
    assert result.status == 0 and result.err == ""
    assert "fc" in result.out and "masked" not in result.out  # opened; the Add is no layer, its -Inf no weight


def _numbers(document):
    if isinstance(document, dict):
        for value in document.values():
            yield from _numbers(value)
    elif isinstance(document, list):
        for value in document:
            yield from _numbers(value)
    elif isinstance(document, float):
        yield document


@pytest.mark.parametrize("build", [hostile.zero_weights, hostile.constant_weights, hostile.one_element_weight],
                         ids=["all-zero", "constant", "one-element"])
def test_degenerate_but_finite_weights_evaluate_to_finite_numbers(tmp_path, build):
    model = write(tmp_path / "m.onnx", build())
    samples = 64
    if build is hostile.one_element_weight:
        data = write(tmp_path / "d.npz", hostile.npz(x=np.linspace(-1, 1, samples, dtype=np.float32)[:, None]))
    else:
        data = write(tmp_path / "d.npz", hostile.good_data(samples))
    for config in ("W8A8", "W4A8", "FP16"):
        config_path = write(tmp_path / "c.json", PRESETS[config].to_json().encode())
        result = run_cli("evaluate", model, "--data", data, "--config", config_path, "--json")
        assert result.status == 0, result.err
        document = json.loads(result.out)
        assert document["sample_count"] == samples // 2
        assert all(math.isfinite(number) for number in _numbers(document))  # no NaN anywhere
        assert 0.0 <= document["top1_agreement"] <= 1.0 and document["size_bytes"] > 0
        if build is hostile.zero_weights:  # zero is exactly representable: the output is FP32's, bit for bit
            assert document["sqnr_db"] is None and document["top1_agreement"] == 1.0


@pytest.mark.parametrize("build", [hostile.zero_weights, hostile.constant_weights, hostile.one_element_weight],
                         ids=["all-zero", "constant", "one-element"])
def test_degenerate_weights_show_on_the_weights_page_without_error(build):
    at = new_session()
    upload(at, "model_upload", "m.onnx", build())
    at.switch_page("pages/1_Weights.py").run()
    assert_no_traceback(at)
    assert not error_texts(at)


def test_the_real_command_line_process_prints_one_line_and_no_traceback(tmp_path):
    """The same refusals through `python -m quant_core` in a separate process (what a user runs)."""
    import subprocess
    import sys

    from tests.reliability.conftest import ROOT

    cases = {"picture.onnx": hostile.not_onnx(), "exfil.onnx": hostile.external_data("/etc/passwd"),
             "cycle.onnx": hostile.cycle()}
    paths = [write(tmp_path / name, content) for name, content in cases.items()]
    script = ("import sys\nfrom quant_core.cli.main import main\n"
              "codes = [main(['inspect', path]) for path in sys.argv[1:]]\nsys.exit(max(codes))")
    completed = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True,
                               cwd=ROOT, timeout=120, check=False)
    assert completed.returncode == 2 and completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines), completed.stderr
    assert "Traceback" not in completed.stderr
    for name, line in zip(cases, lines):
        assert "external file ('/etc/passwd')" in line if name == "exfil.onnx" else f"'{name}'" in line
    single = subprocess.run([sys.executable, "-m", "quant_core", "inspect", str(paths[0])], capture_output=True,
                            text=True, cwd=ROOT, timeout=120, check=False)
    assert single.returncode == 2 and single.stderr.count("\n") == 1 and single.stderr.startswith("error: ")


def test_a_weight_whose_header_lies_about_its_size_is_refused_on_opening(tmp_path):
    model = write(tmp_path / "liar.onnx", hostile.lying_header())
    assert_one_line_error(run_cli("inspect", model), "'w'")


@pytest.mark.parametrize(("field", "values"), [("float_data", [1.0] * 11), ("raw_data", b"\0" * 47)],
                         ids=["typed-field-short", "raw-bytes-short"])
def test_a_weight_one_value_short_of_its_shape_is_refused(field, values):
    model = hostile.gemm_weights()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    if field == "raw_data":
        weight.raw_data = values
    else:
        weight.float_data.extend(values)
    unit = "bytes" if field == "raw_data" else "values"
    expected = 48 if field == "raw_data" else 12
    with pytest.raises(Exception, match=rf"tensor 'w' is corrupt: .* \(12 values, {expected} {unit}\) but it stores "
                                        rf"{len(values)} {unit}"):
        load_model(model.SerializeToString())


def test_external_data_inside_a_model_function_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 12)
    model = write(tmp_path / "m.onnx", hostile.external_data_in_function("secret.bin"))
    assert_one_line_error(run_cli("inspect", model), "external file ('secret.bin')")


@pytest.mark.parametrize("build", [hostile.external_data_in_function, hostile.external_data_in_training],
                         ids=["function", "training-info"])
def test_external_data_outside_the_main_graph_is_refused_without_opening_it(tmp_path, secret, monkeypatch, build):
    model = write(tmp_path / "model.onnx", build(str(secret)))
    recorder = OpenRecorder().install(monkeypatch)
    opened, result = fifo_was_opened(secret, lambda: run_cli("inspect", model))
    assert not opened and not recorder.opened(secret)
    assert_one_line_error(result, f"external file ('{secret}')")


def test_an_empty_graph_is_refused_with_a_clear_message(tmp_path):
    model = write(tmp_path / "empty.onnx", hostile.empty_graph())
    assert_one_line_error(run_cli("inspect", model), "empty")

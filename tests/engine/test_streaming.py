"""Stateful models from a plain .npz: per-frame and streaming evaluation, calibration, CLI, export.

The models and data are demo_models/structures/ (training/make_structure_models.py): a GRU VAD with state
[num_layers, batch, hidden] and a scalar sample rate, an LSTM with h / c. Their recorded state is the FP32
model's own state carried over the stream, so FP32 gives the same numbers per frame and streaming.
"""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS
from quant_core.model.data import load_npz, record_state, split_dataset
from quant_core.errors import DataError
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_model
from quant_core.export.latency import measure_latency, model_accuracy, model_outputs
from quant_core.model.layout import feeder
from quant_core.model.model_io import load_model, prepare_model

STRUCTURES = Path(__file__).resolve().parents[2] / "demo_models" / "structures"
QUANTIZED = PRESETS["W4 weight-only per-group"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "quant_core", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=["vad_gru", "lstm_hc"])
def stateful(request):
    """(prepared model, calibration split, evaluation split) of one stateful structure model."""
    prepared = prepare_model(load_model(str(STRUCTURES / f"{request.param}.onnx")))
    data = load_npz(STRUCTURES / f"{request.param}.npz", prepared.info)
    return (prepared, *split_dataset(data, calibration_samples=128))


@pytest.fixture(scope="module")
def evaluator(stateful):
    prepared, calibration_data, evaluation_data = stateful
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data)


def test_the_structure_models_read_as_streams_of_complete_inputs(stateful):
    prepared, _, evaluation_data = stateful
    assert evaluation_data.streaming and evaluation_data.layout.stackable


def test_fp32_gives_the_same_numbers_per_frame_and_streaming(evaluator):
    per_frame, streaming = evaluator.evaluate(PRESETS["FP32"]), evaluator.streaming().evaluate(PRESETS["FP32"])
    assert per_frame.accuracy == streaming.accuracy > 0.9
    np.testing.assert_allclose(evaluator.streaming().fp32_outputs[0], evaluator.fp32_outputs[0], atol=1e-5)


def test_a_quantized_config_streaming_differs_from_per_frame(evaluator):
    per_frame, streaming = evaluator.evaluate(QUANTIZED), evaluator.streaming().evaluate(QUANTIZED)
    assert streaming.output_sqnr_db != per_frame.output_sqnr_db
    assert streaming.sample_count == per_frame.sample_count == evaluator.sample_count


def test_quantization_error_accumulates_through_the_carried_state():
    """The LSTM tagger keeps a running sum in its state: a quantized config that carries its own state
    drifts further from FP32 than one fed the recorded FP32 state at every step."""
    prepared = prepare_model(load_model(str(STRUCTURES / "lstm_hc.onnx")))
    calibration_data, evaluation_data = split_dataset(load_npz(STRUCTURES / "lstm_hc.npz", prepared.info))
    evaluator = Evaluator(prepared, None, evaluation_data)
    per_frame, streaming = evaluator.evaluate(QUANTIZED), evaluator.streaming().evaluate(QUANTIZED)
    assert streaming.sqnr_db < per_frame.sqnr_db - 1
    assert streaming.accuracy < per_frame.accuracy


def test_stacked_batches_give_the_outputs_of_one_by_one_feeding(stateful, evaluator):
    prepared, calibration_data, evaluation_data = stateful
    one_by_one = replace(evaluation_data, layout=replace(evaluation_data.layout, stackable=False))
    single = Evaluator(prepared, evaluator.calibration, one_by_one)
    assert single.batch_size == 1 and evaluator.batch_size > 1
    for stacked, alone in zip(evaluator.outputs(PRESETS["W8A8"]), single.outputs(PRESETS["W8A8"])):
        np.testing.assert_allclose(stacked, alone, rtol=1e-5, atol=1e-6)


def test_calibration_carries_the_state_and_matches_the_recorded_fp32_state(stateful, evaluator):
    prepared, calibration_data, _ = stateful
    per_frame = replace(calibration_data, layout=replace(calibration_data.layout, state=()))
    recorded = calibrate(prepared, per_frame)
    carried = evaluator.calibration
    assert carried.sample_count == recorded.sample_count == calibration_data.num_samples
    for tensor in carried.tensors:
        np.testing.assert_allclose([carried.histogram(tensor).min, carried.histogram(tensor).max],
                                   [recorded.histogram(tensor).min, recorded.histogram(tensor).max], atol=1e-5)


def test_export_calibrates_from_the_layouts_feeds(stateful, evaluator):
    prepared, calibration_data, evaluation_data = stateful
    result = export_model(prepared, PRESETS["W8A8"], evaluator.calibration, calibration_data=calibration_data)
    session = ort.InferenceSession(result.model, providers=["CPUExecutionProvider"])
    feed = evaluation_data.layout.feed(evaluation_data.inputs, 0, 4)
    outputs = session.run(None, feed)
    assert outputs[0].shape[0] == 4


def test_onnxruntime_accuracy_and_latency_feed_through_the_layout(stateful, evaluator):
    prepared, _, evaluation_data = stateful
    fp32 = prepared.model.SerializeToString()
    assert model_accuracy(fp32, evaluation_data, batch_size=16) == pytest.approx(evaluator.fp32_accuracy)
    assert measure_latency(fp32, evaluation_data, batch_size=4, warmup=0, repeats=2).batch_size == 4


def test_evaluate_cli_shows_the_layout_and_streaming_beside_per_frame():
    model, data = STRUCTURES / "vad_gru.onnx", STRUCTURES / "vad_gru.npz"
    done = _run("evaluate", str(model), "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert "data: 'state': each sample a complete input (batch dimension 1 at axis 1)" in done.stdout
    assert "data: streaming: consecutive samples carry the state stateN → state" in done.stdout
    assert "per frame" in done.stdout and "streaming" in done.stdout
    report = json.loads(_run("evaluate", str(model), "--data", str(data), "--json").stdout)
    assert report["layout"]["state"] == {"stateN": "state"}
    assert report["streaming"]["sample_count"] == report["sample_count"]
    off = json.loads(_run("evaluate", str(model), "--data", str(data), "--state", "none", "--json").stdout)
    assert off["streaming"] is None and off["layout"]["state"] == {}


def test_sensitivity_cli_runs_a_stateful_model_from_a_plain_npz():
    done = _run("sensitivity", str(STRUCTURES / "lstm_hc.onnx"), "--data", str(STRUCTURES / "lstm_hc.npz"),
                "--formats", "int8,int4", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {row["layer"] for row in rows} == {"/lstm/LSTM", "/head/Gemm"} and len(rows) == 4


def test_a_state_mapping_that_does_not_match_is_one_line_on_the_cli():
    done = _run("evaluate", str(STRUCTURES / "lstm_hc.onnx"), "--data", str(STRUCTURES / "lstm_hc.npz"),
                "--state", "hn=x")
    assert done.returncode == 2
    assert done.stderr == ("error: state mapping hn=x: output 'hn' is (1, batch, 16) float32 but input 'x' "
                           "expects (batch, 8) float32\n")


def test_the_structure_files_are_small_and_match_their_readme():
    for name in ("vad_gru", "lstm_hc"):
        assert (STRUCTURES / f"{name}.onnx").stat().st_size < 100_000
        onnx.checker.check_model(onnx.load(STRUCTURES / f"{name}.onnx"))
    assert (STRUCTURES / "README.md").exists()


def test_a_stream_without_its_state_starts_from_zeros_and_records_fp32s_own(tmp_path):
    prepared = prepare_model(load_model(str(STRUCTURES / "lstm_hc.onnx")))
    recorded = load_npz(STRUCTURES / "lstm_hc.npz", prepared.info)
    np.savez(tmp_path / "x_only.npz", x=recorded.inputs["x"], labels=recorded.labels)
    bare = load_npz(tmp_path / "x_only.npz", prepared.info)
    assert bare.layout.unrecorded == ("h", "c") and not np.any(bare.inputs["h"])
    assert "not in the data: h, c; the stream starts from zeros" in bare.layout.describe()[-1]
    filled = record_state(prepared, bare)
    for name in ("h", "c"):
        np.testing.assert_allclose(filled.inputs[name], recorded.inputs[name], atol=1e-6)
    with pytest.raises(DataError, match=r"the state input\(s\) h, c are not recorded: .*record_state"):
        feeder(bare, prepared.info, ("x", "h", "c"), (), 8)
    done = _run("evaluate", str(STRUCTURES / "lstm_hc.onnx"), "--data", str(tmp_path / "x_only.npz"), "--json")
    assert done.returncode == 0, done.stderr
    full = json.loads(_run("evaluate", str(STRUCTURES / "lstm_hc.onnx"), "--data", str(STRUCTURES / "lstm_hc.npz"),
                           "--json").stdout)
    report = json.loads(done.stdout)
    assert report["streaming"]["accuracy"] == full["streaming"]["accuracy"]
    assert report["accuracy"] == full["accuracy"]


def test_exported_models_run_per_frame_and_as_a_stream_by_onnxruntime(stateful):
    from quant_core.export.ort_export import export_dynamic_int8
    prepared, _, evaluation_data = stateful
    fp32 = prepared.model.SerializeToString()
    per_frame = model_outputs(fp32, evaluation_data, prepared.info)
    streamed = model_outputs(fp32, evaluation_data, prepared.info, streaming=True)
    assert per_frame.shape == streamed.shape and len(per_frame) == evaluation_data.num_samples
    np.testing.assert_allclose(streamed, per_frame, atol=1e-5)  # the recorded state is FP32's own
    int8 = export_dynamic_int8(prepared).model
    assert not np.array_equal(model_outputs(int8, evaluation_data, prepared.info, streaming=True),
                              model_outputs(int8, evaluation_data, prepared.info))

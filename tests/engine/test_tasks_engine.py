"""The Evaluator, sweeps and the CLI score the task's output with the task's metric (docs/tasks.md)."""
import contextlib
import io
import json

import numpy as np
import onnx
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.cli.main import main
from quant_core.config import PRESETS
from quant_core.model.data import Dataset, split_dataset
from quant_core.model.demo import DEMO_MODELS, demo_data_path
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_model
from quant_core.export.latency import create_session
from quant_core.model.model_io import prepare_model
from quant_core.search.sensitivity import run_sweep
from quant_core.engine.tasks import Metric, Task, TaskKind, config_json, score
from tests.models.task_graphs import (CLASSES, FEATURES, STEPS, detector_model, embedding_model, recognizer_model,
                                      two_output_model)


def _split(inputs: dict, labels=None):
    return split_dataset(Dataset(inputs=inputs, labels=labels), calibration_samples=100)


@pytest.fixture(scope="module")
def recognizer():
    prepared = prepare_model(recognizer_model())
    x = np.random.default_rng(1).normal(size=(300, STEPS, FEATURES)).astype(np.float32)
    calibration_data, evaluation = _split({"x": x})
    calibration = calibrate(prepared, calibration_data)
    return prepared, calibration, calibration_data, evaluation, Evaluator(prepared, calibration, evaluation)


def test_a_recognizer_is_scored_per_position_with_ctc_metrics(recognizer):
    prepared, _, _, evaluation, evaluator = recognizer
    assert evaluator.task == Task(TaskKind.CTC)
    config = PRESETS["W4A8"]
    result = evaluator.evaluate(config)
    outputs = evaluator.outputs(config)[0]
    fp32 = evaluator.fp32_outputs[0]
    per_position = float(np.mean(outputs.argmax(axis=2) == fp32.argmax(axis=2)))
    assert result.top1_agreement == result.score.value(Metric.AGREEMENT) == per_position
    assert result.score == score(fp32, outputs, None, Task(TaskKind.CTC))
    assert result.score.headline == Metric.CHARACTER_ACCURACY
    assert result.score.headline_value == 1.0 - result.score.value(Metric.CER)


def test_the_simulated_agreement_and_cer_match_the_exported_models(recognizer):
    prepared, calibration, calibration_data, evaluation, evaluator = recognizer
    config = PRESETS["W8A8"]
    simulated = evaluator.evaluate(config).score
    exported_model = export_model(prepared, config, calibration, calibration_data=calibration_data).model
    exported_outputs = create_session(exported_model).run(None, evaluation.inputs)[0]
    exported = score(evaluator.fp32_outputs[0], exported_outputs, None, evaluator.task)
    assert simulated.value(Metric.AGREEMENT) > 0.9
    assert abs(simulated.value(Metric.AGREEMENT) - exported.value(Metric.AGREEMENT)) <= 0.01
    assert abs(simulated.value(Metric.CER) - exported.value(Metric.CER)) <= 0.01


def test_another_task_is_scored_on_the_same_evaluator_and_cached_apart(recognizer):
    evaluator = recognizer[-1]
    as_sequence = evaluator.evaluate(PRESETS["W4A8"], task=Task(TaskKind.SEQUENCE))
    as_ctc = evaluator.evaluate(PRESETS["W4A8"])
    assert as_sequence.score.headline == Metric.AGREEMENT and as_ctc.score.headline == Metric.CHARACTER_ACCURACY
    assert as_sequence.top1_agreement == as_ctc.top1_agreement


def test_a_detectors_class_labels_are_never_shown_as_an_accuracy():
    prepared = prepare_model(detector_model())
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 3, 8, 8)).astype(np.float32)
    _, evaluation = _split({"x": x}, labels=rng.integers(0, 2, size=120))
    evaluator = Evaluator(prepared, None, evaluation)
    assert evaluator.task == Task(TaskKind.DETECTION) and evaluator.fp32_accuracy is None
    rows = run_sweep(evaluator, ["int8", "int2"])
    assert {row.metric for row in rows} == {"top-1 agreement"} and all(row.accuracy is None for row in rows)
    by_format = {(row.layer, row.format): row.score for row in rows}
    assert all(by_format[layer, "int8"] > by_format[layer, "int2"] for layer in evaluator.layers)
    result = evaluator.evaluate(PRESETS["W8 weight-only"])
    assert result.accuracy is None and "cannot be scored against a detection" in result.score.labels_note


def test_an_embedding_sweep_ranks_by_recall_and_loses_more_at_fewer_bits():
    prepared = prepare_model(embedding_model())
    x = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    _, evaluation = _split({"x": x})
    evaluator = Evaluator(prepared, None, evaluation)
    assert evaluator.task == Task(TaskKind.EMBEDDING)
    rows = {(row.layer, row.format): row for row in run_sweep(evaluator, ["int8", "int4", "int2"])}
    for layer in evaluator.layers:
        assert rows[layer, "int8"].metric == "recall@k"
        assert rows[layer, "int8"].score >= rows[layer, "int4"].score >= rows[layer, "int2"].score


# -- the command line ----------------------------------------------------------------------------------

def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


MLP, DIGITS = DEMO_MODELS["mlp"].path, demo_data_path()


def test_cli_task_scores_the_mlp_as_an_embedding_and_says_why_labels_are_not_used():
    status, out, err = run_cli("evaluate", MLP, "--data", DIGITS, "--task", "embedding", "--k", "3", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["task"]["kind"] == "embedding" and report["task"]["k"] == 3
    assert report["score"]["headline"] == "recall@k" and 0 <= report["score"]["headline_value"] <= 1
    assert report["accuracy"] is None and report["fp32_accuracy"] is None
    assert "cannot be scored against an embedding" in report["score"]["labels_note"]


def test_cli_reads_the_task_from_the_config_json_and_prints_its_metrics(tmp_path, recognizer):
    model, data, config = tmp_path / "rec.onnx", tmp_path / "rec.npz", tmp_path / "config.json"
    onnx.save(recognizer_model(), model)
    np.savez(data, x=np.random.default_rng(1).normal(size=(40, STEPS, FEATURES)).astype(np.float32))
    config.write_text(config_json(PRESETS["W8 weight-only"], Task(TaskKind.SEQUENCE)))
    status, out, err = run_cli("evaluate", model, "--data", data, "--config", config)
    assert status == 0, err
    assert "task            sequence on output (first), axis -1" in out
    assert "top-1 agreement" in out and "CER" not in out
    status, out, err = run_cli("evaluate", model, "--data", data, "--config", config, "--task", "ctc")
    assert status == 0 and "1 − CER vs FP32" in out and "<- headline" in out


@pytest.mark.parametrize(("args", "message"), [
    (("--task", "ctc"), "task ctc needs [N, T, C], but output 'logits' of shape (?, 10) has rank 2"),
    (("--task", "classification", "--class-axis", "4"), "class axis 4 is out of range"),
    (("--task-output", "probabilities"), "the model's outputs are logits"),
])
def test_cli_a_task_that_does_not_fit_is_one_line(args, message):
    status, out, err = run_cli("evaluate", MLP, "--data", DIGITS, *args)
    assert status == 2 and out == "" and err.count("\n") == 1 and message in err


def test_cli_a_blank_index_out_of_range_is_one_line(tmp_path):
    model, data = tmp_path / "rec.onnx", tmp_path / "rec.npz"
    onnx.save(recognizer_model(), model)
    np.savez(data, x=np.zeros((4, STEPS, FEATURES), np.float32))
    status, out, err = run_cli("sensitivity", model, "--data", data, "--blank", "12")
    assert status == 2 and err == (f"error: CTC blank index 12 is out of range: output 'ctc_logits' of shape "
                                   f"(?, {STEPS}, {CLASSES}) has {CLASSES} classes (0 to {CLASSES - 1})\n")


def test_a_model_with_several_outputs_scores_the_one_the_task_names():
    prepared = prepare_model(two_output_model())
    x = np.random.default_rng(5).normal(size=(200, 16)).astype(np.float32)
    _, evaluation = _split({"x": x}, labels=np.random.default_rng(6).integers(0, 4, size=200))
    evaluator = Evaluator(prepared, None, evaluation)
    assert evaluator.task == Task(TaskKind.CLASSIFICATION) and evaluator.fp32_accuracy is not None
    config = PRESETS["W8 weight-only"]
    first = evaluator.evaluate(config)
    second = evaluator.evaluate(config, task=Task(TaskKind.EMBEDDING, output="pooled_embedding", k=3))
    assert first.sqnr_db == first.output_sqnr_db[0] and second.sqnr_db == second.output_sqnr_db[1]
    assert second.score.headline == Metric.RECALL and second.accuracy is None
    assert second.score.metrics == score(evaluator.fp32_outputs[1], evaluator.outputs(config)[1], None,
                                         Task(TaskKind.EMBEDDING, k=3)).metrics
    assert "cannot be scored against an embedding ('pooled_embedding'" in second.score.labels_note

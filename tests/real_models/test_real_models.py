"""The lab on real pretrained models: inspect, evaluate, sensitivity and export agreement.

Four stateless models of the conformance set (docs/conformance.md): the PP-OCRv4 text detector
(channels-first head, Constant-node weights, opset 12), the PP-OCRv4 CTC recogniser ([N, T, 6625]),
the PP-OCR direction classifier (opset 11, real labels) and all-MiniLM-L6-v2 (int64 token inputs).
Agreement is measured on the outputs (cosine, SQNR), which is valid for every model whatever its task.
The stateful VAD is in test_stateful_real.py.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import load_npz, split_dataset
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_dynamic_int8, export_model
from quant_core.numerics.formats import parse_format
from quant_core.export.latency import create_session
from quant_core.numerics.metrics import cosine_similarity, sqnr_db
from quant_core.model.model_io import load_model, prepare_model
from quant_core.engine.plan import ExportKind, plan_export
from quant_core.export.overrides import model_proto
from quant_core.search.sensitivity import run_sweep
from quant_core.engine.tasks import Metric, Task, TaskKind, TaskScorer, output_index
from tests.real_models import fetch
from tests.real_models.conftest import cached, timed

pytestmark = pytest.mark.real_models

MODELS = ["ocr_det", "ocr_rec", "ocr_cls", "minilm", "yolo_det"]
CALIBRATION_SAMPLES = 8      # of 24-32 samples per model: the rest is the evaluation split
AGREEMENT_FLOOR_DB = 30.0
EXPORT_GAP_DB = 3.5          # measured 2026-12-03: ocr_det, ocr_rec better than simulated; minilm 0.07 dB, yolo_det 2.5-3.05 dB
                             # below (QLinearConv output rounding before SiLU, noted by the export); was 2.4 dB on minilm before
                             # residual readers of a quantized layer input read the float tensor (export._float_readers_read_float)
SWEEP_LAYERS = 3             # the first weighted layers, each at int8 and int4


@dataclass(frozen=True)
class Expected:
    input_dtypes: dict[str, str]
    source_opset: int
    constant_weights: bool           # the shipped file keeps its weights in Constant nodes
    output_rank: int
    min_layers: int
    w8a8_cosine: float               # simulated W8A8 vs FP32, on the outputs
    weight_only_cosine: float
    simulated_only_ops: frozenset[str] = frozenset()   # op types the export plan keeps FP32 under W8A8


EXPECTED = {
    "ocr_det": Expected({"x": "float32"}, 12, True, 4, 60, 0.97, 0.99, frozenset({"ConvTranspose"})),
    "ocr_rec": Expected({"x": "float32"}, 12, True, 3, 40, 0.95, 0.98),
    "ocr_cls": Expected({"x": "float32"}, 11, True, 2, 50, 0.99, 0.99),
    "minilm": Expected({"input_ids": "int64", "attention_mask": "int64", "token_type_ids": "int64"},
                       17, False, 2, 36, 0.97, 0.99, frozenset({"Gather"})),
    "yolo_det": Expected({"images": "float32"}, 17, False, 3, 60, 0.97, 0.99),
}


@dataclass
class Lab:
    name: str
    path: str
    prepared: object
    calibration_data: object
    evaluation: object
    calibration: object
    evaluator: Evaluator


@pytest.fixture(scope="module", params=MODELS)
def lab(request) -> Lab:
    name = request.param
    model_path, data_path = cached(name)
    with timed(name, "load+prepare"):
        prepared = prepare_model(load_model(model_path))
        calibration_data, evaluation = split_dataset(load_npz(data_path, prepared.info),
                                                     calibration_samples=CALIBRATION_SAMPLES)
    with timed(name, "calibrate"):
        calibration = calibrate(prepared, calibration_data)
    with timed(name, "evaluator"):
        evaluator = Evaluator(prepared, calibration, evaluation)
    return Lab(name, str(model_path), prepared, calibration_data, evaluation, calibration, evaluator)


def _run(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return create_session(model).run(None, inputs)


def test_inspect_cli_reads_the_real_structure(lab):
    expected = EXPECTED[lab.name]
    with timed(lab.name, "inspect"):
        done = subprocess.run([sys.executable, "-m", "quant_core", "inspect", lab.path, "--json"],
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {t["name"]: t["dtype"] for t in report["inputs"]} == expected.input_dtypes
    assert len(report["outputs"][0]["shape"]) == expected.output_rank
    assert len(report["layers"]) >= expected.min_layers
    assert report["opset"] >= 13                          # per-channel needs 13: older models are converted
    source = onnx.load(lab.path, load_external_data=False)
    source_opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    assert source_opset == expected.source_opset
    if source_opset < 13:
        assert any(f"converted from opset {source_opset} to 13" in note for note in report["notes"])
    constants = sum(node.op_type == "Constant" for node in source.graph.node)
    assert (len(source.graph.initializer) == 0 and constants > 100) == expected.constant_weights
    if expected.constant_weights:
        assert any("Constant-node weight" in note for note in report["notes"])
        assert all(layer["weights"] for layer in report["layers"] if layer["op_type"] == "Conv")


def test_prepared_fp32_model_reproduces_the_shipped_model(lab):
    """What the lab calls FP32 is the shipped model: opset conversion and Constant moves change nothing."""
    with timed(lab.name, "fp32-check"):
        shipped = _run(open(lab.path, "rb").read(), lab.evaluation.inputs)
    for reference, ours in zip(shipped, lab.evaluator.fp32_outputs):
        assert ours.shape == reference.shape
        assert sqnr_db(reference, ours) > 60.0


def _ctc_greedy(probabilities: np.ndarray, characters: list[str]) -> str:
    best = probabilities.argmax(-1)
    return "".join(characters[c] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def test_the_fp32_model_understands_the_prepared_data(lab):
    """The inputs are real: each FP32 model does its job on them (so agreement numbers mean something)."""
    outputs = lab.evaluator.fp32_outputs[0]
    session = create_session(open(lab.path, "rb").read())
    if lab.name == "ocr_rec":     # reads the rendered lines back (character list from the model's metadata)
        characters = ["<blank>", *session.get_modelmeta().custom_metadata_map["character"].splitlines(), " "]
        read = [_ctc_greedy(p, characters).strip() for p in outputs]
        rendered = {text for text in fetch.TEXT_LINES}
        assert sum(text in rendered for text in read) >= 0.8 * len(read), read
    elif lab.name == "ocr_cls":   # tells upright from upside-down lines
        assert lab.evaluator.fp32_accuracy >= 0.9
    elif lab.name == "ocr_det":   # marks text pixels, but not most of the page
        text_fraction = (outputs > 0.3).mean(axis=(1, 2, 3))
        assert (text_fraction > 0.01).all() and (text_fraction < 0.5).all()
    elif lab.name == "minilm":    # paraphrase pairs are each other's nearest sentence
        everything = create_session(open(lab.path, "rb").read()).run(None, dict(np.load(fetch.data_path("minilm"))))[0]
        similarity = everything @ everything.T
        np.fill_diagonal(similarity, -1.0)
        pairs = [(2 * i, 2 * i + 1) for i in range(10)]
        assert sum(int(similarity[a].argmax() == b) for a, b in pairs) >= 9
    elif lab.name == "yolo_det":  # finds the astronaut's face (first sample of the file: the whole photograph)
        names = ast.literal_eval(session.get_modelmeta().custom_metadata_map["names"])  # a dict repr
        face = [k for k, v in names.items() if v == "FACE_FEMALE"][0]
        astronaut = session.run(None, {"images": np.load(fetch.data_path("yolo_det"))["images"][:1]})[0]
        assert astronaut[0, 4 + face].max() > 0.5


def test_w8a8_and_weight_only_stay_close_to_fp32(lab):
    expected = EXPECTED[lab.name]
    with timed(lab.name, "evaluate"):
        w8a8 = lab.evaluator.evaluate(PRESETS["W8A8"])
        weight_only = lab.evaluator.evaluate(PRESETS["W8 weight-only"])
    print(f"{lab.name}: W8A8 cosine {w8a8.cosine:.4f} SQNR {w8a8.sqnr_db:.1f} dB; "
          f"W8 weight-only cosine {weight_only.cosine:.4f} SQNR {weight_only.sqnr_db:.1f} dB")
    assert w8a8.sample_count == lab.evaluation.num_samples
    assert w8a8.cosine >= expected.w8a8_cosine
    assert weight_only.cosine >= expected.weight_only_cosine
    assert weight_only.sqnr_db > w8a8.sqnr_db              # quantizing activations too only adds error
    op_types = {layer.name: layer.op_type for layer in lab.prepared.info.layers}
    for result in (w8a8, weight_only):
        assert {op_types[layer] for layer in result.simulated_only} == expected.simulated_only_ops
    assert w8a8.size_bytes < lab.evaluator.fp32_size_bytes / 3
    if lab.evaluation.labels is not None:                  # the direction classifier: real labels
        assert lab.evaluator.fp32_accuracy >= 0.9
        assert w8a8.accuracy >= lab.evaluator.fp32_accuracy - 0.1


def test_every_run_path_of_the_evaluator_equals_the_reference_simulator(lab):
    from tests.fast_vs_reference import mismatches
    with timed(lab.name, "fast=reference"):
        assert mismatches(lab.evaluator, light=True) == []


def test_the_evaluation_batch_budget_changes_no_number(lab, monkeypatch):
    """Batches of 2-3 samples (the budget the big models get) give what one batch of the split gives."""
    from quant_core.engine import evaluate as evaluate_module
    monkeypatch.setattr(evaluate_module, "EVALUATION_BATCH_BYTES", 2**62)
    whole = Evaluator(lab.prepared, lab.calibration, lab.evaluation, session=lab.evaluator.session)
    monkeypatch.setattr(evaluate_module, "EVALUATION_BATCH_BYTES", 3 * lab.calibration.sample_bytes - 1)
    small = Evaluator(lab.prepared, lab.calibration, lab.evaluation, session=lab.evaluator.session)
    assert small.feeder.batch_size == 2 < whole.feeder.batch_size
    with timed(lab.name, "batch budget"):
        for expected, found in zip(whole.fp32_outputs, small.fp32_outputs):
            assert np.array_equal(expected, found)
        config = PRESETS["W8A8"]
        for expected, found in zip(whole.outputs(config), small.outputs(config)):
            assert np.array_equal(expected, found)
        assert small.evaluate(config) == whole.evaluate(config)
        assert small.layer_errors(config) == whole.layer_errors(config)


def test_sensitivity_sweep_ranks_int4_below_int8(lab):
    layers = [layer.name for layer in lab.prepared.info.quantizable_layers if layer.weight is not None][:SWEEP_LAYERS]
    with timed(lab.name, "sensitivity"):
        rows = run_sweep(lab.evaluator, ["int8", "int4"], layers=layers, time_budget_s=300)
    assert len(rows) == 2 * len(layers) == 2 * SWEEP_LAYERS
    by_cell = {(row.layer, row.format): row for row in rows}
    for layer in layers:
        int8, int4 = by_cell[(layer, "int8")], by_cell[(layer, "int4")]
        assert np.isfinite(int4.sqnr_db)
        assert int8.sqnr_db > int4.sqnr_db, (layer, int8.sqnr_db, int4.sqnr_db)
        assert int8.size_bytes > int4.size_bytes


def test_exported_w8a8_agrees_with_the_simulation(lab):
    """onnxruntime's integer kernels on the exported model give the outputs the simulation predicts."""
    config = PRESETS["W8A8"]
    with timed(lab.name, "export"):
        result = export_model(lab.prepared, config, lab.calibration, calibration_data=lab.calibration_data)
        exported = _run(result.model, lab.evaluation.inputs)
    simulated = lab.evaluator.outputs(config)
    for fp32, sim, real in zip(lab.evaluator.fp32_outputs, simulated, exported):
        assert real.shape == fp32.shape
        agreement = sqnr_db(sim, real)
        real_error, simulated_error = sqnr_db(fp32, real), sqnr_db(fp32, sim)
        print(f"{lab.name}: exported vs simulated SQNR {agreement:.1f} dB; vs FP32: exported {real_error:.1f} dB, "
              f"simulated {simulated_error:.1f} dB")
        assert cosine_similarity(sim, real) >= 0.98
        # The simulation's promise holds: the export is within EXPORT_GAP_DB of it, or better than 30 dB anyway
        # (saturated outputs such as softmax probabilities give SQNRs far above 30 dB that differ a lot).
        assert real_error >= min(simulated_error - EXPORT_GAP_DB, AGREEMENT_FLOOR_DB), (real_error, simulated_error)


INFERRED_TASK = {"ocr_det": TaskKind.DETECTION, "ocr_rec": TaskKind.SEQUENCE, "ocr_cls": TaskKind.CLASSIFICATION,
                 "minilm": TaskKind.EMBEDDING, "yolo_det": TaskKind.DETECTION}
# The recogniser is a CTC model (blank 0): as a user would set it in the sidebar or with --task ctc.
TASKS = {"ocr_rec": [Task(TaskKind.SEQUENCE), Task(TaskKind.CTC, blank=0)]}


def test_the_task_is_inferred_and_the_exported_models_task_metrics_match_the_simulation(lab):
    """Per-position agreement and CER (recogniser), recall@k (embedder), agreement along the head's channel
    axis (detectors): the simulation's numbers are the exported model's, within a few points."""
    assert lab.evaluator.task.kind == INFERRED_TASK[lab.name]
    config = PRESETS["W8A8"]
    result = export_model(lab.prepared, config, lab.calibration, calibration_data=lab.calibration_data)
    for task in TASKS.get(lab.name, [lab.evaluator.task]):
        index = output_index(task, lab.prepared.info)
        exported = _run(result.model, lab.evaluation.inputs)[index]
        scorer = TaskScorer(lab.evaluator.fp32_outputs[index], task, lab.evaluation.labels)
        real = scorer.score(exported)
        simulated = lab.evaluator.evaluate(config, task=task).score
        for name, value in simulated.metrics:
            if value is None or "SQNR" in name or "max" in name:
                continue
            print(f"{lab.name} {task.kind.value}: {name} simulated {value:.4f}, exported {real.value(name):.4f}")
            # Exact sequence match is the most brittle: the export's extra rounding of QLinearConv outputs (not
            # simulated, docs/conformance.md) flipped 2 of the recogniser's 24 samples (0.75 vs 0.67), while
            # its CER and per-position agreement moved by under 0.01.
            tolerance = 0.1 if name == Metric.SEQUENCE_MATCH else 0.05
            assert abs(real.value(name) - value) <= tolerance, (name, value, real.value(name))


def test_dynamic_int8_export_matches_the_simulated_per_tensor_weights(lab):
    """onnxruntime's dynamic INT8 (per-tensor int8 weights) is as good as the lab predicts for per-tensor
    int8 weights: on the recogniser both collapse (cosine ~0.4: per-tensor grids crush its depthwise
    convolutions), which per-channel weights avoid."""
    per_tensor = QuantConfig(LayerQuant(TensorQuant(parse_format("int8"))), name="W8 per-tensor weight-only")
    with timed(lab.name, "export"):
        exported = _run(export_dynamic_int8(lab.prepared).model, lab.evaluation.inputs)
    with timed(lab.name, "evaluate"):
        predicted = lab.evaluator.evaluate(per_tensor).cosine
        per_channel = lab.evaluator.evaluate(PRESETS["W8 weight-only"]).cosine
    real = cosine_similarity(lab.evaluator.fp32_outputs[0], exported[0])
    print(f"{lab.name}: dynamic INT8 export cosine {real:.4f}; simulated per-tensor W8 {predicted:.4f}, "
          f"per-channel W8 {per_channel:.4f}")
    assert abs(real - predicted) <= 0.05 or min(real, predicted) >= 0.95
    assert per_channel >= predicted - 1e-3


def test_simulated_only_reason_names_the_real_cause(lab):
    model = model_proto(lab.prepared)
    initializers = {init.name for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    entries = [entry for entry in plan_export(lab.prepared, PRESETS["W8A8"]) if entry.kind == ExportKind.SIMULATED_ONLY]
    if not entries:
        pytest.skip("nothing simulated only in this model")
    for entry in entries:
        weight_is_constant = any(name in initializers for name in nodes[entry.layer].input)
        assert not (weight_is_constant and "non-constant weight" in entry.reason), entry


def test_the_command_line_evaluates_and_sweeps_a_real_model():
    """The CLI front on the smallest real model with labels (the direction classifier)."""
    model, data = cached("ocr_cls")
    common = ["--data", str(data), "--calibration-samples", str(CALIBRATION_SAMPLES), "--json"]
    with timed("ocr_cls", "cli"):
        evaluated = subprocess.run([sys.executable, "-m", "quant_core", "evaluate", str(model), *common],
                                   capture_output=True, text=True, timeout=600)
        swept = subprocess.run([sys.executable, "-m", "quant_core", "sensitivity", str(model), *common,
                                "--formats", "int8,int4", "--time-budget", "3"], capture_output=True, text=True,
                               timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["config"]["name"] == "W8A8" and report["sample_count"] == 24
    assert report["fp32_accuracy"] >= 0.9 and report["accuracy"] >= report["fp32_accuracy"] - 0.1
    assert len(report["layers"]) >= EXPECTED["ocr_cls"].min_layers
    assert swept.returncode == 0, swept.stderr
    rows = json.loads(swept.stdout)
    assert rows and {row["format"] for row in rows} <= {"int8", "int4"} and all("accuracy" in row for row in rows)
    assert swept.stderr.startswith("stopped after") or len(rows) == 2 * len(report["layers"])

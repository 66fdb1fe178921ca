"""Integer-only export of the demo MLP and CNN: no float node after onnxruntime's optimizations, and the
same accuracy as the lab's simulation of the config (within 0.5 pp) and as the exported model."""
import json

import numpy as np
import onnxruntime as ort
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.cli.main import main
from quant_core.config import PRESETS
from quant_core.model.data import split_dataset
from quant_core.model.demo import DEMO_MODELS, load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_model
from quant_core.export.integer_only import check_integer_only, compare_integer_only, run_integer_only
from quant_core.model.model_io import load_model, prepare_model


def _exported(name: str):
    raw, data = load_demo(name)
    prepared = prepare_model(load_model(raw))
    calibration_data, evaluation_data = split_dataset(data)
    calibration = calibrate(prepared, calibration_data)
    simulated = Evaluator(prepared, calibration, evaluation_data).evaluate(PRESETS["W8A8"]).accuracy
    return export_model(prepared, PRESETS["W8A8"], calibration).model, evaluation_data, simulated


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_demo_integer_only_export_matches_its_simulation(name):
    exported, data, simulated = _exported(name)
    comparison = compare_integer_only(exported, data.inputs, data.labels)
    assert comparison.check.integer_only and comparison.model is not None
    assert check_integer_only(comparison.model).integer_only
    assert {node.op_type for node in comparison.model.graph.node} >= {"MatMulInteger", "Mod", "Div"}
    assert abs(comparison.integer_accuracy - simulated) <= 0.005
    assert abs(comparison.integer_accuracy - comparison.exported_accuracy) <= 0.005
    # The ONNX integer-only model computes exactly what the numpy integer-only execution computes.
    onnx_outputs = ort.InferenceSession(comparison.model.SerializeToString(),
                                        providers=["CPUExecutionProvider"]).run(None, data.inputs)[0]
    numpy_outputs = next(iter(run_integer_only(exported, data.inputs).outputs.values()))
    assert np.allclose(onnx_outputs, numpy_outputs, rtol=0, atol=1e-5)


def test_31_bit_multipliers_change_no_code_and_8_bit_ones_some():
    exported, data, _ = _exported("cnn")
    exact = compare_integer_only(exported, data.inputs, data.labels)
    assert all(layer.changed_fraction == 0 and layer.max_multiplier_error == 0 for layer in exact.layers)
    coarse = compare_integer_only(exported, data.inputs, data.labels, multiplier_bits=8)
    assert all(0 < layer.max_multiplier_error <= 2.0**-8 for layer in coarse.layers)
    assert any(layer.changed_fraction > 0 for layer in coarse.layers)
    assert all(layer.max_code_change == 1 for layer in coarse.layers)


def test_the_transformer_is_not_integer_only_and_says_where():
    raw, _ = load_demo("transformer")
    report = check_integer_only(raw)
    ops = {node.op_type for node in report.float_nodes}
    assert not report.integer_only and {"LayerNormalization", "Softmax", "MatMul"} <= ops


def test_a_model_that_computes_in_float_is_checked_without_being_run():
    """The comparison needs the integer-only form; without one the export is not run over the split (a real
    model's whole split in one onnxruntime run held every activation of every sample at once)."""
    exported, data, _ = _exported("transformer")
    comparison = compare_integer_only(exported, {}, data.labels)  # no feeds: a run would fail
    assert not comparison.check.integer_only and comparison.model is None
    assert comparison.exported_accuracy is None and "compute in float" in comparison.refused


def test_cli_integer_only(tmp_path, capsys):
    out = tmp_path / "mlp_int.onnx"
    model = str(DEMO_MODELS["mlp"].path)
    data = str(DEMO_MODELS["mlp"].path.parent / "digits_heldout.npz")
    assert main(["integer_only", model, "--data", data, "--out", str(out), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["integer_only"] is True and document["integer_only_export"] is True
    assert [layer["layer"] for layer in document["layers"]] == ["/fc1/Gemm", "/fc2/Gemm"]
    assert main(["integer_only", str(out)]) == 0
    assert capsys.readouterr().out.startswith("integer-only: yes")
    assert main(["integer_only", model]) == 0
    assert capsys.readouterr().out.startswith("integer-only: no")

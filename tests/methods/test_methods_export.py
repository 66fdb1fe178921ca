"""With each method on, the exported model's accuracy agrees with the simulation within 0.5 pp on every
demo (the transformed model carries the new weights, biases and inserted Mul nodes into the export);
CLE brings the demo CNN's static INT8 per-tensor accuracy within 1 pp of FP32, simulated and exported."""
import numpy as np
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_model
from quant_core.export.latency import create_session, static_int8_config
from quant_core.methods import apply_methods, changes_fp32, parse_methods
from quant_core.model.model_io import load_model, prepare_model

TOLERANCE_PP = 0.5


def _measure(name: str, methods, per_channel: bool):
    model, held = load_demo(name)
    prepared = prepare_model(load_model(model))
    calibration_inputs, evaluation = split_dataset(held)
    specs = parse_methods(methods) if isinstance(methods, str) else methods
    config = static_int8_config(prepared, per_channel=per_channel).with_methods(specs)
    original = Evaluator(prepared, None, evaluation)
    transformed, _ = apply_methods(prepared, config, calibration_inputs)
    calibration = calibrate(transformed, calibration_inputs)
    evaluator = Evaluator(transformed, calibration, evaluation,
                          reference_outputs=original.fp32_outputs if changes_fp32(config) else None)
    result = export_model(transformed, config, calibration, calibration_data=calibration_inputs)
    assert result.simulated_only == ()
    logits = create_session(result.model).run(None, evaluation.inputs)[0]
    exported = 100.0 * float(np.mean(logits.argmax(axis=1) == evaluation.labels))
    return 100.0 * original.fp32_accuracy, 100.0 * evaluator.evaluate(config).accuracy, exported


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("methods", ["cle", "smoothquant", "bias_correction", "cle,smoothquant,bias_correction"])
def test_export_matches_the_simulation_with_methods(name, methods):
    _, simulated, exported = _measure(name, methods, per_channel=True)
    assert abs(exported - simulated) <= TOLERANCE_PP, (exported, simulated)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_export_matches_the_simulation_with_adaround(name):
    from quant_core.config import MethodSpec
    _, simulated, exported = _measure(name, (MethodSpec("adaround", (("iterations", 30),)),), per_channel=True)
    assert abs(exported - simulated) <= TOLERANCE_PP, (exported, simulated)


def test_cle_brings_the_demo_cnn_per_tensor_within_a_point_of_fp32():
    fp32, simulated, exported = _measure("cnn", "cle", per_channel=False)
    assert simulated >= fp32 - 1.0 and exported >= fp32 - 1.0, (fp32, simulated, exported)
    assert abs(exported - simulated) <= TOLERANCE_PP

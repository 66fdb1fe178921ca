"""The exported model's real onnxruntime accuracy agrees with the simulated accuracy of the same config.

For every demo model: W8A8 per-channel, W8A8 per-tensor, and a mixed config (first layer FP32, last
layer per-tensor, the rest per-channel) agree within 0.5 percentage point, with nothing left
simulated-only, and the exported model really runs integer kernels (no DequantizeLinear is left
after onnxruntime's graph optimizations).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from quant_core.calibrate import calibrate
from quant_core.config import LayerQuant, TensorQuant
from quant_core.evaluate import Evaluator
from quant_core.export import export_model
from quant_core.formats import parse_format
from quant_core.latency import create_session, static_int8_config
from quant_core.model_io import load_model, prepare_model

DEMO = Path(__file__).resolve().parents[2] / "demo_models"
CALIBRATION_SAMPLES = 256
TOLERANCE_PP = 0.5
INTEGER_KERNELS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat"}


class _Split:
    def __init__(self, inputs, labels):
        self.inputs, self.labels = inputs, labels


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def demo(request):
    data = np.load(DEMO / "digits.npz")
    images, labels = data["image"], data["labels"]
    prepared = prepare_model(load_model(DEMO / f"{request.param}.onnx"))
    calibration_inputs = {"image": images[:CALIBRATION_SAMPLES]}
    calibration = calibrate(prepared, calibration_inputs)
    evaluation = _Split({"image": images[CALIBRATION_SAMPLES:]}, labels[CALIBRATION_SAMPLES:])
    return prepared, calibration, calibration_inputs, evaluation, Evaluator(prepared, calibration, evaluation)


def _config(prepared, kind: str):
    per_channel = static_int8_config(prepared, per_channel=True)
    if kind == "per_channel":
        return per_channel
    if kind == "per_tensor":
        return static_int8_config(prepared, per_channel=False)
    layers = prepared.info.layers
    last_per_tensor = LayerQuant(TensorQuant(parse_format("int8")),
                                 TensorQuant(parse_format("uint8"), symmetric=False))
    return per_channel.with_layer(layers[0].name, LayerQuant()).with_layer(layers[-1].name, last_per_tensor)


def _optimized_ops(model: bytes) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        create_session(model, optimized_path=path)
        return {node.op_type for node in onnx.load(path).graph.node}


@pytest.mark.parametrize("kind", ["per_channel", "per_tensor", "mixed"])
def test_exported_accuracy_is_within_half_a_point_of_the_simulation(demo, kind):
    prepared, calibration, calibration_inputs, evaluation, evaluator = demo
    config = _config(prepared, kind)
    result = export_model(prepared, config, calibration, calibration_data=calibration_inputs)
    assert result.simulated_only == ()
    logits = create_session(result.model).run(None, evaluation.inputs)[0]
    exported = 100.0 * float(np.mean(logits.argmax(axis=1) == evaluation.labels))
    simulated = 100.0 * evaluator.evaluate(config).accuracy
    assert abs(exported - simulated) <= TOLERANCE_PP, (exported, simulated)
    optimized = _optimized_ops(result.model)
    assert INTEGER_KERNELS & optimized
    assert "DequantizeLinear" not in optimized  # every quantized layer was fused into an integer kernel


def test_the_fp32_fallback_layer_is_not_quantized_in_the_export(demo):
    prepared, calibration, _, _, _ = demo
    first = prepared.info.layers[0]
    result = export_model(prepared, _config(prepared, "mixed"), calibration)
    node = next(n for n in onnx.load_from_string(result.model).graph.node if n.name == first.name)
    assert first.weight.name in node.input  # the original float initializer, no DequantizeLinear
    assert first.weight.name not in result.overrides

"""The exported model's real onnxruntime accuracy agrees with the simulated accuracy of the same config.

For every demo model (the app's split of the held-out digits: 256 to calibrate, 541 to evaluate),
W8A8 per-channel, W8A8 per-tensor, a mixed config (first layer FP32, last layer per-tensor, the rest
per-channel) and per-channel with 99.9-percentile activation ranges agree within 0.5 percentage
point, with nothing left simulated-only, and the exported model really runs integer kernels (no
DequantizeLinear is left after onnxruntime's graph optimizations).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import pytest

from quant_core.calibrate import calibrate
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.data import split_dataset
from quant_core.demo import load_demo
from quant_core.evaluate import Evaluator
from quant_core.export import export_model
from quant_core.formats import RangeMethod, parse_format
from quant_core.latency import create_session, static_int8_config
from quant_core.model_io import load_model, prepare_model

TOLERANCE_PP = 0.5
INTEGER_KERNELS = {"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat"}


@pytest.fixture(scope="module", params=["mlp", "cnn", "transformer"])
def demo(request):
    model, held_out = load_demo(request.param)
    prepared = prepare_model(load_model(model))
    calibration_data, evaluation = split_dataset(held_out)  # 256 to calibrate, 541 to evaluate
    calibration = calibrate(prepared, calibration_data)
    return prepared, calibration, calibration_data, evaluation, Evaluator(prepared, calibration, evaluation)


def _config(prepared, kind: str):
    per_channel = static_int8_config(prepared, per_channel=True)
    if kind == "per_channel":
        return per_channel
    if kind == "per_tensor":
        return static_int8_config(prepared, per_channel=False)
    if kind == "percentile":  # our range estimator, not onnxruntime's min-max, must reach the export
        activations = TensorQuant(parse_format("uint8"), symmetric=False, range_method=RangeMethod.PERCENTILE,
                                  percentile=99.9)
        return QuantConfig(per_channel.default, tuple((layer, LayerQuant(choice.weights, activations))
                                                      for layer, choice in per_channel.overrides))
    layers = prepared.info.layers
    last_per_tensor = LayerQuant(TensorQuant(parse_format("int8")),
                                 TensorQuant(parse_format("uint8"), symmetric=False))
    return per_channel.with_layer(layers[0].name, LayerQuant()).with_layer(layers[-1].name, last_per_tensor)


def _optimized_ops(model: bytes) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        create_session(model, optimized_path=path)
        return {node.op_type for node in onnx.load(path).graph.node}


@pytest.mark.parametrize("kind", ["per_channel", "per_tensor", "mixed", "percentile"])
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

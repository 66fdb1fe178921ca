"""The exported model's real onnxruntime accuracy agrees with the simulated accuracy of the same config.

For every demo model (the app's split of the held-out digits: 256 to calibrate, 541 to evaluate),
W8A8 per-channel, W8A8 per-tensor, a mixed config (first layer FP32, last layer per-tensor, the rest
per-channel) and per-channel with 99.9-percentile activation ranges agree within 0.5 percentage
point, with nothing left simulated-only, and the exported model really runs integer kernels (no
DequantizeLinear is left after onnxruntime's graph optimizations). So does the W8A8 preset, whose
per-channel axis is each layer's own (the transformer's MatMuls along their output columns). No
preset leaves a quantizable layer FP32 in the export without saying why.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.export.ort_export import export_model
from quant_core.engine.plan import ExportKind, plan_export
from quant_core.numerics.formats import RangeMethod, parse_format
from quant_core.export.latency import create_session, static_int8_config
from quant_core.model.model_io import load_model, prepare_model

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
    if kind in PRESETS:
        return PRESETS[kind]
    per_channel = static_int8_config(prepared, per_channel=True)
    if kind == "per_channel":
        return per_channel
    if kind == "per_tensor":
        return static_int8_config(prepared, per_channel=False)
    if kind == "percentile":  # our range estimator, not onnxruntime's min-max, must reach the export
        activations = TensorQuant(parse_format("uint8"), symmetric=False, range_method=RangeMethod.PERCENTILE,
                                  percentile=99.9)
        return QuantConfig(LayerQuant(per_channel.default.weights, activations))
    layers = prepared.info.layers
    last_per_tensor = LayerQuant(TensorQuant(parse_format("int8")),
                                 TensorQuant(parse_format("uint8"), symmetric=False))
    return per_channel.with_layer(layers[0].name, LayerQuant()).with_layer(layers[-1].name, last_per_tensor)


def _optimized_ops(model: bytes) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        create_session(model, optimized_path=path)
        return {node.op_type for node in onnx.load(path).graph.node}


@pytest.mark.parametrize("kind", ["per_channel", "per_tensor", "mixed", "percentile", "W8A8"])
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


@pytest.mark.parametrize("preset", list(PRESETS))
def test_no_preset_leaves_a_quantized_layer_fp32_in_the_export_without_a_reason(demo, preset):
    prepared, calibration, calibration_inputs, _, _ = demo
    config = PRESETS[preset]
    result = export_model(prepared, config, calibration, calibration_data=calibration_inputs)
    exported = onnx.load_from_string(result.model)
    float_weights = {init.name for init in exported.graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    for entry in plan_export(prepared, config):
        layer = next(layer for layer in prepared.info.layers if layer.name == entry.layer)
        if config.for_layer(entry.layer).is_fp32:
            continue
        if entry.kind == ExportKind.SIMULATED_ONLY:
            assert entry.layer in result.simulated_only
            assert f"{entry.layer}: simulated only ({entry.reason})" in " ".join(result.notes) and entry.reason
        else:  # its float weight is gone: replaced by a quantized (or float16) initializer
            assert entry.kind != ExportKind.FP32 and layer.weight.name not in float_weights, entry
    if preset in ("W8A8", "W8 weight-only", "FP16"):
        assert result.simulated_only == ()

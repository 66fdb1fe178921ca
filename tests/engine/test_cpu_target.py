"""The CPU target: whether this machine's int8 kernels saturate, and the grid a saturating target exports.

On x86 without VNNI onnxruntime adds pairs of u8 x s8 products into a saturating int16. The probe
must say so exactly when onnxruntime really differs from exact integer arithmetic on this machine;
for a saturating target the export stores int8 weights of integer-kernel layers as uint8 (the same
grid, u8 x u8 kernels), so the simulation does not change. None of these tests assumes one CPU class.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from quant_core.numerics import cpu_target
from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.cpu_target import CpuTarget, kernel_weight_storage
from quant_core.errors import ConfigError
from quant_core.engine.evaluate import Evaluator
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.export.latency import static_int8_config
from quant_core.numerics.quantize import dequantize, quantize


def _exact_and_onnxruntime_differ() -> bool:
    """An independent check (not the probe's values): a random adversarial u8 x s8 product in onnxruntime vs int64."""
    rng = np.random.default_rng(7)
    depth, columns = 96, 5
    a = rng.integers(200, 256, size=(3, depth)).astype(np.uint8)
    b = (rng.choice([-1, 1], size=(depth, columns)) * rng.integers(100, 128, size=(depth, columns))).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "check",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [3, depth]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [depth, columns])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [3, columns])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"a": a, "b": b})[0]
    return not np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64))


def test_the_probe_verdict_is_what_onnxruntime_does_on_this_machine(request):
    if request.config.getoption("--int8-kernels") != "probe":
        pytest.skip("the verdict is pretended in this run")
    probe = cpu_target.probe_int8_kernels()
    assert probe.saturates == _exact_and_onnxruntime_differ()
    assert probe.saturates == any(check.saturates for check in probe.checks)
    assert {check.op_type for check in probe.checks} == {"MatMulInteger", "QLinearConv"}
    assert probe.target == (CpuTarget.SATURATING_X86 if probe.saturates else CpuTarget.NO_SATURATION)
    assert ("saturate" in probe.summary()) and probe.cpu


def test_the_probe_runs_once_per_process():
    assert cpu_target.probe_int8_kernels() is cpu_target.probe_int8_kernels()


@pytest.mark.parametrize("name, saturating, expected", [
    ("int8", True, "uint8"),
    ("int8_narrow", True, "uint8"),
    ("uint8", True, "uint8"),
    ("int4", True, "int4"),
    ("int8", False, "int8"),
])
def test_a_saturating_target_stores_only_signed_8_bit_weights_as_uint8(name, saturating, expected):
    assert kernel_weight_storage(parse_format(name), saturating=saturating) == parse_format(expected)


def test_uint8_codes_with_the_zero_point_moved_by_128_dequantize_to_the_same_values():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 9)).astype(np.float32)
    scale, zero_point = np.float32(0.013), 0
    signed = quantize(x, scale, zero_point, parse_format("int8"))
    unsigned = quantize(x, scale, zero_point + 128, parse_format("uint8"))
    assert np.array_equal(unsigned.astype(np.int32) - 128, signed.astype(np.int32))
    assert np.array_equal(dequantize(unsigned, scale, zero_point + 128), dequantize(signed, scale, zero_point))


def test_the_config_json_records_the_target_and_old_files_mean_auto():
    config = replace(PRESETS["W8A8"], target=CpuTarget.SATURATING_X86)
    data = config.to_dict()
    assert data["target"] == "saturating-x86"
    assert QuantConfig.from_json(config.to_json()) == config
    del data["target"]
    assert QuantConfig.from_dict(data).target == CpuTarget.AUTO
    with pytest.raises(ConfigError, match="unknown target 'arm64': expected one of auto, no-saturation, saturating-x86"):
        QuantConfig.from_dict({**data, "target": "arm64"})


def test_a_config_change_keeps_its_target():
    config = replace(PRESETS["W8A8"], target=CpuTarget.NO_SATURATION)
    assert config.with_layer("conv1", LayerQuant()).target == CpuTarget.NO_SATURATION


@pytest.fixture(scope="module")
def cnn(demo_cnn):
    prepared, calibration_data, evaluation_data = demo_cnn
    return prepared, calibrate(prepared, calibration_data), evaluation_data.subset(np.arange(128))


@pytest.mark.parametrize("per_channel", [True, False])
def test_the_target_does_not_change_the_simulation(cnn, per_channel):
    prepared, calibration, evaluation = cnn
    evaluator = Evaluator(prepared, calibration, evaluation)
    w8a8 = static_int8_config(prepared, per_channel=per_channel)
    saturating = evaluator.outputs(replace(w8a8, target=CpuTarget.SATURATING_X86))
    exact = evaluator.outputs(replace(w8a8, target=CpuTarget.NO_SATURATION))
    assert all(np.array_equal(a, b) for a, b in zip(saturating, exact))


def test_auto_is_this_machines_class():
    expected = CpuTarget.SATURATING_X86 if cpu_target.probe_int8_kernels().saturates else CpuTarget.NO_SATURATION
    assert cpu_target.saturates(CpuTarget.AUTO) == cpu_target.saturates(expected)
    assert expected.value in cpu_target.describe_target(CpuTarget.AUTO)


def test_a_target_of_the_other_class_says_the_measured_export_can_differ():
    machine = cpu_target.probe_int8_kernels().target
    other = CpuTarget.NO_SATURATION if machine == CpuTarget.SATURATING_X86 else CpuTarget.SATURATING_X86
    assert "other class" in cpu_target.describe_target(other)
    assert "other class" not in cpu_target.describe_target(machine)

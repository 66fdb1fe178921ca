"""Weight-only methods as config methods (GPTQ, AWQ, HQQ, RTN): they act on any MatMul / Gemm whose
weight the config quantizes per group (or per channel), before the format's rounding; the config's
rounding of what they write reproduces their integers; the MatMulNBits export carries those integers,
so the exported model computes what the simulation does."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quant_core.config import FP32_LAYER, PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.plan import ExportKind, plan_export
from quant_core.export.ort_export import export_model
from quant_core.methods import MethodContext, apply_methods, parse_methods
from quant_core.methods.graph import Graph
from quant_core.methods.weight_only import (requantized_matrix, apply_awq, apply_gptq, apply_hqq, apply_rtn, grid_form,
                                            gptq_stored)
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.numerics.tensor import quantize_tensor

from .graphs import correlated_data_for, layernorm_linear, run


def _config(bits=4, block=16, symmetric=True, granularity=Granularity.PER_GROUP):
    fmt = parse_format(f"int{bits}")
    return QuantConfig(LayerQuant(TensorQuant(fmt, symmetric=symmetric, granularity=granularity, block_size=block)),
                       name=f"int{bits} g{block}")


def _simulated(prepared, config, data):
    """The model with every weight replaced by its config-quantized values (the simulation of weight-only)."""
    graph = Graph(prepared)
    for layer in graph.linear_layers().values():
        form = grid_form(graph, layer, config.for_layer(layer.name).weights)
        values, _ = requantized_matrix(graph, form, form.matrix(graph.array(layer.weight)))
        graph.set_array(layer.weight, form.weight(values))
    return run(graph.prepared(), data)[0]


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_integers_survive_the_configs_rounding_and_beat_round_to_nearest(bits, symmetric):
    prepared, config = layernorm_linear(), _config(bits, symmetric=symmetric)
    data = correlated_data_for(prepared)
    new, report = apply_gptq(prepared, MethodContext(config, data))
    rows = {row[0]: row for row in report.rows}
    assert set(rows) == {"fc1", "fc2"}
    for name, row in rows.items():
        assert row[6] >= 0.999, f"{name}: only {row[6]:.4f} of GPTQ's integers reproduced"
        assert row[5] < row[4], f"{name}: GPTQ output error {row[5]} not below RTN's {row[4]}"
    fp32 = run(prepared, data)[0]
    rtn_error = np.mean((_simulated(prepared, config, data) - fp32) ** 2)
    gptq_error = np.mean((_simulated(new, config, data) - fp32) ** 2)
    assert gptq_error < rtn_error


def test_gptq_keeps_each_groups_range_so_the_grid_is_the_configs():
    prepared, config = layernorm_linear(), _config(4)
    graph = Graph(prepared)
    layer = graph.linear_layers()["fc1"]
    form = grid_form(graph, layer, config.for_layer("fc1").weights)
    m = graph.array(layer.weight)
    x = correlated_data_for(prepared).inputs["x"].reshape(-1, m.shape[0])
    stored, codes = gptq_stored(form, m, 2 * x.T @ x / len(x))
    before, after = form.grid(m), form.grid(stored)
    np.testing.assert_array_equal(before[0], after[0])      # scale per group
    np.testing.assert_array_equal(before[1], after[1])      # zero point per group
    assert codes.min() >= form.qmin and codes.max() <= form.qmax


def test_awq_keeps_the_fp32_function_and_lowers_the_output_error_under_rounding():
    prepared, config = layernorm_linear(), _config(3)
    data = correlated_data_for(prepared)
    new, report = apply_awq(prepared, MethodContext(config, data))
    before, after = run(prepared, data)[0], run(new, data)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    for row in report.rows:
        assert row[4] <= row[3]                              # AWQ's error never above alpha = 0 (RTN)
    assert any(row[2] > 0 for row in report.rows), report.rows   # the outlier channels are worth protecting
    assert report.rows[0][6] == "folded into LayerNormalization ln"


def test_hqq_never_raises_the_lp_error_and_rtn_changes_nothing():
    prepared, config = layernorm_linear(), _config(3, symmetric=False)
    data = correlated_data_for(prepared)
    _, report = apply_hqq(prepared, MethodContext(config, data))
    for row in report.rows:
        assert row[5] <= row[4] + 1e-9 and 0.0 <= row[3] <= 1.0
    assert any(row[5] < row[4] for row in report.rows)
    same, rtn_report = apply_rtn(prepared, MethodContext(config, data))
    assert same is prepared and "nothing changed" in rtn_report.changed[0]


def test_layers_the_methods_cannot_use_are_listed_with_the_reason():
    prepared = layernorm_linear()
    data = correlated_data_for(prepared)
    config = _config(4, granularity=Granularity.PER_TENSOR).with_layer("fc2", FP32_LAYER)
    new, report = apply_gptq(prepared, MethodContext(config, data))
    assert report.rows == () and dict(report.skipped) == {
        "fc1": "per-tensor grids: weight-only methods here need per-group (or per-channel) weights"}
    assert "nothing changed" in report.changed[0]


@pytest.mark.parametrize("methods", ["gptq", "awq", "hqq", "gptq,awq"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_matmul_nbits_export_carries_the_methods_integers(methods, symmetric):
    prepared, config = layernorm_linear(), _config(4, symmetric=symmetric).with_methods(parse_methods(methods))
    data = correlated_data_for(prepared)
    transformed, _ = apply_methods(prepared, config, data)
    plan = {entry.layer: entry.kind for entry in plan_export(transformed, config)}
    assert plan == {"fc1": ExportKind.WEIGHT_NBITS, "fc2": ExportKind.WEIGHT_NBITS}
    result = export_model(transformed, config, None)
    exported = onnx.load_from_string(result.model)
    assert [n.op_type for n in exported.graph.node].count("MatMulNBits") == 2 and result.simulated_only == ()
    session = ort.InferenceSession(result.model, providers=["CPUExecutionProvider"])
    simulated = _simulated(transformed, config, data)
    np.testing.assert_allclose(session.run(None, data.inputs)[0], simulated, rtol=1e-4,
                               atol=1e-5 * np.abs(simulated).max())


def test_the_exported_integers_are_the_configs_codes():
    from quant_core.export.nbits import config_group_quantized
    w = np.random.default_rng(3).normal(size=(64, 8)).astype(np.float32)
    tq = TensorQuant(parse_format("int4"), symmetric=False, granularity=Granularity.PER_GROUP, axis=0, block_size=32)
    quantized, expected = config_group_quantized(w, tq), quantize_tensor(w, tq)
    np.testing.assert_array_equal(quantized.dequantize(), expected.values)
    assert quantized.q.max() <= 15 and quantized.zero_point.dtype == np.uint8


def test_per_group_int3_and_gemm_stay_simulated_only_with_a_reason():
    prepared = layernorm_linear()
    plan = {entry.layer: entry for entry in plan_export(prepared, _config(3))}
    assert plan["fc1"].kind == ExportKind.SIMULATED_ONLY and plan["fc1"].reason


def test_methods_on_the_command_line(tmp_path):
    import json
    import subprocess
    import sys
    from quant_core.model.demo import DEMO_MODELS, demo_data_path
    config = tmp_path / "config.json"
    config.write_text(PRESETS["W4 weight-only per-group"].to_json())
    done = subprocess.run([sys.executable, "-m", "quant_core", "evaluate", str(DEMO_MODELS["transformer"].path),
                           "--data", str(demo_data_path()), "--config", str(config), "--methods", "gptq", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [m["name"] for m in report["methods"]["methods"]] == ["gptq"]

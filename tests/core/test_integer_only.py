"""Integer-only check on tiny graphs of known answer; fixed-point requantization against gemmlowp's arithmetic."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.errors import ModelError
from quant_core.export.integer_only import (NodeKind, check_integer_only, fixed_point_multiplier, requantize,
                                     requantize_float, run_integer_only)


def _qlinear_matmul_model(tail: str | None = None) -> bytes:
    """x float (batch, 4) -> QuantizeLinear -> QLinearMatMul -> DequantizeLinear [-> tail op] -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
        numpy_helper.from_array(rng.integers(-100, 100, size=(4, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
        numpy_helper.from_array(np.array(0.1, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zp"),
    ]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant_x"),
             helper.make_node("QLinearMatMul", ["xq", "x_scale", "x_zp", "w_q", "w_scale", "w_zp", "y_scale", "y_zp"],
                              ["yq"], name="/fc/MatMul"),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["y" if tail is None else "yd"],
                              name="dequant_y")]
    if tail is not None:
        nodes.append(helper.make_node(tail, ["yd"], ["y"], name=f"/head/{tail}"))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _float_matmul_model() -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")], "float",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_quantize_qlinear_matmul_dequantize_is_integer_only():
    report = check_integer_only(_qlinear_matmul_model())
    kinds = {node.name: node.kind for node in report.nodes}
    assert report.integer_only
    assert kinds == {"quant_x": NodeKind.BOUNDARY, "/fc/MatMul": NodeKind.INTEGER, "dequant_y": NodeKind.BOUNDARY}


def test_a_softmax_after_the_dequantization_computes_in_float():
    report = check_integer_only(_qlinear_matmul_model("Softmax"))
    assert not report.integer_only
    # The DequantizeLinear no longer feeds a model output: it turns integers into float inside the model.
    assert [(node.op_type, node.name) for node in report.float_nodes] == [("DequantizeLinear", "dequant_y"),
                                                                          ("Softmax", "/head/Softmax")]


def test_a_float_model_is_not_integer_only():
    report = check_integer_only(_float_matmul_model())
    assert not report.integer_only
    assert [node.op_type for node in report.float_nodes] == ["MatMul"]
    assert "x" in report.float_nodes[0].reason


def test_data_movement_on_integers_is_integer_only():
    report = check_integer_only(_qlinear_matmul_model("Identity"))
    assert report.integer_only or [n.op_type for n in report.float_nodes] == []


@pytest.mark.parametrize("real, multiplier, shift", [
    (0.5, 2**30, 0), (0.25, 2**30, 1), (0.75, 3 * 2**29, 0), (1.0, 2**30, -1), (2.0**-10, 2**30, 9), (0.0, 0, 0),
])
def test_fixed_point_multiplier_table(real, multiplier, shift):
    m, s = fixed_point_multiplier(real)
    assert (int(m), int(s)) == (multiplier, shift)


def test_fixed_point_multiplier_is_within_half_a_unit_of_2_to_the_minus_31_relative():
    real = np.random.default_rng(0).uniform(1e-6, 4.0, size=10_000)
    m, s = fixed_point_multiplier(real)
    assert np.all((m >= 2**30) & (m < 2**31))
    approx = m * 2.0 ** (-31 - s.astype(np.float64))
    assert np.max(np.abs(approx - real) / real) <= 2.0**-31


def test_single_rounding_rounds_acc_times_real_once_ties_up():
    acc = np.array([-5, -3, -1, 0, 1, 3, 5, 6])
    for real in (0.5, 0.25, 2.0**-9):
        m, s = fixed_point_multiplier(real)
        scale = int(round(0.5 / real))  # acc · scale · real = acc / 2: ties everywhere
        assert requantize(acc * scale, m, s, 0, -128, 127).tolist() == [-2, -1, 0, 0, 1, 2, 3, 3]


def test_gemmlowp_rounding_rounds_twice():
    acc = np.array([-5, -3, -1, 0, 1, 3, 5, 6])
    m, s = fixed_point_multiplier(0.5)  # no shift: SaturatingRoundingDoublingHighMul rounds ties up
    assert requantize(acc, m, s, 0, -128, 127, rounding="gemmlowp").tolist() == [-2, -1, 0, 0, 1, 2, 3, 3]
    m, s = fixed_point_multiplier(0.25)  # shift 1: RoundingDivideByPOT rounds ties away from zero
    assert requantize(2 * acc, m, s, 0, -128, 127, rounding="gemmlowp").tolist() == [-3, -2, -1, 0, 1, 2, 3, 3]
    # 198 · 0.32574686 = 64.498: the high multiply gives 129 (= 64.5 · 2), the shift then rounds up to 65.
    m, s = fixed_point_multiplier(np.float32(0.32574686))
    assert int(requantize(198, m, s, 0, 0, 255, rounding="gemmlowp")) == 65
    assert int(requantize(198, m, s, 0, 0, 255)) == 64
    # onnxruntime's float requantization rounds ties to even: the two differ only at exact ties.
    assert requantize_float(acc, 0.5, 0, -128, 127).tolist() == [-2, -2, 0, 0, 0, 2, 2, 3]


def test_requantize_agrees_with_float_within_one_code_and_saturates():
    rng = np.random.default_rng(1)
    acc = rng.integers(-2**20, 2**20, size=100_000)
    real = 0.00123
    m, s = fixed_point_multiplier(real)
    fixed, floated = requantize(acc, m, s, 3, 0, 255), requantize_float(acc, real, 3, 0, 255)
    assert np.max(np.abs(fixed - floated)) <= 1
    assert fixed.min() == 0 and fixed.max() == 255
    exact = np.clip(np.floor(acc * real + 0.5) + 3, 0, 255)  # away from ties, both equal exact rounding
    far_from_tie = np.abs(acc * real - np.floor(acc * real) - 0.5) > 1e-6
    assert np.array_equal(fixed[far_from_tie], exact[far_from_tie])


def test_integer_only_run_of_a_tiny_graph_matches_onnxruntime():
    model = _qlinear_matmul_model()
    x = np.random.default_rng(2).normal(size=(64, 4)).astype(np.float32)
    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    run = run_integer_only(model, {"x": x}, fixed_point=False)
    assert np.allclose(run.outputs["y"], expected, rtol=0, atol=1e-6)
    fixed = run_integer_only(model, {"x": x})
    assert np.max(np.abs(fixed.outputs["y"] - expected)) <= 0.1 + 1e-6  # at most one output step
    assert [layer.layer for layer in fixed.layers] == ["/fc/MatMul"]
    assert fixed.layers[0].max_multiplier_error <= 2.0**-31


def test_integer_only_run_refuses_float_ops_by_name():
    with pytest.raises(ModelError, match="does not support Softmax"):
        run_integer_only(_qlinear_matmul_model("Softmax"), {"x": np.zeros((1, 4), np.float32)})

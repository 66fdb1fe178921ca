"""Cross-layer equalization: the FP32 function is unchanged up to float rounding, ranges equalize, and
pairs it cannot use are named with the reason."""
import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.methods import MethodContext
from quant_core.methods.cle import apply_cle, find_pairs
from quant_core.methods.graph import Graph
from quant_core.model.model_io import weight_array

from .graphs import conv_chain, data_for, run


def _cle(prepared):
    return apply_cle(prepared, MethodContext(PRESETS["W8A8"], data_for(prepared)))


@pytest.mark.parametrize("between", [("Relu",), ("LeakyRelu",), ("PRelu",), (), ("Relu", "Identity")])
def test_cle_keeps_the_fp32_function(between):
    prepared = conv_chain(between)
    new, report = _cle(prepared)
    data = data_for(prepared)
    before, after = run(prepared, data)[0], run(new, data)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    assert len(report.rows) == 2  # conv1 -> conv2, conv2 -> fc through Relu, MaxPool, Flatten


def test_cle_equalizes_the_per_channel_ranges_of_each_pair():
    prepared = conv_chain()
    new, report = _cle(prepared)
    r1 = np.abs(weight_array(new.model, "w1")).reshape(8, -1).max(axis=1)
    r2 = np.abs(weight_array(new.model, "w2")).max(axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-3)
    assert report.rows[0][3] > 100 and report.rows[0][4] < report.rows[0][3] / 10  # spread before / after
    assert len(report.series) == 4 and len(report.series[0].before) == 8


def test_cle_follows_grouped_convolutions():
    prepared = conv_chain(groups=2)
    new, _ = _cle(prepared)
    data = data_for(prepared)
    np.testing.assert_allclose(run(new, data)[0], run(prepared, data)[0], rtol=1e-4, atol=1e-4)


def test_cle_names_the_pairs_it_cannot_use():
    prepared = conv_chain(("Sigmoid",))
    new, report = _cle(prepared)
    assert ("conv1", "Sigmoid (act0) is not positive-homogeneous") in report.skipped
    assert ("fc", "its output is a model output") in report.skipped
    assert np.array_equal(weight_array(new.model, "w1"), weight_array(prepared.model, "w1"))


def test_cle_does_not_change_the_model_it_is_given():
    prepared = conv_chain()
    kept = prepared.model.SerializeToString()
    _cle(prepared)
    assert prepared.model.SerializeToString() == kept


def test_cle_finds_the_demo_cnn_pairs(demo_prepared):
    pairs, _ = find_pairs(Graph(demo_prepared("cnn")))
    assert [(a.name, b.name, between, repeat) for a, b, between, repeat in pairs] == [
        ("/conv1/Conv", "/conv2/Conv", ("Relu",), 1),
        ("/conv2/Conv", "/fc/Gemm", ("Relu", "MaxPool", "Flatten"), 9)]


def test_partial_equalization_runs_from_the_model_to_cle_and_keeps_the_function():
    from quant_core.methods.cle import partially_equalized
    prepared = conv_chain()
    data = data_for(prepared)
    full, _ = _cle(prepared)
    assert np.array_equal(weight_array(partially_equalized(prepared, 0.0).model, "w1"), weight_array(prepared.model, "w1"))
    np.testing.assert_allclose(weight_array(partially_equalized(prepared, 1.0).model, "w1"),
                               weight_array(full.model, "w1"), rtol=1e-6)
    half = partially_equalized(prepared, 0.5)
    np.testing.assert_allclose(run(half, data)[0], run(prepared, data)[0], rtol=1e-4, atol=1e-4)


def _matmul_chain():
    """x (N, 6) -> MatMul+Add -> Relu -> MatMul (no bias) -> Relu -> Gemm (transB=0) -> y, channels far apart."""
    from onnx import TensorProto, helper, numpy_helper
    from quant_core.model.model_io import prepare_model
    rng = np.random.default_rng(3)
    spread = np.logspace(-2, 1, 5).astype(np.float32)
    init = {"w1": rng.normal(size=(6, 5)).astype(np.float32) * spread, "b1": rng.normal(size=5).astype(np.float32) * spread,
            "w2": rng.normal(size=(5, 4)).astype(np.float32), "w3": rng.normal(size=(4, 3)).astype(np.float32),
            "b3": rng.normal(size=3).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
             helper.make_node("Relu", ["m2"], ["r2"], name="relu2"),
             helper.make_node("Gemm", ["r2", "w3", "b3"], ["y"], name="gemm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(v, k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return prepare_model(model)


def test_cle_on_matmul_add_and_gemm_layers_keeps_the_function_and_equalizes():
    prepared = _matmul_chain()
    new, report = _cle(prepared)
    data = data_for(prepared)
    np.testing.assert_allclose(run(new, data)[0], run(prepared, data)[0], rtol=1e-4, atol=1e-4)
    assert [row[0] for row in report.rows] == ["mm1 -> mm2", "mm2 -> gemm"]
    assert report.rows[0][3] > 1000 and report.rows[0][4] < report.rows[0][3] / 50
    np.testing.assert_allclose(np.abs(weight_array(new.model, "b1")), np.abs(weight_array(prepared.model, "b1"))
                               / (np.abs(weight_array(prepared.model, "w1")).max(axis=0)
                                  / np.abs(weight_array(new.model, "w1")).max(axis=0)), rtol=1e-5)


def test_high_bias_absorption_is_exact_on_the_calibration_data_and_lowers_the_relu_range():
    graph = Graph(conv_chain())
    graph.set_array("b1", graph.array("b1") + 50.0)  # conv1's outputs stay well above 0: high biases
    graph.set_array("b2", graph.array("b2") + 500.0)
    prepared = graph.prepared()
    data = data_for(prepared, count=128)
    context = MethodContext(PRESETS["W8A8"], data)
    equalized, _ = apply_cle(prepared, context)
    absorbed, report = apply_cle(prepared, context, high_bias_absorption=True)
    np.testing.assert_allclose(run(absorbed, data)[0], run(prepared, data)[0], rtol=1e-4, atol=1e-4)
    assert any("high bias absorbed" in line for line in report.changed)
    from quant_core.methods.graph import Probe
    relu_max = [next(Probe(model.model, ("a0",)).run(data, batch_size=128))["a0"].max() for model in (equalized, absorbed)]
    assert relu_max[1] < relu_max[0]


def test_high_bias_absorption_says_where_it_cannot_run():
    prepared = conv_chain(("LeakyRelu",))
    _, report = apply_cle(prepared, MethodContext(PRESETS["W8A8"], data_for(prepared)), high_bias_absorption=True)
    assert ("conv1 -> conv2 (high-bias absorption)",
            "absorption needs a ReLU right after the first layer (then only max pooling / flatten)") in report.skipped

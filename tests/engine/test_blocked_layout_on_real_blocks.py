"""Real conv models run in onnxruntime's blocked (NCHWc) layout in the engine, as they do in onnxruntime.

Real models (OCR, detectors, MobileNets) put a BatchNormalization or a per-channel Mul after a Conv and
build hard-swish from small constants (x * Clip(x + 3, 0, 6) / 6). The engine feeds a config's weights
in the layout onnxruntime gives them by tracing marker weights through its optimizer; that tracing once
failed on every such model (a constant 3.0 or 6.0 was taken for a marker, and a weight folded with the
BatchNormalization was no longer a reordering), so every real conv model ran in the slow plain layout.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.simulate import SimulationSession
from quant_core.model.data import Dataset
from quant_core.model.model_io import prepare_model
from tests.fast_vs_reference import mismatches


def conv_bn_hardswish_model(seed: int = 0):
    """x (N, 3, 16, 16) -> Conv -> BatchNormalization -> hard-swish -> Conv -> Mul(per channel) -> y."""
    rng = np.random.default_rng(seed)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    initializers = [
        const("w0", rng.normal(scale=0.3, size=(16, 3, 3, 3))), const("b0", rng.normal(scale=0.1, size=16)),
        const("bn_scale", rng.uniform(0.5, 1.5, 16)), const("bn_bias", rng.normal(scale=0.1, size=16)),
        const("bn_mean", rng.normal(scale=0.1, size=16)), const("bn_var", rng.uniform(0.5, 1.5, 16)),
        const("three", 3.0), const("zero", 0.0), const("six", 6.0),
        const("w1", rng.normal(scale=0.2, size=(8, 16, 3, 3))), const("scale", rng.uniform(0.5, 2.0, (1, 8, 1, 1))),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c0", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n0"], name="bn0"),
        helper.make_node("Add", ["n0", "three"], ["a0"], name="add3"),
        helper.make_node("Clip", ["a0", "zero", "six"], ["r0"], name="relu6"),
        helper.make_node("Mul", ["n0", "r0"], ["m0"], name="mul"),
        helper.make_node("Div", ["m0", "six"], ["h0"], name="div6"),
        helper.make_node("Conv", ["h0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "scale"], ["y"], name="channel_scale"),
    ]
    graph = helper.make_graph(nodes, "conv_bn_hardswish",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16, 16])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def block():
    prepared = prepare_model(conv_bn_hardswish_model())
    x = np.random.default_rng(1).normal(size=(24, 3, 16, 16)).astype(np.float32)
    return prepared, Dataset({"x": x}, None)


def test_a_conv_block_with_batch_norm_and_hard_swish_runs_in_the_blocked_layout(block):
    prepared, _ = block
    assert SimulationSession(prepared).reordered


def test_its_per_layer_error_session_runs_in_the_blocked_layout_too(block):
    from quant_core.config import PRESETS
    prepared, data = block
    evaluator = Evaluator(prepared, calibrate(prepared, data), data)
    evaluator.layer_errors(PRESETS["W8A8"])
    graphs = [graph for graph in evaluator._error_graphs._data.values() if graph]
    assert graphs and all(graph._reordered for graph in graphs)


def test_every_run_path_of_the_block_equals_the_reference_bit_for_bit(block):
    prepared, data = block
    assert mismatches(Evaluator(prepared, calibrate(prepared, data), data)) == []


def test_markers_stay_distinct_beyond_the_float32_integers(block, monkeypatch):
    """Markers are told apart by their bit patterns, not their values as integers: a run of markers that
    crosses 2**24 (where float32 stops holding every integer) still traces every weight, and the session
    computes the same."""
    import quant_core.engine.simulation_graph as simulation_graph
    prepared, data = block
    fp32 = SimulationSession(prepared).run(data.inputs).outputs[0]
    start = np.array(2.0 ** 24 - 100, dtype=np.float32).view(np.uint32)
    monkeypatch.setattr(simulation_graph, "_MARKER_BITS", int(start))
    session = SimulationSession(prepared)
    assert session.reordered
    assert np.array_equal(session.run(data.inputs).outputs[0], fp32)


def test_a_model_above_the_marker_budget_falls_back_to_the_plain_layout_within_the_reference_tolerance(
        block, monkeypatch):
    """Above the budget the filters are fed in the plain layout, which onnxruntime convolves with other
    kernels than the reference's blocked constants: every path still equals the general session bit for bit,
    and the outputs stay within REFERENCE_SQNR_DB of the reference."""
    import quant_core.engine.simulation_graph as simulation_graph
    prepared, data = block
    monkeypatch.setattr(simulation_graph, "_MAX_MARKERS", 100)
    session = SimulationSession(prepared)
    assert not session.reordered
    assert mismatches(Evaluator(prepared, calibrate(prepared, data), data), exact_reference=False) == []

"""SimulationSession: one onnxruntime session per model; configs change only its feeds."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from quant_core.config import TensorQuant
from quant_core.numerics.formats import parse_format
from quant_core.numerics.quantize import fake_quantize
from quant_core.engine.simulate import ActivationMode, ActivationQuant, SimulationSession


def _ort_qdq(x, scale, zero_point, dtype):
    """onnxruntime's own QuantizeLinear -> DequantizeLinear on x."""
    elem = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("z", elem, [], [zero_point])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _first_layer_input(session, x, params):
    """The first layer's output W q(x) + b when only its input activation is fake-quantized."""
    return session.run({"x": x}, activations={"dense0": params}, with_layer_outputs=True).layer_outputs["dense0"]


@pytest.mark.parametrize("fmt, symmetric", [("uint8", False), ("int8", True), ("int8_narrow", True), ("uint5", False)])
def test_activation_fake_quant_equals_quant_core_fake_quantize_bit_for_bit(chain, fmt, symmetric):
    prepared, data = chain
    session = SimulationSession(prepared)
    x = data.inputs["x"] * 3.0
    x[0, :3] = [0.5 * 0.0234375, 1.5 * 0.0234375, -2.5 * 0.0234375]  # ties: round half to even
    tq = TensorQuant(fmt, symmetric=symmetric)
    params = ActivationQuant.from_range(float(x.min()), float(x.max()), tq)
    expected_x = fake_quantize(x, params.scale, params.zero_point, parse_format(fmt))
    simulated = _first_layer_input(session, x, params)
    reference = session.run({"x": expected_x}, with_layer_outputs=True).layer_outputs["dense0"]
    assert np.array_equal(simulated, reference)


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 131), (np.int8, 0), (np.int8, -7)])
def test_quant_core_fake_quantize_equals_onnxruntime_qdq(dtype, zero_point):
    x = np.random.default_rng(2).normal(scale=4.0, size=4096).astype(np.float32)
    scale = np.float32(0.0371)
    x[:4] = np.float32([0.5, 1.5, 2.5, -0.5]) * scale  # exact ties
    fmt = parse_format("uint8" if dtype == np.uint8 else "int8")
    assert np.array_equal(fake_quantize(x, scale, zero_point, fmt), _ort_qdq(x, scale, zero_point, dtype))


def test_integer_formula_branch_equals_the_quantize_linear_branch(chain):
    prepared, data = chain
    session = SimulationSession(prepared)
    qdq = ActivationQuant.from_range(-2.0, 3.0, TensorQuant("uint8", symmetric=False))
    formula = ActivationQuant(ActivationMode.INTEGER, qdq.scale, qdq.zero_point, qdq.qmin, qdq.qmax)
    assert qdq.mode == ActivationMode.UINT8
    a = session.run(data.inputs, activations={layer: qdq for layer in session.layers}).outputs[0]
    b = session.run(data.inputs, activations={layer: formula for layer in session.layers}).outputs[0]
    assert np.array_equal(a, b)


def test_fp32_feeds_reproduce_the_plain_model(demo_cnn):
    prepared, _, evaluation = demo_cnn
    session = SimulationSession(prepared)
    plain = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = plain.run(None, evaluation.inputs)[0]
    np.testing.assert_allclose(session.run(evaluation.inputs).outputs[0], expected, rtol=0, atol=1e-5)


def test_fed_weights_act_like_rewritten_initializers(chain):
    from onnx import numpy_helper
    prepared, data = chain
    session = SimulationSession(prepared)
    new_weight = (session.fp32_weight("dense1") * 0.5).astype(np.float32)
    model = type(prepared.model)()
    model.CopyFrom(prepared.model)
    for init in model.graph.initializer:
        if init.name == "w1":
            init.CopyFrom(numpy_helper.from_array(new_weight, "w1"))
    rewritten = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, data.inputs)[0]
    simulated = session.run(data.inputs, weights={"dense1": new_weight}).outputs[0]
    np.testing.assert_allclose(simulated, rewritten, rtol=1e-6, atol=1e-6)


def test_float_activation_modes_round_like_a_cast(chain):
    prepared, data = chain
    session = SimulationSession(prepared)
    x = data.inputs["x"]
    fp16 = ActivationQuant.from_range(-1.0, 1.0, TensorQuant("fp16"))
    simulated = session.run({"x": x}, activations={"dense0": fp16}, with_layer_outputs=True).layer_outputs["dense0"]
    reference = session.run({"x": x.astype(np.float16).astype(np.float32)}, with_layer_outputs=True)
    assert np.array_equal(simulated, reference.layer_outputs["dense0"])


def test_fake_quant_on_the_blocked_layout_gives_the_same_outputs_without_the_layout_copies(demo_cnn, monkeypatch):
    import quant_core.engine.simulate as simulate
    from quant_core.engine.simulation_graph import fake_quant_in_blocked_layout as fold

    prepared, _, evaluation = demo_cnn
    folded = SimulationSession(prepared)
    monkeypatch.setattr(simulate, "fake_quant_in_blocked_layout", lambda model: 0)
    plain = SimulationSession(prepared)
    assert folded.reordered and plain.reordered
    params = ActivationQuant.from_range(0.0, 6.0, TensorQuant("uint8", symmetric=False))
    activations = {layer: params for layer in folded.layers}
    for chosen in ({}, activations):
        expected = plain.run(evaluation.inputs, activations=chosen).outputs[0]
        assert np.array_equal(folded.run(evaluation.inputs, activations=chosen).outputs[0], expected)
    # conv1's output reaches conv2's fake-quant in the blocked layout: one ReorderOutput / ReorderInput pair fewer.

    from quant_core.model.layers import layer_specs
    from quant_core.engine.simulation_graph import build_simulation_model, reorder_weight_inputs
    specs = layer_specs(prepared)
    base, _, _ = build_simulation_model(prepared.model, specs, folded.modes, weights_as_inputs=False)
    model, _ = reorder_weight_inputs(base, specs, 1)
    before = [node.op_type for node in model.graph.node].count("ReorderOutput")
    assert fold(model) == 1
    assert [node.op_type for node in model.graph.node].count("ReorderOutput") == before - 1
    assert "ReorderInput" not in [node.op_type for node in model.graph.node]


@pytest.mark.parametrize("fmt, symmetric", [("uint8", False), ("int8", True), ("uint5", False), ("fp16", True),
                                            ("bf16", True), ("fp8_e4m3fn", True)])
def test_a_session_specialized_for_the_activation_modes_gives_the_same_outputs(demo_cnn, fmt, symmetric):
    from quant_core.engine.simulate import SPECIALIZE_AFTER

    prepared, _, evaluation = demo_cnn
    session = SimulationSession(prepared)
    params = ActivationQuant.from_range(0.0, 6.0, TensorQuant(fmt, symmetric=symmetric))
    activations = {layer: params for layer in session.layers[1:]}  # the first layer's input stays float
    general = session.run(evaluation.inputs, activations=activations).outputs[0]  # the If session
    for _ in range(SPECIALIZE_AFTER):
        specialized = session.run(evaluation.inputs, activations=activations).outputs[0]
    assert any(variant is not None for variant in session._patterns.values())  # now built and used
    assert np.array_equal(specialized, general)
    weights_only = session.run(evaluation.inputs).outputs[0]
    for _ in range(SPECIALIZE_AFTER):
        assert np.array_equal(session.run(evaluation.inputs).outputs[0], weights_only)

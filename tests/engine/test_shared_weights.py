"""A layer's weight that another node reads too: quantizing the layer changes that layer only.

The rule (docs/engine.md, "A weight other nodes read too"): a config quantizes a layer's weight *for that
layer*; every other reader of the same initializer (a ReduceSum, a Transpose, a Shape, another layer)
still reads the FP32 weight. The specification below is the original model where each quantized layer
reads its own fake-quantized copy of its weight (`plan.fake_quantized_weight`), run by plain onnxruntime.

Every path must compute it: the Evaluator's general and specialized sessions, its suffix runs and anchors
(`tests.fast_vs_reference.mismatches`), the reference simulator, the per-layer error session, and the
exported model. (Before: the simulation traced the weight into onnxruntime's layout with marker values,
onnxruntime folded `ReduceSum(markers)` into a constant, and FP32 gave 810 where the model gives 9.)
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.plan import fake_quantized_weight
from quant_core.model.data import Dataset
from quant_core.model.model_io import prepare_model
from quant_core.numerics.metrics import ratio_db
from tests.engine.conftest import chain_model
from tests.fast_vs_reference import mismatches, reference


def _chain_with_a_weight_sum() -> onnx.ModelProto:
    """The dense chain, its output plus ReduceSum(w1): w1 is the Gemm `dense1`'s weight and a constant-foldable input."""
    model = chain_model()
    model.graph.node.append(helper.make_node("ReduceSum", ["w1"], ["w1_sum"], name="sum_w1", keepdims=0))
    model.graph.node.append(helper.make_node("Add", ["y", "w1_sum"], ["z"], name="add_sum"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3]))
    return model


def _convolutions_with_weight_readers(seed: int = 0) -> onnx.ModelProto:
    """Two 16-channel convolutions (traced into onnxruntime's NCHWc layout) and a Gemm, plus readers of their
    weights that onnxruntime folds into constants: ReduceSum(conv1's weight), ReduceMax(Transpose(the Gemm's
    weight)) and Shape(conv0's weight), all added to the output."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(scale=0.3, size=(16, 3, 3, 3)).astype(np.float32)
    w1 = rng.normal(scale=0.1, size=(16, 16, 3, 3)).astype(np.float32)
    w2 = rng.normal(scale=0.3, size=(4, 16)).astype(np.float32)
    inits = [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.zeros(16, np.float32), "b0"), numpy_helper.from_array(np.full(4, 0.1, np.float32), "b2")]
    node = helper.make_node
    nodes = [node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1, 1, 1, 1]),
             node("Relu", ["c0"], ["r0"], name="relu0"),
             node("Conv", ["r0", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"], name="relu1"),
             node("GlobalAveragePool", ["r1"], ["pooled"], name="pool"),
             node("Flatten", ["pooled"], ["flat"], name="flatten"),
             node("Gemm", ["flat", "w2", "b2"], ["logits"], name="dense", transB=1),
             node("ReduceSum", ["w1"], ["w1_sum"], name="sum_w1", keepdims=0),
             node("Transpose", ["w2"], ["w2_t"], name="transpose_w2"),
             node("ReduceMax", ["w2_t"], ["w2_max"], name="max_w2", keepdims=0),
             node("Shape", ["w0"], ["w0_shape"], name="shape_w0"),
             node("Cast", ["w0_shape"], ["w0_dims"], name="cast_dims", to=TensorProto.FLOAT),
             node("ReduceSum", ["w0_dims"], ["w0_dims_sum"], name="sum_dims", keepdims=0),
             node("Add", ["logits", "w1_sum"], ["a1"], name="add1"),
             node("Add", ["a1", "w2_max"], ["a2"], name="add2"),
             node("Add", ["a2", "w0_dims_sum"], ["z"], name="add3")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _two_layers_one_weight() -> onnx.ModelProto:
    """x -> Gemm(w) -> Relu -> Gemm(w) -> y: two layers read one initializer."""
    w = np.random.default_rng(3).normal(size=(5, 5)).astype(np.float32)
    node = helper.make_node
    nodes = [node("Gemm", ["x", "w"], ["h"], name="first", transB=1), node("Relu", ["h"], ["r"], name="relu"),
             node("Gemm", ["r", "w"], ["y"], name="second", transB=1)]
    graph = helper.make_graph(nodes, "twice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


MODELS = {"chain + ReduceSum(weight)": (_chain_with_a_weight_sum, (6,)),
          "convolutions + ReduceSum, Transpose, Shape of weights": (_convolutions_with_weight_readers, (3, 8, 8)),
          "two layers, one weight": (_two_layers_one_weight, (5,))}


@pytest.fixture(scope="module", params=list(MODELS))
def shared(request):
    """An Evaluator of the model on 48 samples, 32 of them calibrated."""
    build, shape = MODELS[request.param]
    prepared = prepare_model(build())
    x = np.random.default_rng(1).normal(size=(48, *shape)).astype(np.float32)
    return Evaluator(prepared, calibrate(prepared, Dataset({"x": x[:32]})), Dataset({"x": x}))


def _specification(evaluator: Evaluator, config: QuantConfig, *, layer_outputs: bool = False) -> onnx.ModelProto:
    """The original model where each layer the config quantizes reads its own fake-quantized copy of its
    weight; every other reader reads the FP32 initializer (weights-only configs)."""
    model = onnx.ModelProto()
    model.CopyFrom(evaluator.prepared.model)
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    for entry in evaluator.plan(config).layers:
        assert entry.activation is None, "the specification covers weights-only configs"
        if entry.weight is None:
            continue
        weight = numpy_helper.to_array(initializers[entry.weight_tensor])
        own = f"{entry.layer}/quantized weight"
        model.graph.initializer.append(numpy_helper.from_array(
            fake_quantized_weight(weight, entry.weight, name=entry.layer), own))
        node = nodes[entry.layer]
        node.input[list(node.input).index(entry.weight_tensor)] = own
    if layer_outputs:
        known = {value.name for value in model.graph.output}
        model.graph.output.extend(helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)
                                  for node in model.graph.node if node.name in evaluator.layers
                                  and node.output[0] not in known)
    return model


def _run(model: onnx.ModelProto, evaluator: Evaluator) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(evaluator.feeder.join([tuple(session.run(None, batch)) for batch in evaluator.feeder.batches()]))


def _weights_only_configs(evaluator: Evaluator) -> dict[str, QuantConfig]:
    layers = evaluator.layers
    return {"W4 weight-only per-group": PRESETS["W4 weight-only per-group"],
            "int3 per-channel": QuantConfig(LayerQuant(TensorQuant("int3", granularity="per_channel")), name="int3"),
            "the first layer alone int2": QuantConfig().with_layer(
                layers[0], LayerQuant(TensorQuant("int2", granularity="per_channel")))}


def _close(got, want) -> bool:
    # Weights fed as inputs versus held as constants may sum in another order (docs/engine.md, "Inputs versus
    # constants"): float rounding, where the fault was a difference of hundreds.
    return all(np.allclose(g, w, rtol=1e-4, atol=1e-4) for g, w in zip(got, want))


def test_fp32_is_the_original_model(shared):
    fp32 = _run(shared.prepared.model, shared)
    assert _close(shared.outputs(PRESETS["FP32"]), fp32)
    assert _close(reference(shared, PRESETS["FP32"]), fp32)


def test_a_quantized_layer_leaves_the_other_readers_of_its_weight_fp32(shared):
    for name, config in _weights_only_configs(shared).items():
        expected = _run(_specification(shared, config), shared)
        assert _close(reference(shared, config), expected), name
        assert _close(shared.outputs(config), expected), name


def test_every_run_path_equals_the_reference(shared):
    assert mismatches(shared) == []


def test_per_layer_errors_are_those_of_the_specification(shared):
    fp32 = dict(zip((value.name for value in _specification(shared, PRESETS["FP32"], layer_outputs=True).graph.output),
                    _run(_specification(shared, PRESETS["FP32"], layer_outputs=True), shared)))
    config = _weights_only_configs(shared)["int3 per-channel"]

    def sqnr(model: onnx.ModelProto, layer: str) -> float:
        output = next(node.output[0] for node in model.graph.node if node.name == layer)
        got = dict(zip((value.name for value in model.graph.output), _run(model, shared)))[output].astype(np.float64)
        want = fp32[output].astype(np.float64)
        return ratio_db(float(np.sum(want ** 2)), float(np.sum((want - got) ** 2)))

    whole = _specification(shared, config, layer_outputs=True)
    for error in shared.layer_errors(config):
        alone = _specification(shared, QuantConfig(name="alone").with_layer(error.layer, config.for_layer(error.layer)),
                               layer_outputs=True)
        assert error.accumulated_sqnr_db == pytest.approx(sqnr(whole, error.layer), rel=1e-4, abs=1e-3), error
        assert error.isolated_sqnr_db == pytest.approx(sqnr(alone, error.layer), rel=1e-4, abs=1e-3), error


def test_shared_weights_keep_onnxruntimes_fast_layout(shared):
    """Each layer gets its own copy of a shared weight, so the weights are still traced (NCHWc for convolutions)."""
    assert shared.session.reordered


def test_a_weight_a_foldable_node_reads_is_never_traced_with_markers():
    """Without its own copy, a weight that ReduceSum also reads cannot be traced: onnxruntime would fold the markers."""
    from quant_core.engine.simulate import activation_modes_supported
    from quant_core.engine.simulation_graph import build_simulation_model, own_weight_copies, reorder_weight_inputs
    from quant_core.model.layers import layer_specs
    prepared = prepare_model(_chain_with_a_weight_sum())
    specs = tuple(layer_specs(prepared))
    modes = activation_modes_supported(prepared.model)
    base, _, _ = build_simulation_model(prepared.model, specs, modes, weights_as_inputs=False)
    assert reorder_weight_inputs(base, specs, 1) is None
    owned, owned_specs = own_weight_copies(prepared.model, specs)
    assert [spec.weight for spec in owned_specs] == ["w0", "qlab_sim.own1", "w2"]
    base, _, _ = build_simulation_model(owned, owned_specs, modes, weights_as_inputs=False)
    assert reorder_weight_inputs(base, owned_specs, 1) is not None
    unshared = prepare_model(chain_model())
    assert own_weight_copies(unshared.model, tuple(layer_specs(unshared)))[0] is unshared.model  # nothing copied


def _export_run(evaluator: Evaluator, config: QuantConfig) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    from quant_core.export.ort_export import export_model
    exported = export_model(evaluator.prepared, config, evaluator.calibration)
    model = onnx.load_from_string(exported.model)
    return model, _run(model, evaluator)


def test_the_export_leaves_the_other_readers_of_a_quantized_weight_fp32(shared):
    """onnxruntime's quantizer rewires every reader of a weight to its DequantizeLinear; the export gives the
    readers that are not integer layers the FP32 weight back, so it computes what the simulation computes."""
    original = {init.name: numpy_helper.to_array(init) for init in shared.prepared.model.graph.initializer}
    layers = set(shared.layers)
    for name in ("W8A8", "W8 weight-only"):
        model, outputs = _export_run(shared, PRESETS[name])
        initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        for node in model.graph.node:
            if node.name in layers or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            for tensor in node.input:
                source = next((weight for weight in original if tensor in (weight, f"{weight}.fp32")), None)
                if source is not None:  # a weight read by a node that is not its layer
                    assert np.array_equal(initializers[tensor], original[source]), (name, node.name, tensor)
            assert not any(tensor.endswith("_DequantizeLinear_Output") and tensor.split("_DequantizeLinear")[0]
                           in original for tensor in node.input), (name, node.name, list(node.input))
        if name == "W8 weight-only":
            assert _close(outputs, _run(_specification(shared, PRESETS[name]), shared)), name


def test_a_weight_read_by_an_integer_layer_and_a_weight_only_layer_exports_both():
    """Before, the weight-only layer found its weight rewired to the integer layer's DequantizeLinear output."""
    prepared = prepare_model(_two_layers_one_weight())
    x = np.random.default_rng(2).normal(size=(48, 5)).astype(np.float32)
    evaluator = Evaluator(prepared, calibrate(prepared, Dataset({"x": x[:32]})), Dataset({"x": x}))
    config = PRESETS["W8A8"].with_layer("second", LayerQuant(TensorQuant("int8", granularity="per_channel")))
    model, outputs = _export_run(evaluator, config)
    kinds = {node.op_type for node in model.graph.node}
    assert "DequantizeLinear" in kinds
    # Integer kernels and float rounding of the export against the simulation (docs/export.md): 1e-2 here.
    assert np.allclose(outputs[0], evaluator.outputs(config)[0], atol=1e-2)


def test_two_integer_layers_sharing_a_weight_export_each_its_own_grid():
    """Both Gemms run integer kernels, one with a per-tensor and one with a per-channel int8 weight: each
    gets the grid its config says (before, the override was keyed by the shared weight's name and the last
    layer's grid won, so the first computed on the second's grid)."""
    from onnx import numpy_helper as nh
    prepared = prepare_model(_two_layers_one_weight())
    x = np.random.default_rng(2).normal(size=(48, 5)).astype(np.float32)
    evaluator = Evaluator(prepared, calibrate(prepared, Dataset({"x": x[:32]})), Dataset({"x": x}))
    per_tensor = LayerQuant(TensorQuant("int8", granularity="per_tensor"), TensorQuant("int8"))
    per_channel = LayerQuant(TensorQuant("int8", granularity="per_channel"), TensorQuant("int8"))
    config = QuantConfig(per_tensor).with_layer("second", per_channel)
    model, outputs = _export_run(evaluator, config)
    initializers = {init.name: nh.to_array(init) for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    producers = {output: node for node in model.graph.node for output in node.output}

    def weight_scale(layer: str) -> np.ndarray:
        dequantize = producers[nodes[layer].input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        return initializers[dequantize.input[1]]

    assert weight_scale("first").size == 1 and weight_scale("second").size == 5
    # Integer kernels and float rounding of the export against the simulation (docs/export.md): 1e-2 here.
    assert np.allclose(outputs[0], evaluator.outputs(config)[0], atol=1e-2)
    same = QuantConfig(per_channel)  # one grid for both: the weight stays one initializer, stored once
    shared_model, _ = _export_run(evaluator, same)
    assert sum(1 for init in shared_model.graph.initializer if init.dims == [5, 5]) == 1

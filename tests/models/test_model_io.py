"""Opening untrusted ONNX models: what is refused, what is opened, and the layer inventory it gives."""
import builtins

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.errors import ModelError
from quant_core.model.model_io import (MAX_MODEL_BYTES, MAX_RUNTIME_IR_VERSION, MAX_RUNTIME_OPSET, Layer, ModelInfo,
                                 PreparedModel, WeightRef, inspect_model, load_model, prepare_model, weight_array)
from tests.models import graphs


def open_bytes(model: onnx.ModelProto) -> PreparedModel:
    return prepare_model(load_model(model.SerializeToString()))


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def layer_names(info: ModelInfo) -> list[str]:
    return [layer.name for layer in info.layers]


# --- refused input: one-line ModelError, never a traceback from protobuf ---------------------------------

def test_corrupt_bytes_are_refused():
    with pytest.raises(ModelError, match="not a valid ONNX model") as err:
        load_model(b"\x00\xff" * 100 + b"this is not protobuf")
    assert "\n" not in str(err.value)


def test_truncated_file_is_refused(tmp_path):
    whole = graphs.gemm_model().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ModelError, match="'truncated.onnx'") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_tensor_protobuf_file_is_refused():
    tensor = numpy_helper.from_array(np.arange(6, dtype=np.int64), "t")  # like a model zoo's input_0.pb
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(tensor.SerializeToString())


def test_protobuf_that_parses_but_has_no_graph_is_refused():
    graphless = onnx.ModelProto(ir_version=8, producer_name="not a model")
    with pytest.raises(ModelError, match="is not an ONNX model .it has no ir_version, graph or opset"):
        load_model(graphless.SerializeToString())


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="is empty"):
        load_model(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.onnx")


def test_model_failing_the_onnx_checker_is_refused():
    model = graphs.gemm_model()
    model.graph.node[2].input[1] = "no_such_tensor"
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(model.SerializeToString())


@pytest.mark.parametrize("run_bytes", [1, 200, 16 * 2**20])
def test_file_parsed_piece_by_piece_equals_the_whole_message(tmp_path, monkeypatch, run_bytes):
    monkeypatch.setattr("quant_core.model.onnx_file.PARSE_RUN_BYTES", run_bytes)
    model = graphs.if_model()
    model.doc_string = "a top-level field after the graph"
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert load_model(path) == model


def test_file_truncated_inside_a_field_header_is_refused(tmp_path):
    whole = graphs.gemm_model().SerializeToString()
    for cut in (1, 3, len(whole) - 1):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(whole[:cut])
        with pytest.raises(ModelError, match="corrupt or truncated|not an ONNX model"):
            load_model(path)


def test_oversize_bytes_are_refused_before_parsing():
    data = graphs.gemm_model().SerializeToString()
    with pytest.raises(ModelError, match="over the"):
        load_model(data, max_bytes=len(data) - 1)
    assert isinstance(load_model(data, max_bytes=len(data)), onnx.ModelProto)


def test_oversize_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "big.onnx"
    path.write_bytes(graphs.gemm_model().SerializeToString())
    monkeypatch.setattr("quant_core.model.onnx_file.parse_model_file", lambda path: pytest.fail("the oversize file was read"))
    with pytest.raises(ModelError, match="over the 0 MiB limit"):
        load_model(path, max_bytes=10)


def test_default_size_limit_is_200_mib():
    assert MAX_MODEL_BYTES == 200 * 2**20


def test_external_data_is_refused_without_opening_the_target(tmp_path, monkeypatch):
    target = tmp_path / "secret" / "weights.bin"  # does not exist: any attempt to open it would fail loudly
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(graphs.external_data_model(str(target)).SerializeToString())
    real_open = builtins.open
    opened = []

    def spying_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spying_open)
    with pytest.raises(ModelError, match="external file") as err:
        load_model(model_path)
    assert str(target) in str(err.value)
    assert all("secret" not in name for name in opened)
    assert not target.parent.exists()


def test_external_data_in_a_subgraph_is_refused():
    model = graphs.if_model()
    branch = model.graph.node[1].attribute[0].g
    tensor = branch.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(ModelError, match="external file"):
        load_model(model.SerializeToString())


# --- models that must open ------------------------------------------------------------------------------

def test_demo_style_model_lists_gemm_and_matmul_layers_by_node_name():
    prepared = open_bytes(graphs.gemm_model())
    info = prepared.info
    assert layer_names(info) == ["fc1", "MatMul_2"]
    fc1 = info.layers[0]
    assert fc1 == Layer(name="fc1", op_type="Gemm", weights=(WeightRef("w1", (5, 4), "float32", "initializer"),),
                        inputs=("x", "w1", "b1"), outputs=("h",), params=5 * 4 + 5,
                        bias=WeightRef("b1", (5,), "float32", "initializer"))
    assert fc1.activation_input == "x"
    assert fc1.weight.name == "w1"
    assert info.total_params == 20 + 5 + 15
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("x", ("batch", 4), "float32")]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("y", ("batch", 3), "float32")]
    assert (info.opset, info.producer, info.already_quantized) == (17, "tests", False)


def test_unnamed_nodes_get_stable_generated_names_written_into_the_prepared_model():
    model = graphs.gemm_model()
    first, second = open_bytes(model), open_bytes(model)
    assert [node.name for node in first.model.graph.node] == ["fc1", "Relu_1", "MatMul_2"]
    assert layer_names(first.info) == layer_names(second.info) == layer_names(inspect_model(model))
    assert any("unnamed" in note for note in first.notes)


def test_duplicate_node_names_are_made_unique():
    model = graphs.attention_model()
    for node in model.graph.node:
        node.name = "same"
    assert layer_names(open_bytes(model).info) == ["same", "same_1"]


def test_prepare_model_leaves_its_input_unchanged():
    model = graphs.constant_weight_model()
    before = model.SerializeToString()
    open_bytes(model)
    assert model.SerializeToString() == before


def test_constant_node_weights_move_to_initializers_with_their_names():
    model = graphs.constant_weight_model()
    raw = inspect_model(model).layers[0]
    assert raw.weight.source == "constant" and raw.bias.source == "constant"
    assert raw.params == 2 * 9 + 2
    prepared = open_bytes(model)
    layer = prepared.info.layers[0]
    assert (layer.weight.name, layer.weight.source) == ("conv_w", "initializer")
    assert layer.bias.name == "conv_b"
    assert "Constant" not in [node.op_type for node in prepared.model.graph.node]
    np.testing.assert_array_equal(weight_array(prepared.model, "conv_w"), weight_array(model, "conv_w"))
    x = graphs.weights(2, 1, 4, 4)
    np.testing.assert_array_equal(run(prepared.model, {"x": x})[0], run(model, {"x": x})[0])


@pytest.mark.parametrize("build, opset", [(graphs.opset9_model, 9), (graphs.opset7_model, 7)])
def test_old_opsets_are_converted_to_13_and_compute_the_same(build, opset):
    model = build()
    prepared = open_bytes(model)
    assert prepared.info.opset == 13
    assert any(f"converted from opset {opset} to 13" in note for note in prepared.notes)
    x = graphs.weights(1, 1, 4, 4) if opset == 9 else graphs.weights(1, 4)
    np.testing.assert_allclose(run(prepared.model, {"x": x})[0], run(model, {"x": x})[0], rtol=1e-6)


def test_runtime_limits_match_the_installed_onnxruntime():
    def session_opens(opset, ir_version):
        model = graphs.make([helper.make_node("Relu", ["x"], ["y"])], [graphs.float_input("x", 2)],
                            [graphs.float_input("y", 2)], opset=opset, ir_version=ir_version)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime's load failures have no common type
            return False
        return True

    assert session_opens(MAX_RUNTIME_OPSET, MAX_RUNTIME_IR_VERSION)
    assert not session_opens(MAX_RUNTIME_OPSET + 1, MAX_RUNTIME_IR_VERSION)
    assert not session_opens(MAX_RUNTIME_OPSET, MAX_RUNTIME_IR_VERSION + 1)


def test_opset_newer_than_onnxruntime_runs_is_converted_down():
    model = graphs.make([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], [graphs.float_input("x", "batch", 4)],
                        [graphs.float_input("y", "batch", 2)], [("w", graphs.weights(4, 2))],
                        opset=MAX_RUNTIME_OPSET + 2, ir_version=10)
    prepared = open_bytes(model)
    assert prepared.info.opset == MAX_RUNTIME_OPSET
    assert any("down to" in note for note in prepared.notes)
    x = graphs.weights(3, 4)
    np.testing.assert_allclose(run(prepared.model, {"x": x})[0], x @ weight_array(model, "w"), rtol=1e-6)


def test_ir3_initializers_listed_as_inputs_are_not_model_inputs():
    prepared = open_bytes(graphs.opset7_model())
    assert [tensor.name for tensor in prepared.info.inputs] == ["x"]
    assert [value.name for value in prepared.model.graph.input] == ["x"]
    assert prepared.info.layers[0].weights[0].name == "w"


def test_ir_version_newer_than_onnxruntime_reads_is_lowered():
    model = graphs.gemm_model()
    model.ir_version = 14
    prepared = open_bytes(model)
    assert prepared.model.ir_version == 13
    run(prepared.model, {"x": graphs.weights(2, 4)})


def test_shape_inference_fills_intermediate_value_info():
    prepared = open_bytes(graphs.gemm_model())
    shapes = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in prepared.model.graph.value_info}
    assert shapes["h"] == ["batch", 5]
    assert shapes["r"] == ["batch", 5]


def test_multiple_inputs_with_dynamic_dims_and_int64_tokens():
    info = open_bytes(graphs.multi_input_model()).info
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("tokens", ("batch", "seq"), "int64"), ("features", ("batch", 6), "float32")]
    embedding, projection = info.layers
    assert (embedding.name, embedding.op_type, embedding.weight.shape) == ("embedding", "Gather", (10, 4))
    assert embedding.activation_input == "tokens"
    assert (projection.name, projection.activation_input) == ("proj", "features")


def test_recurrent_state_inputs_and_outputs_and_gru_weights():
    info = open_bytes(graphs.stateful_model()).info
    assert [t.name for t in info.inputs] == ["x", "h0"]
    assert [t.name for t in info.outputs] == ["h1"]
    (gru,) = info.layers
    assert [ref.name for ref in gru.weights] == ["W", "R"]
    assert gru.bias.name == "B"
    assert gru.params == 9 * 2 + 9 * 3 + 18
    assert gru.activation_input == "x"


@pytest.mark.parametrize("build", [graphs.if_model, graphs.loop_model])
def test_control_flow_model_lists_top_level_layers_only(build):
    prepared = open_bytes(build())
    assert layer_names(prepared.info) == ["fc"]
    assert any("2 node(s) inside If/Loop/Scan" in note for note in prepared.info.notes)
    run(prepared.model, {"x": graphs.weights(2, 4), **({"flag": np.array(True)} if build is graphs.if_model
                                                       else {"trip_count": np.array(3, np.int64)})})


def test_model_with_only_a_custom_domain_opens_without_conversion():
    node = helper.make_node("MyOp", ["x"], ["y"], name="custom", domain="org.example")
    graph = helper.make_graph([node], "g", [graphs.float_input("x", 2)], [graphs.float_input("y", 2)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("org.example", 1)], ir_version=8)
    prepared = open_bytes(model)
    assert (prepared.info.opset, prepared.info.layers, prepared.notes) == (0, (), ())


def test_matmul_of_two_activations_is_not_a_layer():
    info = open_bytes(graphs.attention_model()).info
    assert layer_names(info) == ["q_proj", "k_proj"]


def test_weights_computed_at_run_time_are_listed_without_weights():
    info = open_bytes(graphs.constant_of_shape_model()).info
    (matmul,) = info.layers
    assert (matmul.name, matmul.weights, matmul.params) == ("matmul", (), 0)
    assert matmul.note == "no static weights (computed at run time)"
    assert matmul.weight is None
    assert matmul.activation_input == "x"
    assert info.quantizable_layers == ()


@pytest.mark.parametrize("build, ops", [(graphs.qdq_model, ("DequantizeLinear", "QuantizeLinear")),
                                        (graphs.qlinear_model, ("MatMulInteger", "QuantizeLinear"))])
def test_already_quantized_models_are_recognized_and_not_offered(build, ops):
    info = open_bytes(build()).info
    assert info.already_quantized
    assert info.quantized_ops == ops
    assert info.quantizable_layers == ()
    assert any("already quantized" in note for note in info.notes)


def test_qdq_weight_layer_says_its_weight_is_already_quantized():
    (matmul,) = open_bytes(graphs.qdq_model()).info.layers
    assert matmul.weights == ()
    assert "already quantized" in matmul.note


def test_contrib_domain_ops_open():
    model = graphs.make([helper.make_node("FusedMatMul", ["x", "w"], ["y"], name="fused", domain="com.microsoft")],
                        [graphs.float_input("x", "batch", 4)], [graphs.float_input("y", "batch", 2)],
                        [("w", graphs.weights(4, 2))], domains={"com.microsoft": 1})
    info = open_bytes(model).info
    assert info.layers == ()


def test_weight_array_reads_initializers_and_constants_and_names_the_missing():
    model = graphs.constant_weight_model()
    assert weight_array(model, "conv_w").shape == (2, 1, 3, 3)
    gemm = graphs.gemm_model()
    np.testing.assert_array_equal(weight_array(gemm, "w1"), numpy_helper.to_array(gemm.graph.initializer[0]))
    with pytest.raises(ModelError, match="'nope'"):
        weight_array(gemm, "nope")


def test_weight_array_of_a_tensor_whose_data_does_not_fit_its_shape_is_a_model_error():
    model = graphs.gemm_model()
    model.graph.initializer[0].dims[:] = [500, 400]  # 200,000 floats claimed, 20 stored
    with pytest.raises(ModelError, match="tensor 'w1' is corrupt"):
        weight_array(model, "w1")


def test_model_info_layer_lookup_by_name():
    info = open_bytes(graphs.gemm_model()).info
    assert info.layer("fc1").op_type == "Gemm"
    with pytest.raises(ModelError, match="no quantizable layer named 'fc9'"):
        info.layer("fc9")


# --- refused on opening: empty graphs, headers that lie, NaN weights ----------------------------------


def _gemm_model(weight: np.ndarray | None = None) -> onnx.ModelProto:
    weight = np.arange(12, dtype=np.float32).reshape(3, 4) if weight is None else weight
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_graph_with_nodes_but_no_output_is_refused_as_empty():
    model = _gemm_model()
    del model.graph.output[:]
    with pytest.raises(ModelError, match=r"^the uploaded model has an empty graph \(no outputs\)"):
        load_model(model.SerializeToString())


@pytest.mark.parametrize(("dims", "stored"), [((3, 5), "48 bytes"), ((2, 4), "48 bytes"), ((3, 4_000_000_000), "48 bytes")])
def test_raw_data_of_another_size_than_the_dims_declare_is_refused(dims, stored):
    model = _gemm_model()
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend(dims)
    with pytest.raises(ModelError, match=rf"^tensor 'w' is corrupt: its header declares shape \({dims[0]}, {dims[1]}\)"):
        load_model(model.SerializeToString())
    with pytest.raises(ModelError, match=f"but it stores {stored}$"):
        load_model(model.SerializeToString())


def test_a_constant_node_that_lies_about_its_size_is_named():
    model = _gemm_model()
    tensor = numpy_helper.from_array(np.zeros(3, np.float32), "c")
    tensor.dims[0] = 30
    model.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], name="const", value=tensor))
    with pytest.raises(ModelError, match=r"^tensor 'const.value' is corrupt: .* \(30 values, 120 bytes\) but it stores 12"):
        load_model(model.SerializeToString())


def test_nan_in_a_layer_weight_is_named_when_preparing_and_by_weight_array():
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    weight[2, 1] = np.nan
    model = load_model(_gemm_model(weight).SerializeToString())  # opening reads headers and sizes only
    with pytest.raises(ModelError, match=r"^weight 'w' of layer 'fc' holds NaN or Inf values: 1 NaN and 0 Inf out of 12;"):
        prepare_model(model)
    with pytest.raises(ModelError, match=r"^weight 'w' holds NaN or Inf values"):
        weight_array(model, "w")


def test_huge_finite_float64_weights_are_not_mistaken_for_inf():
    model = _gemm_model()
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((3, 4), 1e308), "w"))
    assert np.all(weight_array(model, "w") == 1e308)  # their float64 sum overflows; no value is Inf

"""Tiny onnx.helper models, one per odd case the model loader must open (or refuse)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def make(nodes, inputs, outputs, initializers=(), *, opset: int = 17, ir_version: int = 8,
         domains: dict[str, int] | None = None) -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(value, name) for name, value in initializers]
    if ir_version < 4:  # IR 3 lists every initializer among the graph inputs
        inputs = [*inputs, *(helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in tensors)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=tensors)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(domain, version)
                                                 for domain, version in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests")
    model.ir_version = ir_version  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads up to 13
    onnx.checker.check_model(model)
    return model


def float_input(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def gemm_model() -> onnx.ModelProto:
    """x (batch, 4) -> Gemm (named) -> Relu -> MatMul (unnamed) -> y (batch, 3)."""
    return make(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        [float_input("x", "batch", 4)], [float_input("y", "batch", 3)],
        [("w1", weights(5, 4)), ("b1", weights(5)), ("w2", weights(5, 3))])


def constant_weight_model() -> onnx.ModelProto:
    """Conv whose weight and bias come from Constant nodes (as some exporters write them)."""
    return make(
        [helper.make_node("Constant", [], ["conv_w"], name="w_const",
                          value=numpy_helper.from_array(weights(2, 1, 3, 3))),
         helper.make_node("Constant", [], ["conv_b"], name="b_const", value=numpy_helper.from_array(weights(2))),
         helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        [float_input("x", "batch", 1, 4, 4)], [float_input("y", "batch", 2, 4, 4)])


def opset9_model() -> onnx.ModelProto:
    """An old opset-9 / IR-4 model: Conv -> BatchNormalization -> Flatten -> Gemm."""
    return make(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], name="bn"),
         helper.make_node("Flatten", ["n"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1)],
        [float_input("x", 1, 1, 4, 4)], [float_input("y", 1, 3)],
        [("w", weights(2, 1, 3, 3)), ("gamma", np.ones(2, np.float32)), ("beta", np.zeros(2, np.float32)),
         ("mean", np.zeros(2, np.float32)), ("var", np.ones(2, np.float32)), ("fc_w", weights(3, 8)),
         ("fc_b", weights(3))],
        opset=9, ir_version=4)


def opset7_model() -> onnx.ModelProto:
    """The oldest supported form: opset 7, IR 3, initializers listed among the graph inputs."""
    return make([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")],
                [float_input("x", 1, 4)], [float_input("y", 1, 2)], [("w", weights(4, 2)), ("b", weights(2))],
                opset=7, ir_version=3)


def multi_input_model() -> onnx.ModelProto:
    """Two float inputs with dynamic dims and int64 token ids through an embedding Gather."""
    return make(
        [helper.make_node("Gather", ["table", "tokens"], ["emb"], name="embedding"),
         helper.make_node("ReduceMean", ["emb"], ["pooled"], name="pool", axes=[1], keepdims=0),
         helper.make_node("MatMul", ["features", "proj"], ["projected"], name="proj"),
         helper.make_node("Add", ["pooled", "projected"], ["y"], name="add")],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"]),
         float_input("features", "batch", 6)],
        [float_input("y", "batch", 4)],
        [("table", weights(10, 4)), ("proj", weights(6, 4))], opset=13)


def stateful_model() -> onnx.ModelProto:
    """A GRU step with its hidden state as an input and an output (recurrent state in/out)."""
    hidden = 3
    return make(
        [helper.make_node("GRU", ["x", "W", "R", "B", "", "h0"], ["", "h1"], name="gru", hidden_size=hidden)],
        [float_input("x", "seq", "batch", 2), float_input("h0", 1, "batch", hidden)],
        [float_input("h1", 1, "batch", hidden)],
        [("W", weights(1, 3 * hidden, 2)), ("R", weights(1, 3 * hidden, hidden)), ("B", weights(1, 6 * hidden))])


def if_model() -> onnx.ModelProto:
    """A top-level Gemm, then an If whose branches hold a MatMul each (not listed as layers)."""
    then_branch = helper.make_graph([helper.make_node("MatMul", ["h", "w_then"], ["out"], name="then_matmul")],
                                    "then", [], [float_input("out", "batch", 2)],
                                    initializer=[numpy_helper.from_array(weights(3, 2), "w_then")])
    else_branch = helper.make_graph([helper.make_node("MatMul", ["h", "w_else"], ["out"], name="else_matmul")],
                                    "else", [], [float_input("out", "batch", 2)],
                                    initializer=[numpy_helper.from_array(weights(3, 2), "w_else")])
    return make(
        [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
         helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)],
        [float_input("x", "batch", 4), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [float_input("y", "batch", 2)],
        [("w", weights(4, 3))])


def qdq_model() -> onnx.ModelProto:
    """An already-quantized QDQ model: int8 weight -> DequantizeLinear -> MatMul, plus Q/DQ on the input."""
    return make(
        [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="x_q"),
         helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="x_dq"),
         helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"], name="w_dq"),
         helper.make_node("MatMul", ["xd", "wd"], ["y"], name="matmul")],
        [float_input("x", "batch", 4)], [float_input("y", "batch", 2)],
        [("x_scale", np.float32(0.1)), ("x_zero", np.int8(0)), ("wq", RNG.integers(-127, 128, (4, 2), dtype=np.int8)),
         ("w_scale", np.float32(0.05)), ("w_zero", np.int8(0))], opset=13)


def qlinear_model() -> onnx.ModelProto:
    """An already-quantized QOperator model: QuantizeLinear -> MatMulInteger -> Cast."""
    return make(
        [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="x_q"),
         helper.make_node("MatMulInteger", ["xq", "wq", "x_zero", "w_zero"], ["acc"], name="matmul_int"),
         helper.make_node("Cast", ["acc"], ["y"], name="cast", to=TensorProto.FLOAT)],
        [float_input("x", "batch", 4)], [float_input("y", "batch", 2)],
        [("x_scale", np.float32(0.1)), ("x_zero", np.uint8(128)), ("wq", RNG.integers(0, 256, (4, 2), dtype=np.uint8)),
         ("w_zero", np.uint8(128))], opset=13)


def constant_of_shape_model() -> onnx.ModelProto:
    """A MatMul whose weight is made at run time by ConstantOfShape (no static weight to quantize)."""
    return make(
        [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], name="make_w",
                          value=numpy_helper.from_array(np.array([0.5], np.float32))),
         helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")],
        [float_input("x", "batch", 4)], [float_input("y", "batch", 2)],
        [("w_shape", np.array([4, 2], np.int64))])


def attention_model() -> onnx.ModelProto:
    """q and k projections (MatMul with weights) and their product q @ k^T (two activations: not a layer)."""
    return make(
        [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
         helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
         helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
         helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
         helper.make_node("Softmax", ["scores"], ["y"], name="softmax", axis=-1)],
        [float_input("x", "batch", 5, 4)], [float_input("y", "batch", 5, 5)],
        [("wq", weights(4, 4)), ("wk", weights(4, 4))])


def external_data_model(location: str) -> onnx.ModelProto:
    """A Gemm model whose weight claims to live in an external file at `location`."""
    model = gemm_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "80")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def loop_model() -> onnx.ModelProto:
    """A top-level Gemm, then a Loop applying a MatMul (outer-scope weight) `trip_count` times."""
    body = helper.make_graph(
        [helper.make_node("MatMul", ["state_in", "w_loop"], ["state_out"], name="body_matmul"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), float_input("state_in", "batch", 3)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), float_input("state_out", "batch", 3)])
    return make(
        [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
         helper.make_node("Loop", ["trip_count", "", "h"], ["y"], name="repeat", body=body)],
        [float_input("x", "batch", 4), helper.make_tensor_value_info("trip_count", TensorProto.INT64, [])],
        [float_input("y", "batch", 3)],
        [("w", weights(4, 3)), ("w_loop", weights(3, 3))])

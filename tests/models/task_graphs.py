"""Tiny onnx.helper models with the outputs of each task kind (docs/tasks.md): a CTC recognizer, a
channels-first detector, an embedding model and a model with two outputs."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STEPS, FEATURES, CLASSES = 24, 16, 12


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "task", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def recognizer_model(seed: int = 0) -> onnx.ModelProto:
    """x [N, T, F] -> MatMul -> Relu -> MatMul -> ctc_logits [N, T, C]: a text recognizer's CTC head."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(scale=0.5, size=(FEATURES, 32)).astype(np.float32)
    w1 = rng.normal(scale=0.5, size=(32, CLASSES)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w1"], ["ctc_logits"], name="head")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", STEPS, FEATURES])],
                  [helper.make_tensor_value_info("ctc_logits", TensorProto.FLOAT, ["N", STEPS, CLASSES])],
                  [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])


def detector_model(seed: int = 0) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Conv 3->8 -> Relu -> Conv 8->2 -> scores [N, 2, 8, 8]: a face / non-face head."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(scale=0.4, size=(8, 3, 3, 3)).astype(np.float32)
    w1 = rng.normal(scale=0.4, size=(2, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["h"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w1"], ["scores"], name="conv1")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                  [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2, 8, 8])],
                  [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])


def embedding_model(seed: int = 0) -> onnx.ModelProto:
    """x [N, 16] -> Gemm -> Relu -> Gemm -> sentence_embedding [N, 24]."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(scale=0.5, size=(32, 16)).astype(np.float32)
    w1 = rng.normal(scale=0.5, size=(24, 32)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["h"], name="dense0", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w1"], ["sentence_embedding"], name="dense1", transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                  [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["N", 24])],
                  [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])


def two_output_model() -> onnx.ModelProto:
    """x [N, 16] -> Gemm -> logits [N, 4], and -> Gemm -> pooled_embedding [N, 8]: one model, two outputs."""
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(4, 16)).astype(np.float32)
    w1 = rng.normal(size=(8, 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["logits"], name="classifier", transB=1),
             helper.make_node("Gemm", ["x", "w1"], ["pooled_embedding"], name="projector", transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
                   helper.make_tensor_value_info("pooled_embedding", TensorProto.FLOAT, ["N", 8])],
                  [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])

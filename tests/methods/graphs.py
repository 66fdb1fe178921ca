"""Tiny onnx.helper graphs for the method tests, each with channels of very different ranges."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quant_core.model.data import Dataset
from quant_core.model.model_io import prepare_model


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return prepare_model(model)


def conv_chain(between=("Relu",), groups=1, seed=0):
    """x (N, 2, 6, 6) -> Conv 2->8 -> between... -> Conv 8->4 (groups) -> Relu -> MaxPool -> Flatten -> Gemm 16->3."""
    rng = np.random.default_rng(seed)
    spread = np.logspace(-2, 1, 8).astype(np.float32)  # output channels of conv1 from 0.01 to 10
    w1 = rng.normal(size=(8, 2, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    w2 = rng.normal(size=(4, 8 // groups, 3, 3)).astype(np.float32)
    init = {"w1": w1, "b1": rng.normal(size=8).astype(np.float32) * spread, "w2": w2,
            "b2": rng.normal(size=4).astype(np.float32), "w3": rng.normal(size=(3, 16)).astype(np.float32),
            "b3": rng.normal(size=3).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    tensor = "c1"
    for index, op in enumerate(between):
        extra = []
        if op == "PRelu":
            init["slope"] = np.array([0.1], np.float32)
            extra = ["slope"]
        kwargs = {"alpha": 0.2} if op == "LeakyRelu" else {}
        nodes.append(helper.make_node(op, [tensor, *extra], [f"a{index}"], name=f"act{index}", **kwargs))
        tensor = f"a{index}"
    nodes += [helper.make_node("Conv", [tensor, "w2", "b2"], ["c2"], name="conv2", group=groups),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="fc", transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], init)


def layernorm_mlp(seed=0):
    """x (N, 5, 8) -> LayerNorm -> MatMul+Add (q) and MatMul+Add (k) -> Add -> Erf -> MatMul 6->4 + Add.

    The LayerNorm's scale makes two input channels 30x larger than the rest (activation outliers)."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(8, np.float32)
    gamma[[1, 5]] = 30.0
    init = {"gamma": gamma, "beta": rng.normal(size=8).astype(np.float32) * 0.1,
            "wq": rng.normal(size=(8, 6)).astype(np.float32), "bq": rng.normal(size=6).astype(np.float32),
            "wk": rng.normal(size=(8, 6)).astype(np.float32), "bk": rng.normal(size=6).astype(np.float32),
            "wo": rng.normal(size=(6, 4)).astype(np.float32), "bo": rng.normal(size=4).astype(np.float32)}
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
             helper.make_node("Shape", ["ln"], ["ln_shape"], name="shape"),
             helper.make_node("MatMul", ["ln", "wq"], ["q0"], name="q"),
             helper.make_node("Add", ["q0", "bq"], ["q1"], name="q_add"),
             helper.make_node("MatMul", ["ln", "wk"], ["k0"], name="k"),
             helper.make_node("Add", ["bk", "k0"], ["k1"], name="k_add"),
             helper.make_node("Add", ["q1", "k1"], ["s"], name="sum"),
             helper.make_node("Erf", ["s"], ["e"], name="erf"),
             helper.make_node("MatMul", ["e", "wo"], ["o0"], name="out"),
             helper.make_node("Add", ["o0", "bo"], ["y"], name="out_add")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 4]),
                   helper.make_tensor_value_info("ln_shape", TensorProto.INT64, [3])], init)


def data_for(prepared, count=64, seed=1) -> Dataset:
    rng = np.random.default_rng(seed)
    tensor = prepared.info.inputs[0]
    shape = [count if not isinstance(d, int) else d for d in tensor.shape]
    return Dataset(inputs={tensor.name: rng.normal(size=shape).astype(np.float32)})


def run(prepared, data: Dataset) -> list[np.ndarray]:
    import onnxruntime as ort
    session = ort.InferenceSession(prepared.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, data.inputs)


def layernorm_linear(seed=0, k=64, hidden=32, out=16):
    """x (N, 6, k) -> LayerNorm (4 outlier channels, 20x) -> MatMul k->hidden -> Erf -> MatMul hidden->out.

    Weights large enough for group-wise int4 / int3 to matter; the inputs' channels are correlated
    through the LayerNorm, so GPTQ has something to compensate."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(k, np.float32)
    gamma[[3, 17, 40, 61 % k]] = 20.0
    init = {"gamma": gamma, "beta": rng.normal(size=k).astype(np.float32) * 0.1,
            "w1": rng.normal(size=(k, hidden)).astype(np.float32) * 0.2,
            "w2": rng.normal(size=(hidden, out)).astype(np.float32) * 0.2}
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
             helper.make_node("MatMul", ["ln", "w1"], ["h"], name="fc1"),
             helper.make_node("Erf", ["h"], ["e"], name="erf"),
             helper.make_node("MatMul", ["e", "w2"], ["y"], name="fc2")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, k])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, out])], init)


def correlated_data_for(prepared, count=64, seed=1) -> Dataset:
    """Inputs whose channels share a few latent factors (as real activations do)."""
    rng = np.random.default_rng(seed)
    tensor = prepared.info.inputs[0]
    k = tensor.shape[-1]
    latent = rng.normal(size=(count, tensor.shape[1], 4))
    mixing = rng.normal(size=(4, k))
    x = latent @ mixing + 0.3 * rng.normal(size=(count, tensor.shape[1], k))
    return Dataset(inputs={tensor.name: x.astype(np.float32)})

"""Shared fixtures of the engine tests: the demo CNN calibrated once, and a tiny onnx.helper chain."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.engine.calibrate import calibrate
from quant_core.model.data import Dataset
from quant_core.model.demo import load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.model.model_io import prepare_model


@pytest.fixture(scope="session")
def demo_cnn():
    """(prepared model, calibration split, evaluation split) of the demo CNN and its 797 held-out digits."""
    model_bytes, data = load_demo("cnn")
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    calibration_data = data.subset(np.arange(0, 256))
    evaluation_data = data.subset(np.arange(256, data.num_samples))
    return prepared, calibration_data, evaluation_data


@pytest.fixture(scope="session")
def cnn_evaluator(demo_cnn):
    prepared, calibration_data, evaluation_data = demo_cnn
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data)


def chain_model(widths=(6, 5, 4, 3), seed=0) -> onnx.ModelProto:
    """x (N, widths[0]) -> Gemm -> Relu -> Gemm -> Relu -> Gemm -> y: a chain of three dense layers."""
    rng = np.random.default_rng(seed)
    nodes, initializers, previous = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        weight = rng.normal(size=(n_out, n_in)).astype(np.float32)
        bias = rng.normal(scale=0.1, size=n_out).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        out = "y" if i == len(widths) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [out], name=f"dense{i}", transB=1))
        previous = out
        if out != "y":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            previous = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def chain():
    """(prepared chain model, inputs) with 300 random samples."""
    prepared = prepare_model(chain_model())
    x = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    return prepared, Dataset(inputs={"x": x})

"""Hostile and broken inputs, built by the tests: ONNX models, .npz data and config JSON.

Every builder returns bytes (what an upload or a file holds). The models are small `onnx.helper`
graphs around one Gemm layer named "fc" reading input "x" (batch, 4) and giving "y" (batch, 3), so
the data builders can match or mismatch them on purpose.
"""
from __future__ import annotations

import io
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quant_core.model.demo import DEMO_MODELS

IN_FEATURES, CLASSES = 4, 3


def _float(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes, initializers=(), *, inputs=None, outputs=None, opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "hostile", inputs if inputs is not None else [_float("x", "batch", IN_FEATURES)],
                              outputs if outputs is not None else [_float("y", "batch", CLASSES)],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                              producer_name="hostile-tests")
    model.ir_version = 8
    return model


def gemm_weights(weight: np.ndarray | None = None, bias: np.ndarray | None = None) -> onnx.ModelProto:
    """x (batch, 4) -> Gemm "fc" (transB) -> y (batch, 3), with the given weight (3, 4) and bias (3,)."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(CLASSES, IN_FEATURES)).astype(np.float32) if weight is None else weight
    bias = np.zeros(CLASSES, np.float32) if bias is None else bias
    return _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
                  [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])


def good_model() -> bytes:
    return gemm_weights().SerializeToString()


def demo_bytes(name: str = "cnn") -> bytes:
    return DEMO_MODELS[name].path.read_bytes()


# --- models that are not models -------------------------------------------------------------------

def not_onnx() -> bytes:
    return b"\x89PNG\r\n\x1a\n this is a picture, not a neural network" * 4


def text_file() -> bytes:
    return b"name,accuracy\nresnet,0.76\n"


def truncated() -> bytes:
    data = demo_bytes("cnn")
    return data[: len(data) // 2]


def tensor_proto() -> bytes:
    """Valid protobuf of the wrong message type: an ONNX TensorProto (a .pb weight file)."""
    return numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w").SerializeToString()


def empty_graph() -> bytes:
    """A ModelProto with an opset and IR version but a graph with no nodes, inputs or outputs."""
    model = helper.make_model(helper.make_graph([], "empty", [], []),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def cycle() -> bytes:
    """Two nodes that read each other's output: h = Add(x, g), g = Relu(h)."""
    return _model([helper.make_node("Add", ["x", "g"], ["h"], name="add"),
                   helper.make_node("Relu", ["h"], ["g"], name="relu"),
                   helper.make_node("Identity", ["h"], ["y"], name="out")],
                  outputs=[_float("y", "batch", IN_FEATURES)]).SerializeToString()


def dangling_input() -> bytes:
    """A node reads 'ghost', which no node, input or initializer provides."""
    return _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")],
                  outputs=[_float("y", "batch", IN_FEATURES)]).SerializeToString()


def output_needs_missing_input() -> bytes:
    """The output depends on a second graph input 'mask' that data for 'x' alone does not provide."""
    rng = np.random.default_rng(0)
    return _model([helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
                   helper.make_node("Mul", ["h", "mask"], ["y"], name="mask_mul")],
                  [numpy_helper.from_array(rng.normal(size=(CLASSES, IN_FEATURES)).astype(np.float32), "w"),
                   numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b")],
                  inputs=[_float("x", "batch", IN_FEATURES), _float("mask", "batch", CLASSES)]).SerializeToString()


def custom_domain_op() -> bytes:
    """A Gemm followed by an op from a custom domain nobody implements (com.example.evil::Exfiltrate)."""
    model = gemm_weights()
    model.graph.node[0].output[0] = "h"
    model.graph.node.append(helper.make_node("Exfiltrate", ["h"], ["y"], name="evil", domain="com.example.evil",
                                             target="/etc/passwd"))
    model.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    return model.SerializeToString()


def op_runtime_cannot_run() -> bytes:
    """A standard op onnxruntime has no CPU kernel for: Erf on float64 (the checker accepts it)."""
    model = gemm_weights()
    model.graph.node[0].output[0] = "h"
    model.graph.node.extend([helper.make_node("Cast", ["h"], ["h64"], name="to_double", to=TensorProto.DOUBLE),
                             helper.make_node("Erf", ["h64"], ["e64"], name="erf_double"),
                             helper.make_node("Cast", ["e64"], ["y"], name="to_float", to=TensorProto.FLOAT)])
    return model.SerializeToString()


# --- external data --------------------------------------------------------------------------------

def _point_outside(tensor: onnx.TensorProto, location: str, **extra: str) -> onnx.TensorProto:
    """Make `tensor` claim its data lives in the file `location` (its own data dropped)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), *extra.items()):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _secret_tensor(location: str) -> onnx.TensorProto:
    tensor = onnx.TensorProto()
    tensor.name = "secret"
    tensor.data_type = TensorProto.FLOAT
    tensor.dims.extend([CLASSES])
    return _point_outside(tensor, location)


def external_data(location: str) -> bytes:
    """The Gemm model whose weight 'w' says its data lives in the file `location`."""
    model = gemm_weights()
    _point_outside(model.graph.initializer[0], location, offset="0", length=str(CLASSES * IN_FEATURES * 4))
    return model.SerializeToString()


def external_data_in_constant(location: str) -> bytes:
    """External data hidden in a Constant node's tensor attribute instead of an initializer."""
    model = gemm_weights()
    tensor = onnx.TensorProto()
    tensor.CopyFrom(model.graph.initializer[1])
    _point_outside(tensor, location)
    del model.graph.initializer[1]
    model.graph.node.insert(0, helper.make_node("Constant", [], ["b"], name="bias_const", value=tensor))
    return model.SerializeToString()


def external_data_in_function(location: str) -> bytes:
    """External data inside a model-local function's Constant node (not in the main graph)."""
    model = gemm_weights()
    tensor = _secret_tensor(location)
    function = helper.make_function(
        "local.fn", "AddSecret", ["a"], ["out"],
        [helper.make_node("Constant", [], ["s"], value=tensor), helper.make_node("Add", ["a", "s"], ["out"])],
        opset_imports=[helper.make_opsetid("", 17)])
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local.fn", 1))
    model.graph.node[0].output[0] = "h"
    model.graph.node.append(helper.make_node("AddSecret", ["h"], ["y"], name="add_secret", domain="local.fn"))
    return model.SerializeToString()


def external_data_in_training(location: str) -> bytes:
    """External data inside a training_info initialization graph (not in the inference graph)."""
    model = gemm_weights()
    tensor = _secret_tensor(location)
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[tensor]))
    training.algorithm.CopyFrom(helper.make_graph([], "algorithm", [], []))
    return model.SerializeToString()


# --- weights --------------------------------------------------------------------------------------

def nan_weights() -> bytes:
    weight = np.random.default_rng(0).normal(size=(CLASSES, IN_FEATURES)).astype(np.float32)
    weight[1, 2] = np.nan
    return gemm_weights(weight).SerializeToString()


def inf_weights() -> bytes:
    weight = np.random.default_rng(0).normal(size=(CLASSES, IN_FEATURES)).astype(np.float32)
    weight[0, 0] = np.inf
    return gemm_weights(weight).SerializeToString()


def zero_weights() -> bytes:
    return gemm_weights(np.zeros((CLASSES, IN_FEATURES), np.float32)).SerializeToString()


def constant_weights() -> bytes:
    return gemm_weights(np.full((CLASSES, IN_FEATURES), 0.25, np.float32)).SerializeToString()


def one_element_weight() -> bytes:
    """x (batch, 1) -> MatMul with a (1, 1) weight -> y (batch, 1)."""
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="scale")],
                  [numpy_helper.from_array(np.array([[0.5]], np.float32), "w")],
                  inputs=[_float("x", "batch", 1)], outputs=[_float("y", "batch", 1)]).SerializeToString()


def big_model(megabytes: float) -> bytes:
    """A valid model with one weight of about `megabytes` MiB (a MatMul (n, 4))."""
    rows = int(megabytes * 2**20 / 16)
    weight = np.zeros((rows, 4), np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="big")], [numpy_helper.from_array(weight, "w")],
                  inputs=[_float("x", "batch", rows)], outputs=[_float("y", "batch", 4)]).SerializeToString()


# --- data -----------------------------------------------------------------------------------------

def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def good_data(samples: int = 64, *, name: str = "x") -> bytes:
    rng = np.random.default_rng(1)
    return npz(**{name: rng.normal(size=(samples, IN_FEATURES)).astype(np.float32),
                  "labels": rng.integers(0, CLASSES, size=samples).astype(np.int64)})


class Pickled:
    """Unpickling this runs code: if it ever happens, the marker file appears."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_data(marker: str | os.PathLike) -> bytes:
    """An .npz whose 'x' is an object array that would create `marker` if unpickled."""
    Pickled.marker = os.fspath(marker)
    payload = np.empty(2, dtype=object)
    payload[0], payload[1] = Pickled(), Pickled()
    buffer = io.BytesIO()
    np.savez(buffer, x=payload)
    return buffer.getvalue()


def digits_like(samples: int = 40, *, dtype=np.float32, shape=(1, 8, 8), labels=None, nan=False) -> bytes:
    """Data for the demo models' input 'image' (batch, 1, 8, 8) float32, broken as asked."""
    rng = np.random.default_rng(2)
    image = rng.random(size=(samples, *shape)).astype(dtype)
    if nan:
        image[3, 0, 0, 0] = np.nan
    arrays = {"image": image}
    if labels is not None:
        arrays["labels"] = labels
    return npz(**arrays)


# --- configs --------------------------------------------------------------------------------------

def config_json(default: dict | None = None, layers: dict | None = None) -> bytes:
    import json

    return json.dumps({"name": "hostile", "default": default or {"weights": None, "activations": None},
                       "layers": layers or {}}).encode()


def lying_header() -> bytes:
    """The Gemm model whose weight header claims (3, 4e9) elements while its data holds 12."""
    model = gemm_weights()
    weight = model.graph.initializer[0]
    del weight.dims[:]
    weight.dims.extend([CLASSES, 4_000_000_000])
    return model.SerializeToString()

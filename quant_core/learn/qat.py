"""Quantization-aware fine-tuning of a small MLP, in numpy (for the Learn page).

The network is the demo MLP's shape: Flatten → Gemm → ReLU → ... → Gemm. Training fake-quantizes
every weight matrix in the forward pass (per output channel, symmetric, with the lab's one
`fake_quantize`), and the backward pass uses the straight-through estimator: the gradient with
respect to the fake-quantized weight is applied to the float weight as if rounding were the
identity. Biases stay float: onnxruntime stores them as int32 with scale = input scale x weight scale,
fine enough to count as float here.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from quant_core.errors import ConfigError, DataError, ModelError
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat
from quant_core.model.model_io import load_model, weight_array
from quant_core.numerics.qparams import qparams_from_range
from quant_core.numerics.quantize import fake_quantize, tensor_range

Progress = Callable[[float, str], None]

MIN_QAT_BITS, MAX_QAT_BITS = 2, 8


@dataclass(frozen=True)
class Dense:
    """One Gemm layer as `y = x @ weight.T + bias`; weight is (out_features, in_features)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class QatResult:
    """Fine-tuned float weights (to be fake-quantized at `bits`) and the mean loss of each epoch."""

    weights: tuple[Dense, ...]
    losses: tuple[float, ...]
    bits: int | None
    epochs: int
    seconds: float


def mlp_weights(model: onnx.ModelProto | bytes) -> tuple[Dense, ...]:
    """Read the Gemm layers of a Flatten → Gemm → ReLU → ... → Gemm ONNX model, in graph order."""
    if isinstance(model, (bytes, bytearray)):
        model = load_model(bytes(model))
    initializers = {tensor.name for tensor in model.graph.initializer}
    layers, expect = [], ("Flatten", "Gemm")
    for node in model.graph.node:
        if node.op_type not in expect:
            raise ModelError(
                "quantization-aware training needs a Flatten → Gemm → ReLU → ... → Gemm network; "
                f"node {node.name!r} is a {node.op_type}, expected {' or '.join(expect)}")
        if node.op_type == "Gemm":
            layers.append(_dense(node, initializers, model))
            expect = ("Relu",)
        elif node.op_type == "Relu":
            expect = ("Gemm",)
        else:
            expect = ("Gemm",)
    if not layers or expect != ("Relu",):
        raise ModelError("quantization-aware training needs a network that ends with a Gemm layer")
    for previous, layer in zip(layers, layers[1:]):
        if previous.weight.shape[0] != layer.weight.shape[1]:
            raise ModelError(f"layer {layer.name!r} expects {layer.weight.shape[1]} inputs but "
                             f"{previous.name!r} gives {previous.weight.shape[0]}")
    return tuple(layers)


def _dense(node: onnx.NodeProto, initializers: set[str], model: onnx.ModelProto) -> Dense:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0:
        raise ModelError(f"Gemm {node.name!r}: only transA=0, alpha=1, beta=1 is supported for training")
    if len(node.input) < 3 or node.input[1] not in initializers or node.input[2] not in initializers:
        raise ModelError(f"Gemm {node.name!r} needs a constant weight and bias (ONNX initializers)")
    weight = weight_array(model, node.input[1]).astype(np.float32)
    if not attributes.get("transB", 0):
        weight = weight.T  # stored (in, out): make it (out, in), one row per output channel
    bias = np.broadcast_to(weight_array(model, node.input[2]).astype(np.float32), (weight.shape[0],))
    return Dense(node.name, np.ascontiguousarray(weight), np.array(bias))


def weight_format(bits: int) -> NumberFormat:
    """The format QAT trains for: signed `bits`-wide integers (symmetric, per output channel)."""
    return NumberFormat(FormatKind.INT, bits)


def quantized_weight(weight: np.ndarray, bits: int | None) -> np.ndarray:
    """Fake-quantize a (out, in) weight per output channel, symmetric; `bits=None` keeps it float."""
    if bits is None:
        return weight
    fmt = weight_format(bits)
    lo, hi = tensor_range(weight, granularity=Granularity.PER_CHANNEL, axis=0, name="weight")
    scale, zero_point = qparams_from_range(lo, hi, fmt, symmetric=True)
    return fake_quantize(weight, scale, zero_point, fmt, axis=0, name="weight")


def forward(weights: tuple[Dense, ...], x: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Return the logits of the MLP on a batch `x` (flattened to (batch, features))."""
    h = x.reshape(len(x), -1).astype(np.float32, copy=False)
    for i, layer in enumerate(weights):
        h = h @ quantized_weight(layer.weight, bits).T + layer.bias
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def evaluate_numpy_mlp(weights: tuple[Dense, ...], data, bits: int | None = None) -> float:
    """Return the top-1 accuracy of the MLP on a labelled dataset, with weights fake-quantized to `bits`."""
    x, labels = _examples(data, weights)
    return float(np.mean(np.argmax(forward(weights, x, bits), axis=1) == labels))


def fine_tune_qat(weights: tuple[Dense, ...], train, *, bits: int | None, epochs: int = 20, lr: float = 1e-3,
                  seed: int = 0, batch_size: int = 32, progress: Progress | None = None) -> QatResult:
    """Fine-tune float weights so that they work well once fake-quantized to `bits` (Adam, cross-entropy).

    Forward: y = x @ fake_quantize(W).T + b at every step (per-channel symmetric int`bits`).
    Backward (straight-through estimator): dL/dW := dL/dfake_quantize(W).
    The shuffling order depends only on `seed`, so a run is reproducible.
    `progress(fraction, text)` is called after every epoch. `bits=None` fine-tunes in plain float: the
    control that tells how much of QAT's gain comes from the extra training data alone.
    """
    if bits is not None and not MIN_QAT_BITS <= int(bits) <= MAX_QAT_BITS:
        raise ConfigError(f"bits must be between {MIN_QAT_BITS} and {MAX_QAT_BITS}, got bits={bits}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"epochs, batch_size and lr must be positive, got epochs={epochs}, "
                          f"batch_size={batch_size}, lr={lr}")
    x, labels = _examples(train, weights)

    params = [p.copy() for layer in weights for p in (layer.weight, layer.bias)]
    adam = _Adam(params, lr)
    rng = np.random.default_rng(seed)
    losses = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for begin in range(0, len(x), batch_size):
            batch = order[begin:begin + batch_size]
            loss, grads = _loss_and_gradients(params, x[batch], labels[batch], bits)
            adam.step(params, grads)
            total += loss * len(batch)
        losses.append(total / len(x))
        if progress is not None:
            progress((epoch + 1) / epochs, f"{_label(bits)}: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    tuned = tuple(Dense(layer.name, params[2 * i], params[2 * i + 1]) for i, layer in enumerate(weights))
    return QatResult(tuned, tuple(losses), bits, int(epochs), time.perf_counter() - start)


def _label(bits: int | None) -> str:
    return "FP32 fine-tuning" if bits is None else f"{bits}-bit QAT"


def _loss_and_gradients(params: list[np.ndarray], x: np.ndarray, labels: np.ndarray, bits: int | None):
    """Mean cross-entropy of a batch and its gradients for [W0, b0, W1, b1, ...] (STE through rounding)."""
    n_layers = len(params) // 2
    activations, quantized = [x], []
    h = x
    for i in range(n_layers):
        w_q = quantized_weight(params[2 * i], bits)
        quantized.append(w_q)
        h = h @ w_q.T + params[2 * i + 1]
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
            activations.append(h)
    logits = h - h.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(-np.mean(np.log(probabilities[rows, labels] + 1e-12)))

    grads = [None] * len(params)
    delta = probabilities
    delta[rows, labels] -= 1.0
    delta /= len(labels)
    for i in reversed(range(n_layers)):
        grads[2 * i] = delta.T @ activations[i]  # straight through: d fake_quantize(W) / dW := 1
        grads[2 * i + 1] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ quantized[i]) * (activations[i] > 0)
    return loss, grads


class _Adam:
    """Adam (Kingma & Ba 2015) with the paper's defaults beta1=0.9, beta2=0.999, eps=1e-8."""

    def __init__(self, params: list[np.ndarray], lr: float):
        self.lr, self.t = lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.t += 1
        correction = np.sqrt(1 - 0.999**self.t) / (1 - 0.9**self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            p -= (self.lr * correction) * m / (np.sqrt(v) + 1e-8)


def _examples(data, weights: tuple[Dense, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return (x flattened to (samples, features) float32, labels int64), checked against the MLP."""
    labels = getattr(data, "labels", None)
    if labels is None:
        raise DataError("quantization-aware training needs labelled data (an .npz with a 'labels' array)")
    if len(data.inputs) != 1:
        raise DataError(f"the MLP takes one input, the data has {len(data.inputs)}: {sorted(data.inputs)}")
    x = np.asarray(next(iter(data.inputs.values())), dtype=np.float32)
    x = x.reshape(len(x), -1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    features, classes = weights[0].weight.shape[1], weights[-1].weight.shape[0]
    if x.shape[1] != features:
        raise DataError(f"the data has {x.shape[1]} features per example, the model expects {features}")
    if len(labels) != len(x) or labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"labels must be one class index in [0, {classes - 1}] per example")
    return x, labels

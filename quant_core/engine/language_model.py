"""Weight-only quantization of a language model end to end: calibration inputs per layer, a method
applied to every MatMul weight, the simulated model, perplexity, and greedy generation.

The methods (quant_core.numerics.weight_only) are per-weight functions; this module feeds them what they need
from a model: each MatMul layer's calibration inputs (GPTQ's Hessian, AWQ's mean |x| and a sample of
rows), collected in one onnxruntime pass. `WeightOnlySpec` is the plain-data choice (method, bits,
block size, symmetry) a config's "methods" entry maps to (`WeightOnlySpec.from_dict`).

Tokens are bytes: the shipped model's vocabulary is the 128 ASCII codes (`encode`, `decode`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from quant_core.errors import ConfigError, DataError, ModelError
from quant_core.numerics.metrics import mean_cross_entropy
from quant_core.numerics.weight_only import BITS, BLOCK_SIZES, GroupQuantized, WeightOnlyMethod, quantize_weight

SAMPLE_ROWS = 2048       # calibration rows kept per layer for AWQ's search (the Hessian uses every row)
RUN_BATCH = 32           # windows per onnxruntime run


@dataclass(frozen=True)
class WeightOnlySpec:
    """One weight-only choice: a method, a bit width, a group size along K, symmetric or not."""

    method: WeightOnlyMethod = WeightOnlyMethod.RTN
    bits: int = 4
    block_size: int = 32
    symmetric: bool = True

    def __post_init__(self):
        try:
            object.__setattr__(self, "method", WeightOnlyMethod(self.method))
        except ValueError:
            raise ConfigError(f"unknown weight-only method {self.method!r}: expected one of "
                              f"{', '.join(m.value for m in WeightOnlyMethod)}") from None
        if self.bits not in BITS:
            raise ConfigError(f"weight-only bits must be one of {', '.join(map(str, BITS))}, got {self.bits!r}")
        if self.block_size not in BLOCK_SIZES:
            raise ConfigError(f"weight-only group size must be one of {', '.join(map(str, BLOCK_SIZES))}, "
                              f"got {self.block_size!r}")
        if not isinstance(self.symmetric, bool):
            raise ConfigError(f"symmetric must be true or false, got {self.symmetric!r}")

    @property
    def label(self) -> str:
        return f"{self.method.value.upper()} int{self.bits} g{self.block_size} {'sym' if self.symmetric else 'asym'}"

    @property
    def needs_calibration(self) -> bool:
        return self.method in (WeightOnlyMethod.GPTQ, WeightOnlyMethod.AWQ)

    def to_dict(self) -> dict:
        return {"method": self.method.value, "bits": self.bits, "block_size": self.block_size,
                "symmetric": self.symmetric}

    @classmethod
    def from_dict(cls, data) -> WeightOnlySpec:
        """A "methods" entry: {"method": "gptq", "bits": 4, "block_size": 32, "symmetric": true} or "gptq"."""
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, dict):
            raise ConfigError(f"a weight-only method must be a name or an object, got {data!r}")
        unknown = set(data) - {"method", "bits", "block_size", "symmetric"}
        if unknown:
            raise ConfigError(f"unknown weight-only keys {sorted(unknown)}; expected method, bits, block_size, "
                              "symmetric")
        return cls(**data)


# -- tokens -----------------------------------------------------------------------------------------

def encode(text: str, *, vocab: int = 128) -> np.ndarray:
    """Return text as int64 token ids (bytes); characters outside the vocabulary are refused in one line."""
    ids = np.frombuffer(text.encode("utf-8", errors="replace"), dtype=np.uint8).astype(np.int64)
    if ids.size and ids.max() >= vocab:
        bad = next(ch for ch in text if len(ch.encode("utf-8")) > 1 or ord(ch) >= vocab)
        raise DataError(f"the prompt holds {bad!r}, outside the model's vocabulary of {vocab} byte values "
                        "(ASCII): write it without that character")
    return ids


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("ascii", errors="replace")


# -- layers and their calibration inputs -----------------------------------------------------------

def matmul_layers(model: onnx.ModelProto) -> dict[str, str]:
    """Return {node name: weight name} of the MatMul nodes whose second input is a 2-D float initializer."""
    initializers = {init.name: init for init in model.graph.initializer}
    layers = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in initializers:
            init = initializers[node.input[1]]
            if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT:
                layers[node.name] = node.input[1]
    return layers


@dataclass
class LayerInputs:
    """What the methods need of one layer's calibration inputs x [rows, K]."""

    hessian: np.ndarray        # 2 x^T x / rows (float64 [K, K]), GPTQ
    mean_abs: np.ndarray       # mean |x| per input channel [K], AWQ
    sample: np.ndarray         # a seeded sample of rows [<= SAMPLE_ROWS, K], AWQ's search
    rows: int


def inference_session(model: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def collect_layer_inputs(model: onnx.ModelProto, tokens: np.ndarray, *, layers=None, threads: int = 1,
                         seed: int = 0) -> dict[str, LayerInputs]:
    """Run the FP32 model on `tokens` [N, T] once and return each MatMul layer's input statistics."""
    layers = matmul_layers(model) if layers is None else layers
    names = {node.name: node.input[0] for node in model.graph.node if node.name in layers}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for tensor in dict.fromkeys(names.values()):
        if tensor not in outputs:
            probe.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = inference_session(probe, threads)
    input_name = session.get_inputs()[0].name
    sums, abs_sums, samples, rows = {}, {}, {n: [] for n in names}, 0
    rng = np.random.default_rng(seed)
    total_rows = int(np.prod(tokens.shape))
    keep = min(1.0, SAMPLE_ROWS / max(total_rows, 1))
    for start in range(0, len(tokens), RUN_BATCH):
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, {input_name: tokens[start:start + RUN_BATCH]})))
        batch_rows = None
        chosen = None
        for layer, tensor in names.items():
            x = values[tensor].reshape(-1, values[tensor].shape[-1])
            if chosen is None:
                batch_rows = len(x)
                chosen = rng.random(batch_rows) < keep
            # float32 products per batch (BLAS speed), summed over batches in float64
            sums[layer] = sums.get(layer, 0) + (x.T @ x).astype(np.float64)
            abs_sums[layer] = abs_sums.get(layer, 0) + np.abs(x).sum(axis=0, dtype=np.float64)
            samples[layer].append(x[chosen])
        rows += batch_rows
    return {layer: LayerInputs(2.0 * sums[layer] / rows, (abs_sums[layer] / rows).astype(np.float32),
                               np.concatenate(samples[layer])[:SAMPLE_ROWS], rows) for layer in names}


# -- quantizing the weights -------------------------------------------------------------------------

@dataclass
class QuantizedWeights:
    """Every quantized layer's GroupQuantized (by node name), with the spec and the time it took."""

    spec: WeightOnlySpec
    layers: dict[str, GroupQuantized]
    weights: dict[str, str]                    # node name -> weight initializer name
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)

    def storage_bytes(self) -> int:
        return sum(q.storage_bytes() for q in self.layers.values())


def quantize_weights(model: onnx.ModelProto, spec: WeightOnlySpec, inputs: dict[str, LayerInputs] | None = None,
                     *, layers=None) -> QuantizedWeights:
    """Quantize every MatMul weight of `model` (or those of `layers`: node → weight) with `spec`."""
    layers = matmul_layers(model) if layers is None else layers
    if spec.needs_calibration and inputs is None:
        raise ConfigError(f"{spec.method.value.upper()} needs calibration inputs: pass collect_layer_inputs(...)")
    arrays = {init.name: init for init in model.graph.initializer}
    started = time.perf_counter()
    done = {}
    for layer, weight in layers.items():
        w = numpy_helper.to_array(arrays[weight])
        stats = None if inputs is None else inputs[layer]
        done[layer] = quantize_weight(
            w, spec.method, bits=spec.bits, block_size=spec.block_size, symmetric=spec.symmetric,
            inputs=None if stats is None else stats.sample,
            h=None if stats is None or spec.method != WeightOnlyMethod.GPTQ else stats.hessian)
    return QuantizedWeights(spec, done, dict(layers), time.perf_counter() - started)


def simulated_model(model: onnx.ModelProto, quantized: QuantizedWeights) -> onnx.ModelProto:
    """Return a copy of `model` whose quantized weights hold their effective float values (the simulation)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readers: dict[str, list[str]] = {}
    for node in out.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.name)
    replaced = {}
    for layer, weight in quantized.weights.items():
        if layer in quantized.layers:
            if len(readers.get(weight, ())) > 1:
                raise ModelError(f"weight {weight!r} is read by several nodes ({', '.join(readers[weight])}): "
                                 "weight-only methods quantize a weight read by one layer")
            replaced[weight] = quantized.layers[layer].effective_weight()
    for init in out.graph.initializer:
        if init.name in replaced:
            init.CopyFrom(numpy_helper.from_array(replaced[init.name], init.name))
    return out


# -- running it -------------------------------------------------------------------------------------

def model_logits(model: onnx.ModelProto | ort.InferenceSession, tokens: np.ndarray, *,
                 threads: int = 1) -> np.ndarray:
    """Return the logits of `tokens` [N, T] (a model or an open session), in batches of RUN_BATCH."""
    session = model if isinstance(model, ort.InferenceSession) else inference_session(model, threads)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: tokens[i:i + RUN_BATCH]})[0]
                           for i in range(0, len(tokens), RUN_BATCH)])


def model_perplexity(model, tokens: np.ndarray, labels: np.ndarray, *, threads: int = 1) -> float:
    """Return exp(mean cross-entropy) of the next-token `labels` under the model's logits on `tokens`."""
    return float(np.exp(mean_cross_entropy(model_logits(model, tokens, threads=threads), labels)))


def greedy_continuation(session: ort.InferenceSession, prompt: np.ndarray, steps: int, *, context: int) -> np.ndarray:
    """Return `steps` tokens generated greedily (argmax) after `prompt`, one run per token.

    The window is the last `context` tokens, left-aligned and padded with spaces (token 32) on the
    right; the logits of the last real position choose the next token. Deterministic: no sampling.
    """
    name = session.get_inputs()[0].name
    ids = [int(i) for i in prompt] or [ord("\n")]
    for _ in range(steps):
        window = ids[-context:]
        feed = np.full((1, context), ord(" "), dtype=np.int64)
        feed[0, :len(window)] = window
        logits = session.run(None, {name: feed})[0]
        ids.append(int(np.argmax(logits[0, len(window) - 1])))
    return np.array(ids[len(prompt) or 1:], dtype=np.int64)


# -- one weight-only choice, measured ---------------------------------------------------------------

@dataclass(frozen=True)
class WeightOnlyResult:
    """A weight-only choice on a language model: perplexity beside FP32's, weight bytes, time to quantize."""

    spec: WeightOnlySpec
    fp32_perplexity: float
    perplexity: float
    fp32_weight_bytes: int       # the quantized layers' weights at FP32
    weight_bytes: int            # the same weights quantized (packed integers, scales, zero points)
    seconds: float               # time to quantize (calibration statistics excluded)

    @property
    def perplexity_increase(self) -> float:
        return self.perplexity - self.fp32_perplexity


def fp32_weight_bytes(model: onnx.ModelProto, layers=None) -> int:
    layers = matmul_layers(model) if layers is None else layers
    sizes = {init.name: int(np.prod(init.dims)) * 4 for init in model.graph.initializer}
    return sum(sizes[weight] for weight in set(layers.values()))


def measure_weight_only(model: onnx.ModelProto, spec: WeightOnlySpec, tokens: np.ndarray, labels: np.ndarray, *,
                        inputs: dict[str, LayerInputs] | None = None, fp32_perplexity: float | None = None,
                        threads: int = 1) -> tuple[WeightOnlyResult, onnx.ModelProto]:
    """Quantize every MatMul weight with `spec`, return its result on (tokens, labels) and the simulated model."""
    quantized = quantize_weights(model, spec, inputs)
    simulated = simulated_model(model, quantized)
    if fp32_perplexity is None:
        fp32_perplexity = model_perplexity(model, tokens, labels, threads=threads)
    result = WeightOnlyResult(spec, fp32_perplexity, model_perplexity(simulated, tokens, labels, threads=threads),
                              fp32_weight_bytes(model, quantized.weights), quantized.storage_bytes(),
                              quantized.seconds)
    return result, simulated


def largest_matmul_weight(model: onnx.ModelProto) -> tuple[str, np.ndarray] | None:
    """Return (node name, weight [K, N]) of the MatMul or Gemm with the most weight values, or None.

    A Gemm with transB = 1 stores its weight [N, K]: it is returned transposed, inputs first.
    """
    initializers = {init.name: init for init in model.graph.initializer}
    best = None
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in initializers:
            init = initializers[node.input[1]]
            if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT:
                size = int(np.prod(init.dims))
                if best is None or size > best[0]:
                    best = (size, node, init)
    if best is None:
        return None
    _, node, init = best
    weight = numpy_helper.to_array(init).astype(np.float32)
    trans_b = next((attr.i for attr in node.attribute if attr.name == "transB"), 0)
    return node.name, (weight.T.copy() if node.op_type == "Gemm" and trans_b else weight)

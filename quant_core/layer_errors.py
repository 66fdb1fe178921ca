"""Per-layer errors of a config: isolated (that layer alone quantized) and accumulated (the whole config).

Both are an SQNR at the layer's output, signal and noise powers summed over the evaluation split in
float64 (`metrics.ratio_db`, the one SQNR formula):

    accumulated(layer) = ratio_db(sum |y_fp32|^2, sum |y_fp32 - y_config|^2)       y: the layer's output
    isolated(layer)    = ratio_db(sum |y_fp32|^2, sum |y_fp32 - y_layer_alone|^2)

`reference_layer_sqnr` is the definition: one whole-model run per batch with the quantized feeds, so
the isolated error of L layers costs L whole-model runs. `LayerErrorRuns.measure` is the fast path, per
batch: one FP32 run of the simulation session capturing every layer's output and the tensors its node
reads, one run of the config capturing every layer output (accumulated), then, for each layer whose
isolated error is asked, that layer's node alone (`LayerAlone`) fed its captured FP32 inputs, the same
fake-quant subgraph as the whole session and the quantized weight (isolated). Nothing is kept per
sample: only float64 sums per layer, so memory is one batch of activations whatever the split's size.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper

from .errors import DataError, ModelError
from .lru import LRUCache
from .metrics import ratio_db
from .simulate import OFF, ActivationQuant, SimulationSession
from .simulation_graph import LayerSpec, build_simulation_model, first_line, session_options, simulation_session

# Single-node sessions kept per Evaluator (least recently used evicted; a model with more layers rebuilds them).
MAX_LAYER_SESSIONS = 512


def noise_power(reference: np.ndarray, value: np.ndarray) -> float:
    """Return sum((reference - value)^2) in float64."""
    difference = (reference.astype(np.float64) - value).reshape(-1)
    return float(np.dot(difference, difference))


def signal_power(x: np.ndarray) -> float:
    """Return sum(x^2) in float64."""
    x = x.astype(np.float64, copy=False).reshape(-1)
    return float(np.dot(x, x))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def single_node_model(model: onnx.ModelProto, spec: LayerSpec) -> tuple[onnx.ModelProto, tuple[str, ...]] | None:
    """Return the layer's node alone as a model, and the tensors it reads that are not initializers.

    None when the node cannot run alone: it is not a node of the main graph (inside an If / Loop body),
    it holds a subgraph, the layer's output is not the node's own first output, or a tensor it reads
    or writes has no declared type.
    """
    graph = model.graph
    node = next((n for n in graph.node if n.name == spec.name), None)
    if node is None or _has_subgraph(node) or not spec.output or not node.output or node.output[0] != spec.output:
        return None
    initializers = {init.name: init for init in graph.initializer}
    reads = tuple(dict.fromkeys(name for name in node.input if name and name not in initializers))
    declared = {v.name: v for v in list(graph.input) + list(graph.value_info) + list(graph.output)}
    if any(name not in declared or not declared[name].type.tensor_type.elem_type for name in (*reads, spec.output)):
        return None
    alone = onnx.NodeProto()
    alone.CopyFrom(node)
    built = helper.make_graph([alone], f"{graph.name}.{spec.name}.alone", [declared[name] for name in reads],
                              [declared[spec.output]],
                              [initializers[name] for name in dict.fromkeys(node.input) if name in initializers])
    single = helper.make_model(built, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return single, reads


class LayerAlone:
    """An onnxruntime session of one layer's node alone, its weight an input, its activation input passing
    through the same fake-quant subgraph as the simulation session's (`build_simulation_model`).

    Other inputs (bias, ...) stay as they are. The session runs the node with plain kernels: onnxruntime
    may run it in the whole graph with other kernels (e.g. the blocked NCHWc Conv with reordered
    weights), so its output can differ from the whole session's in the last float bits.
    """

    def __init__(self, model: onnx.ModelProto, spec: LayerSpec, modes, threads: int = 1):
        found = single_node_model(model, spec)
        if found is None:
            raise ModelError(f"layer {spec.name!r}: its node cannot run alone")
        single, self.reads = found
        self.name = spec.name
        built, weight_inputs, activation_index = build_simulation_model(single, (spec,), modes)
        self._weight_input = weight_inputs.get(spec.name)
        self._activation_index = activation_index.get(spec.name)
        try:
            self._session = simulation_session(built.SerializeToString(), session_options(threads))
        except Exception as err:  # onnxruntime's own exception types
            raise ModelError(f"layer {spec.name!r}: onnxruntime cannot run its node alone: {first_line(err)}") from None
        self._output = spec.output

    def run(self, values: Mapping[str, np.ndarray], weight: np.ndarray | None,
            activation: ActivationQuant | None) -> np.ndarray:
        """Return the layer's output for the tensors it reads (`values`), its weight, its input's fake-quant."""
        feeds = {name: values[name] for name in self.reads}
        if self._weight_input is not None:
            feeds[self._weight_input] = np.asarray(weight, dtype=np.float32)
        if self._activation_index is not None:
            feeds.update((activation or OFF).feeds(self._activation_index))
        try:
            return self._session.run([self._output], feeds)[0]
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"layer {self.name!r}: onnxruntime cannot run its node alone: {first_line(err)}") from None


# What one layer is fed in an isolated run: its (fake-quantized) weight or None (FP32), its activation's
# fake-quant parameters or None (FP32).
Isolated = tuple[np.ndarray | None, ActivationQuant | None]


class LayerErrorRuns:
    """The per-batch passes that measure per-layer errors on one SimulationSession, and its single-node sessions."""

    def __init__(self, model: onnx.ModelProto, session: SimulationSession, specs: Mapping[str, LayerSpec],
                 threads: int = 1):
        self._model, self._session, self._specs, self._threads = model, session, specs, threads
        self._alone = LRUCache(MAX_LAYER_SESSIONS)  # layer -> LayerAlone
        self._cannot: set[str] = set()               # layers whose node cannot run alone: measured whole

    def alone(self, layer: str) -> LayerAlone | None:
        """The layer's single-node session (built on first use, cached); None when its node cannot run alone
        or reads a tensor the capture run does not output."""
        if layer in self._cannot:
            return None
        found = self._alone.get(layer)
        if found is None:
            try:
                found = LayerAlone(self._model, self._specs[layer], self._session.modes, self._threads)
            except ModelError:
                found = None
            captured = set(self._session.input_names) | set(self._session.captured_layer_inputs)
            if found is None or any(name not in captured for name in found.reads):
                self._cannot.add(layer)
                return None
            self._alone.put(layer, found)
        return found

    def measure(self, batches: Iterable[Mapping[str, np.ndarray]], config: tuple[Mapping, Mapping] | None,
                isolated: Mapping[str, Isolated]) -> tuple[dict[str, float] | None, dict[str, float]]:
        """Return (accumulated SQNR per layer for `config` = (weights, activations), or None without one;
        isolated SQNR of each layer in `isolated`), in one pass over `batches`.

        Per batch: one FP32 capture run, one run of the config, and each isolated layer's node alone fed
        its captured inputs; a layer whose node cannot run alone gets a whole run with only its feed (the
        definition). Layers without a float output are absent from the accumulated dict and inf isolated.
        """
        local = {layer: self.alone(layer) for layer in isolated}
        signal: dict[str, float] = {}
        accumulated: dict[str, float] = {}
        noise = dict.fromkeys(isolated, 0.0)
        for batch in batches:
            reference, captured = self._session.capture_layers(batch)
            for layer, value in reference.items():
                signal[layer] = signal.get(layer, 0.0) + signal_power(value)
            if config is not None:
                weights, activations = config
                outputs = self._session.run(batch, weights=weights, activations=activations,
                                            with_layer_outputs=True).layer_outputs
                for layer, value in outputs.items():
                    accumulated[layer] = accumulated.get(layer, 0.0) + noise_power(reference[layer], value)
            values = {**batch, **captured}
            for layer, alone in local.items():
                if layer not in reference:
                    continue
                weight, activation = isolated[layer]
                if alone is None:
                    value = _whole_run(self._session, batch, layer, weight, activation)
                else:
                    value = alone.run(values, self._session.fp32_weight(layer) if weight is None else weight,
                                      activation)
                noise[layer] += noise_power(reference[layer], value)
        sqnr = None if config is None else {layer: ratio_db(signal[layer], n) for layer, n in accumulated.items()}
        return sqnr, {layer: ratio_db(signal[layer], n) if layer in signal else float("inf")
                      for layer, n in noise.items()}


def _whole_run(session: SimulationSession, batch, layer: str, weight, activation) -> np.ndarray:
    """The layer's output in a whole-model run with only this layer's feed applied."""
    weights = {} if weight is None else {layer: weight}
    activations = {} if activation is None else {layer: activation}
    return session.run(batch, weights=weights, activations=activations, with_layer_outputs=True).layer_outputs[layer]


def reference_layer_sqnr(session: SimulationSession, batches: Iterable[Mapping[str, np.ndarray]],
                         weights: Mapping[str, np.ndarray], activations: Mapping[str, ActivationQuant]
                         ) -> dict[str, float]:
    """The definition: SQNR at every layer's output with these feeds, from whole-model runs of each batch.

    The isolated error of a layer is this with only that layer's feed; the accumulated error, with all.
    """
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for batch in batches:
        reference = session.run(batch, with_layer_outputs=True).layer_outputs
        outputs = session.run(batch, weights=weights, activations=activations, with_layer_outputs=True).layer_outputs
        for layer, value in outputs.items():
            signal[layer] = signal.get(layer, 0.0) + signal_power(reference[layer])
            noise[layer] = noise.get(layer, 0.0) + noise_power(reference[layer], value)
    return {layer: ratio_db(signal[layer], noise[layer]) for layer in noise}

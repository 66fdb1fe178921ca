"""Per-layer errors of a config: isolated (that layer alone quantized) and accumulated (the whole config).

Both are an SQNR at the layer's output y, signal and noise powers summed over the evaluation split in
float64 (`metrics.ratio_db`, the one SQNR formula):

    accumulated(layer) = ratio_db(sum y_fp32^2, sum (y_fp32 - y_config)^2)
    isolated(layer)    = ratio_db(sum y_fp32^2, sum (y_fp32 - y_alone)^2)

where y_alone is the layer's output with only that layer quantized as the config says.

`reference_layer_sqnr` is the definition: whole-model runs of the simulation session, so the isolated
errors of L layers cost L whole-model runs. `ErrorGraph` is the fast path: one onnxruntime session holding
three copies of the simulation graph, run once per batch, that returns only scalars:

- an FP32 copy (no fake-quant, fed the FP32 weights), the reference;
- the config copy (the simulation graph with the config's activation modes inline, fed its weights and
  fake-quant parameters): the accumulated error at every layer's output;
- each layer's node alone, reading the FP32 copy's activations through its own copy of the layer's
  fake-quant nodes, and the config's weight for that layer: the isolated error, layer-locally;
- per layer, the signal power of the FP32 output and the noise power of each difference (float32 Sub,
  squares summed along the last axis in float32, those sums in float64: `_power_nodes`).

The FP32 and config copies are the same nodes but for the fake-quant ones, so onnxruntime runs them
with the same kernels: a layer untouched by the config, with nothing quantized before it, gives zero
noise (inf dB), as in the definition. Weights are traced into onnxruntime's optimized (NCHWc) layout as
in the simulation session when each is read by its layer alone (`_weights_read_once`). Nothing leaves
the session per sample: memory is onnxruntime's working set for one batch, whatever the split's size.
The numbers equal the definition's up to float rounding (a node alone or inside another graph may get
other kernels or fusions; float32 partial sums): the tests hold them within 1e-4 relative or 1e-3 dB.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from quant_core.errors import DataError, ModelError
from quant_core.numerics.metrics import ratio_db
from quant_core.engine.simulate import ActivationQuant, SimulationSession
from quant_core.engine.simulation_graph import ActivationMode, WeightFeed, build_simulation_model, fake_quant_in_blocked_layout, input_name, reorder_weight_inputs, simulation_session, with_weight_data, without_weight_data
from quant_core.model.layers import LayerSpec
from quant_core.model.runtime import first_line, session_options

_FP32, _ALONE, _ERR = "qlab_fp32/", "qlab_alone/", "qlab_err/"


def noise_power(reference: np.ndarray, value: np.ndarray) -> float:
    """Return sum((reference - value)^2) in float64."""
    difference = (reference.astype(np.float64) - value).reshape(-1)
    return float(np.dot(difference, difference))


def signal_power(x: np.ndarray) -> float:
    """Return sum(x^2) in float64."""
    x = x.astype(np.float64, copy=False).reshape(-1)
    return float(np.dot(x, x))


def reference_layer_sqnr(session: SimulationSession, batches: Iterable[Mapping[str, np.ndarray]],
                         weights: Mapping[str, np.ndarray], activations: Mapping[str, ActivationQuant]
                         ) -> dict[str, float]:
    """The definition: SQNR at every layer's output with these feeds applied, from whole-model runs.

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


# -- the error graph ---------------------------------------------------------------------------------

def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _rename_graph(graph: onnx.GraphProto, rename: Callable[[str], str]) -> None:
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = rename(value.name)
    for init in graph.initializer:
        init.name = rename(init.name)
    for node in graph.node:
        _rename_node(node, rename, rename)


def _rename_node(node: onnx.NodeProto, inputs: Callable[[str], str], outputs: Callable[[str], str]) -> None:
    """Rename a node's inputs and outputs in place; its subgraphs (If branches...) with `inputs` throughout."""
    node.input[:] = [inputs(name) if name else name for name in node.input]
    node.output[:] = [outputs(name) if name else name for name in node.output]
    node.name = outputs(node.name) if node.name else node.name
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            _rename_graph(attribute.g, inputs)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for graph in attribute.graphs:
                _rename_graph(graph, inputs)


def _copy(node: onnx.NodeProto, inputs: Callable[[str], str], outputs: Callable[[str], str]) -> onnx.NodeProto:
    copied = onnx.NodeProto()
    copied.CopyFrom(node)
    _rename_node(copied, inputs, outputs)
    return copied


_FAKE_QUANT = input_name(0, "")[:-len("0.")]  # the simulation graph's fake-quant names: <this><index>.<...>


def _fake_quant_owner(node: onnx.NodeProto) -> int | None:
    """The index of the layer whose fake-quant subgraph `node` belongs to (its outputs say), or None."""
    name = node.output[0] if node.output else ""
    index = name[len(_FAKE_QUANT):].split(".")[0]
    return int(index) if name.startswith(_FAKE_QUANT) and index.isdigit() else None


def _power_nodes(model: onnx.ModelProto, graph: onnx.GraphProto) -> Callable[[str, str], list[onnx.NodeProto]]:
    """Return a maker of the nodes computing out = sum(x^2) as a float64 scalar: float32 squares summed
    along the last axis (relative error about sqrt(n) x 6e-8 for n values, all positive), then those
    partial sums in float64, so that a long tensor is not summed in float32 whole nor cast whole."""
    opset = next((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)
    last = f"{_ERR}last_axis"
    if opset >= 18:  # ReduceSumSquare takes its axes as an input from opset 18 on
        graph.initializer.append(helper.make_tensor(last, TensorProto.INT64, [1], [-1]))

    def nodes(x: str, out: str) -> list[onnx.NodeProto]:
        rows = helper.make_node("ReduceSumSquare", [x, last], [out + ".rows"], keepdims=0) if opset >= 18 else \
            helper.make_node("ReduceSumSquare", [x], [out + ".rows"], keepdims=0, axes=[-1])
        return [rows, helper.make_node("Cast", [out + ".rows"], [out + ".f64"], to=TensorProto.DOUBLE),
                helper.make_node("ReduceSum", [out + ".f64"], [out], keepdims=0)]

    return nodes


def _weights_read_once(model: onnx.ModelProto, specs: tuple[LayerSpec, ...]) -> bool:
    """True when every layer's weight is read by its layer's node alone (in the main graph, not a subgraph):
    a weight kept as one constant then feeds that node only."""
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in set(node.input) | _subgraph_reads(node):
            readers[name] = readers.get(name, 0) + 1
    return all(readers.get(spec.weight, 0) == 1 for spec in specs if spec.weight)


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    reads = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            for inner in graph.node:
                reads.update(inner.input)
                reads.update(_subgraph_reads(inner))
    return reads


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its main graph's initializers reduced to name, type and dims (no data copied)."""
    skeleton = onnx.ModelProto(ir_version=model.ir_version, opset_import=list(model.opset_import))
    graph = skeleton.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    graph.initializer.extend(onnx.TensorProto(name=init.name, data_type=init.data_type, dims=init.dims)
                             for init in model.graph.initializer)
    return skeleton


def _renamed_values(values, rename: Callable[[str], str]) -> list:
    """Copies of ValueInfoProtos / TensorProtos under renamed names."""
    copies = []
    for value in values:
        copied = type(value)()
        copied.CopyFrom(value)
        copied.name = rename(value.name)
        copies.append(copied)
    return copies


def can_run_alone(node: onnx.NodeProto, spec: LayerSpec) -> bool:
    """True when the layer's error can be measured on its node alone: the layer's output is the node's own
    first output (float) and the node holds no subgraph."""
    return bool(spec.output) and bool(node.output) and node.output[0] == spec.output and not _has_subgraph(node)


class ErrorGraph:
    """One onnxruntime session that measures, per batch, every layer's signal power and its accumulated and
    isolated noise powers (module docstring), for the configs whose activations use `pattern`'s modes
    (activation index -> mode, absent: FP32); the Evaluator keeps one per pattern seen (bounded).

    A layer whose node cannot run alone (`can_run_alone`: e.g. its output is not its node's own) has no
    isolated output here (`alone` leaves it out): the caller measures it by the definition.
    """

    def __init__(self, model: onnx.ModelProto, specs: tuple[LayerSpec, ...], modes,
                 pattern: Mapping[int, ActivationMode], fp32_weights: Mapping[str, np.ndarray], threads: int = 1):
        self._fp32_weights = fp32_weights
        # Whether `runner(..., with_outputs=True)` gives the simulation session's outputs bit for bit: checked
        # once by the Evaluator on its first use (None until then).
        self.outputs_exact: bool | None = None
        built = None
        if _weights_read_once(model, specs):
            # Weights as constants while onnxruntime optimizes, then fed in its (NCHWc) layout: the fast kernels.
            built = self._build(model, specs, modes, pattern, threads, reorder=True)
        if built is None:
            built = self._build(model, specs, modes, pattern, threads, reorder=False)
        options = session_options(threads)
        if self._reordered:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # optimized already
        try:
            self._session = simulation_session(built.SerializeToString(), options)
        except Exception as err:  # onnxruntime's own exception types
            raise ModelError(f"onnxruntime cannot build the per-layer error session: {first_line(err)}") from None
        self._input_names = frozenset(value.name for value in self._session.get_inputs())
        # The FP32 copy's weights, and the config copy's for the layers a config leaves FP32, fed as they are.
        self._defaults = {feed.name: feed.value(fp32_weights[layer])
                          for feeds in (self._weight_feeds, self._fp32_feeds)
                          for layer, layer_feeds in feeds.items() for feed in layer_feeds}

    def _build(self, model, specs, modes, pattern, threads: int, *, reorder: bool) -> onnx.ModelProto | None:
        """The error model; with `reorder`, its weights traced into onnxruntime's layout (None if they cannot be)."""
        # The config copy has the pattern's fake-quant nodes inline (activation index -> mode; absent: none),
        # the FP32 copy none: otherwise the same nodes, in the same order.
        sim, weight_inputs, self.activation_index = build_simulation_model(
            without_weight_data(model, specs), specs, modes, weights_as_inputs=not reorder, pattern=pattern)
        # Only the FP32 copy's nodes, inputs and value_info are read: built without the weights' data.
        plain, _, _ = build_simulation_model(_skeleton(model), specs, modes, weights_as_inputs=not reorder, pattern={})
        graph = sim.graph
        initializers = {init.name for init in graph.initializer}
        weights = {spec.weight for spec in specs if reorder and spec.weight in initializers}
        model_inputs = {value.name for value in model.graph.input} - initializers
        added = {value.name for value in graph.input} - model_inputs - initializers  # weights, fake-quant params
        keep = model_inputs | (initializers - weights)

        def fp32(name: str) -> str:
            return name if name in keep else _FP32 + name

        power = _power_nodes(sim, graph)
        index = {spec.name: i for i, spec in enumerate(specs)}
        by_name = {spec.name: spec for spec in specs}
        fake_quant: dict[int, list[onnx.NodeProto]] = {}
        nodes, outputs = [], []
        self.powers: dict[str, tuple[str, str, str | None]] = {}  # layer -> (signal, accumulated, isolated) outputs
        self.sizes: dict[str, str] = {}  # layer -> its output's element count
        alone = set()
        references = iter(plain.graph.node)
        for node in graph.node:
            owner = _fake_quant_owner(node)
            if owner is not None:
                fake_quant.setdefault(owner, []).append(node)
                nodes.append(node)
                continue
            twin = next(references, None)
            if twin is None or list(twin.output) != list(node.output):
                raise ModelError("the FP32 and the config copies of the graph do not match")
            # FP32 copy and config copy side by side, so that each FP32 activation is freed soon after use.
            nodes += [_copy(twin, fp32, fp32), node]
            spec = by_name.get(node.name)
            if spec is None or not spec.output:
                continue
            i = index[spec.name]
            error = f"{_ERR}{i}."
            reference = fp32(spec.output)
            nodes += [*power(reference, error + "signal"), helper.make_node("Size", [reference], [error + "size"]),
                      helper.make_node("Sub", [reference, spec.output], [error + "acc.diff"]),
                      *power(error + "acc.diff", error + "acc")]
            isolated = None
            if can_run_alone(node, spec):
                own = input_name(i, "")

                def local(name: str, own=own) -> str:
                    # Its own fake-quant copy; the config's weight and parameters; FP32 activations.
                    if name in keep or name in added or name in weights:
                        return name
                    return _ALONE + name if name.startswith(own) else fp32(name)

                nodes += [_copy(fq, local, local) for fq in fake_quant.get(i, ())]
                nodes.append(_copy(node, local, lambda name: _ALONE + name))
                nodes += [helper.make_node("Sub", [reference, _ALONE + spec.output], [error + "iso.diff"]),
                          *power(error + "iso.diff", error + "iso")]
                isolated = error + "iso"
                alone.add(spec.name)
            self.powers[spec.name] = (error + "signal", error + "acc", isolated)
            self.sizes[spec.name] = error + "size"
            outputs += [error + "signal", error + "acc"] + ([isolated] if isolated else [])
        self.alone = frozenset(alone)
        added_plain = {value.name for value in plain.graph.input} - model_inputs - initializers
        graph.input.extend(_renamed_values([v for v in plain.graph.input if v.name in added_plain], fp32))
        graph.value_info.extend(_renamed_values(plain.graph.value_info, fp32))
        graph.initializer.extend(_renamed_values([init for init in graph.initializer if init.name in weights], fp32))
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.output[:]
        graph.output.extend(helper.make_tensor_value_info(name, TensorProto.DOUBLE, []) for name in outputs)
        graph.output.extend(helper.make_tensor_value_info(name, TensorProto.INT64, []) for name in self.sizes.values())
        # The config copy's model outputs too (the original names): a pass that wants the config's outputs and
        # its per-layer errors then runs once (`Evaluator.evaluate_with_errors`).
        # (Not when an output is an input or a constant of the model: it has no config copy.)
        self.output_names = tuple(output.name for output in model.graph.output)
        if any(name in keep for name in self.output_names):
            self.output_names = ()
        graph.output.extend(output for output in model.graph.output if self.output_names)
        self._reordered = reorder
        if not reorder:
            with_weight_data(sim, model)  # a weight another node reads too stays a constant
            shapes = {value.name: tuple(d.dim_value for d in value.type.tensor_type.shape.dim) for value in graph.input}
            self._weight_feeds = {layer: [WeightFeed(name, shapes[name])] for layer, name in weight_inputs.items()}
            self._fp32_feeds = {layer: [WeightFeed(fp32(name), shapes[name])] for layer, name in weight_inputs.items()}
            return sim
        copies = tuple(replace(spec, name=_FP32 + spec.name, weight=fp32(spec.weight)) for spec in specs
                       if spec.weight in weights)
        traced = reorder_weight_inputs(sim, (*specs, *copies), threads)
        if traced is None:
            return None
        built, by_weight = traced
        fake_quant_in_blocked_layout(built)
        self._weight_feeds = {spec.name: by_weight[spec.weight] for spec in specs if spec.weight in by_weight}
        self._fp32_feeds = {spec.name: by_weight[fp32(spec.weight)] for spec in specs
                            if spec.weight in weights and fp32(spec.weight) in by_weight}
        return built

    def run(self, batch: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray],
            activations: Mapping[str, ActivationQuant]) -> dict[str, tuple[float, float, float | None, int]]:
        """Return, per layer with a float output, (signal power, accumulated noise power, isolated noise
        power or None, elements of its output) on one batch, for the config fed as `weights` and `activations`."""
        return self.runner(weights, activations)(batch)[0]

    def runner(self, weights: Mapping[str, np.ndarray], activations: Mapping[str, ActivationQuant], *,
               with_outputs: bool = False) -> Callable[[Mapping[str, np.ndarray]], tuple[dict, tuple]]:
        """Return run(batch) -> (`run`'s powers per layer, the config's model outputs if `with_outputs` else
        ()) for one config, its feeds laid out once for every batch; safe to call from several threads."""
        config_feeds = dict(self._defaults)
        for layer, weight in weights.items():
            for feed in self._weight_feeds.get(layer, ()):
                config_feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        for layer, params in activations.items():
            config_feeds.update(params.feeds(self.activation_index[layer]))
        names = [name for layer in self.powers for name in self.powers[layer] if name]
        names += list(self.sizes.values())
        if with_outputs and not self.output_names:
            raise ValueError("this error session cannot give the model outputs (`output_names` is empty)")
        outputs = list(self.output_names) if with_outputs else []

        def run(batch: Mapping[str, np.ndarray]) -> tuple[dict, tuple]:
            feeds = {name: value for name, value in {**config_feeds, **batch}.items() if name in self._input_names}
            try:
                fetched = self._session.run(names + outputs, feeds)
            except Exception as err:  # onnxruntime's own exception types: wrong shapes or dtypes in the data
                raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None
            values = dict(zip(names, fetched))
            powers = {layer: (float(values[signal]), float(values[accumulated]),
                              None if isolated is None else float(values[isolated]), int(values[self.sizes[layer]]))
                      for layer, (signal, accumulated, isolated) in self.powers.items()}
            return powers, tuple(fetched[len(names):])

        return run

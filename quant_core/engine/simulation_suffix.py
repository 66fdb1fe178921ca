"""Suffix sessions: the model from one layer on, for configs that change only that layer's weight.

A sweep that changes one layer's weight need not rerun what comes before it: `suffix_model` cuts the
graph before a layer (the tensors it reads from earlier become inputs), and `LayerSuffix` runs that
cut with only the layer's weight as an input, fed in onnxruntime's optimized layout as the full
simulation session does, so its outputs equal the full session's bit for bit.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from quant_core.errors import DataError, ModelError
from quant_core.engine.simulation_graph import WeightFeed, reorder_weight_inputs, simulation_session, with_weight_data, without_weight_data
from quant_core.model.layers import LayerSpec
from quant_core.model.runtime import first_line, session_options


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def suffix_model(model: onnx.ModelProto, layer: str) -> tuple[onnx.ModelProto, tuple[str, ...]] | None:
    """Return the nodes from `layer` on as a model whose inputs are the tensors they read from before it.

    The second item lists those "cut" tensors (activations, shapes... computed before the layer, or
    model inputs). None when the model has subgraphs (their outer-scope reads are not traced), when a
    cut tensor has no declared type, or when a model output is computed before the layer.
    """
    graph = model.graph
    names = [node.name for node in graph.node]
    if layer not in names or any(_has_subgraph(node) for node in graph.node):
        return None
    nodes = list(graph.node)[names.index(layer):]
    produced = {out for node in nodes for out in node.output}
    if any(out.name not in produced for out in graph.output):
        return None
    initializers = {init.name: init for init in graph.initializer}
    cut = list(dict.fromkeys(name for node in nodes for name in node.input
                             if name and name not in produced and name not in initializers))
    declared = {v.name: v for v in list(graph.input) + list(graph.value_info)}
    if any(name not in declared or not declared[name].type.tensor_type.elem_type for name in cut):
        return None
    used = {name for node in nodes for name in node.input}
    suffix = helper.make_graph(nodes, f"{graph.name}.from.{layer}", [declared[name] for name in cut],
                               list(graph.output), [init for init in graph.initializer if init.name in used],
                               value_info=[v for v in graph.value_info if v.name in produced])
    built = helper.make_model(suffix, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return built, tuple(cut)


class LayerSuffix:
    """An InferenceSession of the model from one layer on, its weights fed as the full session feeds them.

    The layer's weight and the later layers' are inputs, in onnxruntime's optimized layout when it can be
    traced (as `SimulationSession` does) and plain otherwise: onnxruntime then runs them with the same
    kernels as the full session, so the outputs equal a whole run's bit for bit.
    """

    def __init__(self, model: onnx.ModelProto, spec: LayerSpec, threads: int,
                 later: tuple[LayerSpec, ...] = (), fp32_weights: Mapping[str, np.ndarray] | None = None):
        # Cut from the model without its layers' weight data: they become markers or inputs (a weight that
        # stays a constant gets its data back below).
        found = suffix_model(without_weight_data(model, (spec, *later)), spec.name)
        if found is None or spec.weight is None:
            raise ModelError(f"layer {spec.name!r}: the model cannot be cut before it")
        built, self.cut = found
        # The later layers' weights are fed too, in the same layout as the full session's: onnxruntime then
        # runs them with the same kernels, so the outputs equal the full session's bit for bit.
        inside = {init.name for init in built.graph.initializer}
        later = tuple(s for s in later if s.weight in inside and s.weight != spec.weight)
        traced = reorder_weight_inputs(built, (spec, *later), threads)
        options = session_options(threads)
        self.constant_feeds = {}
        self.later_feeds: dict[str, list[WeightFeed]] = {}  # later layer -> how its weight is fed (traced only)
        self.traced = traced is not None
        if traced is not None:
            built, by_weight = traced
            self.weight_feeds = by_weight[spec.weight]
            for other in later:
                self.later_feeds[other.name] = by_weight[other.weight]
                for feed in by_weight[other.weight]:
                    self.constant_feeds[feed.name] = feed.value(fp32_weights[other.name])
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        else:
            # Untraced, the full session takes every weight as a plain input: so does the suffix (a constant
            # weight would be prepacked and summed in another order).
            fed = {spec.weight: spec, **{other.weight: other for other in later}}
            inits = {i.name: i for i in built.graph.initializer if i.name in fed}
            kept = [i for i in built.graph.initializer if i.name not in fed]
            del built.graph.initializer[:]
            built.graph.initializer.extend(kept)
            for name, init in inits.items():
                built.graph.input.append(helper.make_tensor_value_info(name, init.data_type, list(init.dims)))
            self.weight_feeds = [WeightFeed(spec.weight, tuple(inits[spec.weight].dims))]
            for other in later:
                feed = WeightFeed(other.weight, tuple(inits[other.weight].dims))
                self.later_feeds[other.name] = [feed]
                self.constant_feeds[feed.name] = feed.value(fp32_weights[other.name])
        self.output_names = tuple(o.name for o in built.graph.output)
        with_weight_data(built, model)
        try:
            self.session = simulation_session(built.SerializeToString(), options)
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot build the suffix session of {spec.name!r}: "
                             f"{first_line(err)}") from None

    @property
    def nbytes(self) -> int:
        """Bytes of the later layers' weights this suffix keeps (in its layout) to feed them."""
        return sum(value.nbytes for value in self.constant_feeds.values())

    def run(self, cut_values: Mapping[str, np.ndarray], weight: np.ndarray,
            later_weights: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        """Run the suffix: `weight` for its layer, `later_weights` (by layer; only those in
        `later_feeds`) for layers after it, FP32 for the others."""
        feeds = dict(self.constant_feeds)
        feeds.update((name, cut_values[name]) for name in self.cut)
        for feed in self.weight_feeds:
            feeds[feed.name] = feed.value(np.asarray(weight, dtype=np.float32))
        for layer, value in (later_weights or {}).items():
            for feed in self.later_feeds[layer]:
                feeds[feed.name] = feed.value(np.asarray(value, dtype=np.float32))
        try:
            return tuple(self.session.run(list(self.output_names), feeds))
        except Exception as err:  # onnxruntime's own exception types
            raise DataError(f"onnxruntime cannot run the model on this data: {first_line(err)}") from None

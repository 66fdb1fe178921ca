"""What the engine needs of each quantizable layer: its weight initializer, its float activation input, its output."""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto


@dataclass(frozen=True)
class LayerSpec:
    name: str
    weight: str | None            # initializer name of the quantizable weight
    activation_input: str | None  # float activation tensor the layer reads
    output: str


def _weight_name(layer: str, info_layer) -> str | None:
    weight = getattr(info_layer, "weight", None)
    if weight is None:
        weights = getattr(info_layer, "weights", ()) or ()
        weight = weights[0] if weights else None
    if weight is None or isinstance(weight, str):
        return weight
    return getattr(weight, "name", None) or getattr(weight, "initializer", None)


def float_tensors(model: onnx.ModelProto) -> frozenset[str]:
    """Names of the tensors the model declares (inputs, outputs, value_info) as float32."""
    graph = model.graph
    declared = list(graph.input) + list(graph.output) + list(graph.value_info)
    return frozenset(v.name for v in declared if v.type.tensor_type.elem_type == TensorProto.FLOAT)


def layer_specs(prepared) -> tuple[LayerSpec, ...]:
    """Return what the simulation needs from each layer of `prepared.info`.

    A layer's activation input is kept only when the model declares it float32 (after shape
    inference): integer inputs such as Gather indices are never fake-quantized.
    """
    floats = float_tensors(prepared.model)
    specs = []
    for layer in prepared.info.layers:
        outputs = tuple(getattr(layer, "outputs", ()) or ())
        activation = getattr(layer, "activation_input", None)
        output = outputs[0] if outputs and outputs[0] in floats else ""
        specs.append(LayerSpec(layer.name, _weight_name(layer.name, layer),
                                activation if activation in floats else None, output))
    return tuple(specs)

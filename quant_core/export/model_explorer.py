"""Per-layer values as node data that Google's Model Explorer overlays on its graph view.

The format is Model Explorer's `GraphNodeData` (google-ai-edge/model-explorer,
src/server/package/src/model_explorer/node_data_builder.py): a JSON object with

- `results`: node key → `{"value": number}` (optionally `"bgColor"`, `"textColor"`), where a key is a
  node's id (for ONNX models, its node name) or one of its output tensor names;
- `thresholds` (optional): `[{"value": v, "bgColor": colour}, ...]` in increasing order; a value
  ≤ the first threshold gets its colour, and so on; above the last, no colour;
- `gradient` (optional, takes precedence over thresholds): `[{"stop": 0..1, "bgColor": colour}, ...]`.

Model Explorer opens such a file as "node data" next to the model (the node data provider's JSON).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class NodeKey(StrEnum):
    """How a result is matched to a node in Model Explorer."""

    NODE_NAME = "node"  # the ONNX node name (the node's id in Model Explorer's ONNX graphs)
    OUTPUT_TENSOR = "output"  # the node's first output tensor name


@dataclass(frozen=True)
class Threshold:
    """Values ≤ `value` (and above the previous threshold) are drawn with `color`."""

    value: float
    color: str


def node_data(values: Mapping[str, float | None], *, outputs: Mapping[str, Sequence[str]] | None = None,
              key: NodeKey = NodeKey.NODE_NAME, thresholds: Sequence[Threshold] = (),
              colors: Mapping[str, str] | None = None) -> dict:
    """Model Explorer node data for per-layer `values` (layer name → number; None and NaN are left out).

    `outputs` maps a layer to its output tensor names (needed for `key=NodeKey.OUTPUT_TENSOR`);
    `colors` (layer → CSS colour) sets a node's colour directly, over the thresholds.
    Infinite values (e.g. the SQNR of an exact layer) are written as ±1e308-bounded finite numbers:
    JSON has no infinity.
    """
    if key == NodeKey.OUTPUT_TENSOR and outputs is None:
        raise ValueError("node_data(key=NodeKey.OUTPUT_TENSOR) needs outputs: each layer's output tensor names")
    ordered = sorted(thresholds, key=lambda item: item.value)
    results = {}
    for layer, value in values.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        node_key = layer if key == NodeKey.NODE_NAME else next(iter(outputs.get(layer, ())), None)
        if node_key is None:
            continue
        result = {"value": _finite(float(value))}
        if colors and layer in colors:
            result["bgColor"] = colors[layer]
        results[node_key] = result
    data: dict = {"results": results}
    if ordered:
        data["thresholds"] = [{"value": _finite(item.value), "bgColor": item.color} for item in ordered]
    return data


def node_data_json(data: dict) -> str:
    """The node data as the JSON text Model Explorer reads."""
    return json.dumps(data, indent=2, allow_nan=False)


def _finite(value: float) -> float:
    if math.isinf(value):
        return math.copysign(1e308, value)
    return value

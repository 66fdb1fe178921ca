"""Model Explorer node data: the JSON shape its node data builder defines, keyed by node or output tensor name.

The reference is google-ai-edge/model-explorer, src/server/package/src/model_explorer/node_data_builder.py:
`GraphNodeData(results: dict[str, NodeDataResult], thresholds: list[ThresholdItem], gradient: ...)`,
`NodeDataResult(value: number, bgColor: str | None, textColor: str | None)`,
`ThresholdItem(value: number, bgColor: str, textColor: str | None)`; None fields are left out of the JSON.
"""
import json
import math

import pytest

from quant_core.export.model_explorer import NodeKey, Threshold, node_data, node_data_json

# The fields each object may have, and their JSON types, as in node_data_builder.py's dataclasses.
GRAPH_NODE_DATA = {"results": dict, "thresholds": list, "gradient": list, "hideInAggregatedStatsTable": bool,
                   "hideInChildrenStatsTable": bool, "hideAggregatedStats": list,
                   "showExpandedSummaryOnGroupNode": bool, "showLabelCountColumnsInChildrenStatsTable": bool}
NODE_DATA_RESULT = {"value": (int, float), "bgColor": str, "textColor": str}
THRESHOLD_ITEM = {"value": (int, float), "bgColor": str, "textColor": str}


def assert_graph_node_data(data: dict) -> None:
    """`data` is a GraphNodeData as Model Explorer's builder writes it."""
    assert set(data) <= set(GRAPH_NODE_DATA) and "results" in data
    for name, value in data.items():
        assert isinstance(value, GRAPH_NODE_DATA[name]), name
    for key, result in data["results"].items():
        assert isinstance(key, str) and set(result) <= set(NODE_DATA_RESULT) and "value" in result
        assert all(isinstance(result[name], NODE_DATA_RESULT[name]) for name in result)
        assert math.isfinite(result["value"])
    for item in data.get("thresholds", []):
        assert set(item) <= set(THRESHOLD_ITEM) and {"value", "bgColor"} <= set(item)
    values = [item["value"] for item in data.get("thresholds", [])]
    assert values == sorted(values), "thresholds are upper bounds in increasing order"


def test_values_are_keyed_by_node_name_with_thresholds_in_increasing_order():
    data = node_data({"/conv1/Conv": 42.0, "/fc/Gemm": 7.5}, thresholds=[Threshold(30, "#2ca02c"),
                                                                         Threshold(15, "#d62728")])
    assert_graph_node_data(data)
    assert data == {"results": {"/conv1/Conv": {"value": 42.0}, "/fc/Gemm": {"value": 7.5}},
                    "thresholds": [{"value": 15, "bgColor": "#d62728"}, {"value": 30, "bgColor": "#2ca02c"}]}


def test_values_can_be_keyed_by_each_layers_first_output_tensor():
    data = node_data({"/conv1/Conv": 42.0}, outputs={"/conv1/Conv": ("/conv1/Conv_output_0", "extra")},
                     key=NodeKey.OUTPUT_TENSOR)
    assert data["results"] == {"/conv1/Conv_output_0": {"value": 42.0}}


def test_missing_and_infinite_values_stay_valid_json():
    data = node_data({"a": None, "b": float("nan"), "c": float("inf")}, colors={"c": "green"})
    assert_graph_node_data(data)
    assert data["results"] == {"c": {"value": 1e308, "bgColor": "green"}}
    assert json.loads(node_data_json(data)) == data


def test_output_keys_need_the_outputs():
    with pytest.raises(ValueError, match="needs outputs"):
        node_data({"a": 1.0}, key=NodeKey.OUTPUT_TENSOR)


def test_the_example_of_model_explorers_user_guide_is_read_by_the_same_check():
    # The shape Model Explorer's guide shows for a node data file (values per node id, thresholds).
    example = {"results": {"node_1": {"value": 10}, "node_2": {"value": 20, "bgColor": "red"}},
               "thresholds": [{"value": 15, "bgColor": "yellow"}, {"value": 25, "bgColor": "green"}]}
    assert_graph_node_data(example)

"""The Graph page: the model's layers as a graph coloured by their error; a layer's panel edits its format."""
import json

import pytest

from quant_core.config import PRESETS
from tests.app.conftest import app_test, tiny_model_bytes
from tests.core.test_model_explorer import assert_graph_node_data

GRAPH = "pages/4_Graph.py"
CONFIG_KEY = "_lab_config"


def _graph_page(model: str = "cnn"):
    at = app_test("app.py").run()
    if model != "cnn":
        at.selectbox(key="model_choice").set_value(model).run()
    at.switch_page(GRAPH).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _panel(at) -> dict[str, str]:
    """The selected layer's facts table as {row: value}."""
    table = at.table[0].value
    return dict(zip(table.index, table["value"]))


@pytest.fixture(scope="module")
def graph_page():
    return _graph_page()


def test_the_page_draws_the_graph_and_opens_on_the_first_layer(graph_page):
    at = graph_page
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3, "the graph, the weight histogram and the activation histogram"
    assert at.selectbox(key="graph_layer").value == "/conv1/Conv"
    assert "/conv1/Conv" in [h.value for h in at.subheader]
    assert at.radio(key="graph_color").options == ["isolated SQNR", "accumulated SQNR", "sweep sensitivity",
                                                   "export status", "format"]


def test_the_panel_shows_the_layer_its_shapes_errors_export_and_neighbours(graph_page):
    panel = _panel(graph_page)
    assert panel["op type"] == "Conv" and panel["format"] == "W int8 per_channel / A uint8"
    assert panel["weight"].startswith("conv1.weight (16, 1, 3, 3)")
    assert panel["isolated SQNR"].endswith("dB (only this layer quantized)")
    assert panel["export"] == "integer kernel"
    assert panel["to"] == "/conv2/Conv (via Relu)"


def test_searching_a_layer_selects_it_and_the_panel_follows():
    at = _graph_page()
    at.selectbox(key="graph_layer").set_value("/fc/Gemm").run()
    assert not at.exception
    assert "/fc/Gemm" in [h.value for h in at.subheader]
    assert _panel(at)["from"] == "/conv2/Conv (via Relu → MaxPool → Flatten)"


def test_changing_a_layers_format_changes_the_current_config_and_its_export_status():
    at = _graph_page()
    at.selectbox(key="graph_layer").set_value("/conv2/Conv").run()
    at.selectbox(key="graph_weight_format").set_value("int4").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    config = at.session_state[CONFIG_KEY]
    assert config.for_layer("/conv2/Conv").weights.format.name == "int4"
    assert config.for_layer("/conv1/Conv") == PRESETS["W8A8"].default, "only that layer changed"
    assert at.selectbox(key="config_preset").value == "custom"
    panel = _panel(at)
    assert panel["format"].startswith("W int4") and panel["export"].startswith("simulated only")
    at.radio(key="graph_color").set_value("format").run()
    assert at.selectbox(key="graph_weight_format").value == "int4", "the selector shows the layer's format"


def test_keeping_a_layer_fp32_and_back_returns_to_the_preset():
    at = _graph_page()
    at.toggle(key="graph_fp32").set_value(True).run()
    assert at.session_state[CONFIG_KEY].for_layer("/conv1/Conv").is_fp32
    assert _panel(at)["export"] == "FP32"
    at.toggle(key="graph_fp32").set_value(False).run()
    assert at.session_state[CONFIG_KEY] == PRESETS["W8A8"]


def test_the_overlay_downloads_as_model_explorer_node_data(downloads):
    at = _graph_page()
    data = json.loads(downloads["cnn_isolated_SQNR.json"])
    assert_graph_node_data(data)
    assert set(data["results"]) == {"/conv1/Conv", "/conv2/Conv", "/fc/Gemm"}
    assert [item["value"] for item in data["thresholds"]][:2] == [15.0, 30.0]
    at.radio(key="graph_export_key").set_value("output tensor name").run()
    data = json.loads(downloads["cnn_isolated_SQNR.json"])
    assert "/conv1/Conv_output_0" in data["results"]


def test_export_status_colours_download_with_a_colour_per_node(downloads):
    at = _graph_page()
    at.radio(key="graph_color").set_value("export status").run()
    data = json.loads(downloads["cnn_export_status.json"])
    assert_graph_node_data(data)
    assert all("bgColor" in result for result in data["results"].values())


def test_without_data_the_graph_colours_by_export_status_or_format_only():
    at = app_test("app.py").run()
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.switch_page(GRAPH).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.radio(key="graph_color").options == ["export status", "format"]
    assert "isolated SQNR" not in _panel(at)
    assert at.selectbox(key="graph_layer").options == ["/first/MatMul", "/second/MatMul"]


def test_every_op_can_be_drawn_instead_of_collapsed_chains():
    at = _graph_page()
    at.toggle(key="graph_expand").set_value(True).run()
    assert not at.exception and not at.error
    chart = at.get("plotly_chart")[0].proto.spec
    assert '"other op"' in chart and "MaxPool" in chart
    assert _panel(at)["to"] == "/relu1/Relu (via direct)", "the neighbours are the ops themselves"

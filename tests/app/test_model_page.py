"""The Model page (app.py): opens on a demo model, ready, and describes it with measured numbers."""
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from tests.app.conftest import ROOT, model_page_tables, run_page, texts

LAYERS, SIZES = 2, 3  # table order on the page: inputs, outputs, layers, sizes


def _measured_accuracy(name: str) -> float:
    """FP32 accuracy of a demo on the lab's evaluation split, run here directly in onnxruntime."""
    model_bytes, data = load_demo(name)
    _, evaluation = split_dataset(data, calibration_samples=256, seed=0)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits = session.run(None, evaluation.inputs)[0]
    return float(np.mean(logits.argmax(axis=1) == evaluation.labels))


def _opset9_model() -> bytes:
    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="/old/MatMul")], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
                              initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=7).SerializeToString()


def test_the_landing_page_opens_on_the_cnn_demo_with_its_layers():
    at = run_page("app.py")
    assert at.selectbox(key="model_choice").value == "cnn"
    layers = model_page_tables(at)[LAYERS]
    assert list(layers["layer"]) == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]
    assert list(layers["weight shape"]) == ["(16, 1, 3, 3)", "(32, 16, 3, 3)", "(10, 288)"]
    assert layers["share of model size (%)"].astype(float).sum() == pytest.approx(100, abs=0.05)
    assert "folded BatchNorm" in texts(at)


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_the_fp32_accuracy_shown_is_the_one_measured_by_running_the_model(name):
    at = run_page("app.py")
    at.selectbox(key="model_choice").set_value(name).run()
    shown = re.search(r"FP32 top-1 accuracy \(541 evaluation samples[^)]*\)\) ([\d.]+) %", texts(at))
    assert shown, texts(at)
    assert float(shown[1]) == pytest.approx(100 * _measured_accuracy(name), abs=0.005)


def test_the_size_table_counts_fp32_as_four_bytes_per_parameter_and_shrinks_with_bits():
    at = run_page("app.py")
    sizes = model_page_tables(at)[SIZES].set_index("format")["bytes"]
    assert sizes["FP32"] == 4 * 7690
    assert sizes["FP32"] > sizes["FP16"] > sizes["INT8 per-channel"] > sizes["INT4 per-channel"]


def test_the_size_chart_draws_one_bar_per_format_with_its_size_and_ratio_in_plain_html():
    at = run_page("app.py")
    sizes = model_page_tables(at)[SIZES]
    (chart,) = at.get("html")
    body = chart.proto.body
    assert 'class="lab-size-bars"' in body and "<script" not in body
    for label, kib, ratio in zip(sizes["format"], sizes["size (KiB)"], sizes["vs FP32"]):
        assert f"<span>{label}</span>" in body and f"{float(kib):.1f} KiB ({float(ratio):.1f}×)" in body
    widths = [float(w) for w in re.findall(r"width:([0-9.]+)%", body)]
    assert widths[0] == 100.0 and widths == sorted(widths, reverse=True)  # FP32 first, then smaller


def test_an_old_opset_model_says_it_was_converted():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("old.onnx", _opset9_model(), "application/octet-stream")).run()
    assert not at.exception and not at.error
    assert any("opset" in note.value and "9" in note.value for note in at.info), [n.value for n in at.info]
    assert list(model_page_tables(at)[LAYERS]["layer"]) == ["/old/MatMul"]


def test_the_guide_links_to_every_page_of_the_pages_folder():
    at = run_page("app.py")
    links = {element.proto.page for element in at.get("page_link")}
    pages = {re.sub(r"^\d+_", "", path.stem) for path in (ROOT / "pages").glob("*.py")} - {"Model"}
    assert {"Weights", "Activations", "Graph"} <= pages
    assert pages <= links


def test_the_landing_page_is_listed_as_model_and_every_page_file_is_in_the_navigation():
    from ui.navigation import PAGES

    at = run_page("app.py")
    assert PAGES[0].title == "Model" and PAGES[0].path == "pages/0_Model.py"
    assert {page.path for page in PAGES} == {f"pages/{path.name}" for path in (ROOT / "pages").glob("*.py")}
    assert "Quantization Lab" in [title.value for title in at.title]


def _already_quantized_model() -> bytes:
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(np.array(0.05, dtype=np.float32), "scale"),
                    numpy_helper.from_array(np.array(0, dtype=np.int8), "zero_point"),
                    numpy_helper.from_array(rng.integers(-100, 100, size=(4, 2)).astype(np.int8), "w_q"),
                    numpy_helper.from_array(np.array(0.01, dtype=np.float32), "w_scale")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["x_q"], name="/q/QuantizeLinear"),
             helper.make_node("DequantizeLinear", ["x_q", "scale", "zero_point"], ["x_dq"], name="/q/DequantizeLinear"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="/w/DequantizeLinear"),
             helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="/fc/MatMul")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_an_already_quantized_model_is_described_as_such():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("qdq.onnx", _already_quantized_model(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    assert any("already quantized" in note.value for note in at.info), [n.value for n in at.info]
    assert "already quantized" in model_page_tables(at)[LAYERS]["note"].iloc[0]


def _many_unnamed_nodes_model(count: int = 40) -> bytes:
    """x -> 40 unnamed Relu -> /fc/MatMul -> y, whose output shape is symbolic with a '*' in it."""
    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    nodes = [helper.make_node("Relu", [f"h{i}"], [f"h{i + 1}"]) for i in range(count)]
    nodes.append(helper.make_node("MatMul", [f"h{count}", "w"], ["y"], name="/fc/MatMul"))
    graph = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["2*batch*2", 2])],
                              initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_a_long_list_of_renamed_nodes_is_a_count_with_the_names_in_an_expander():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("many.onnx", _many_unnamed_nodes_model(), "x")).run()
    assert not at.exception and not at.error
    note = next(info.value for info in at.info if "unnamed" in info.value)
    assert note == ("named 40 unnamed node(s) after their op type and position in the graph (40 listed below).")
    assert any(expander.label == "The 40 names" for expander in at.expander)
    assert at.code[0].value.splitlines()[:2] == ["Relu_0", "Relu_1"], "the names given, as code"


def test_symbolic_shapes_are_shown_as_code_so_their_signs_survive():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("many.onnx", _many_unnamed_nodes_model(), "x")).run()
    outputs = model_page_tables(at)[1]
    assert outputs["shape"].tolist() == ["`(2*batch*2, 2)`"]

"""The Vector search page: the demo transformer's pooled features indexed in quantized vector formats."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.conftest import texts

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "10_Vector_search.py")


def _page(model: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_pooled_features_are_the_default_source_and_fp32_vectors_have_recall_one():
    at = _page("transformer")
    assert at.selectbox(key="vector_source").value.startswith("last layer's input: /ReduceMean_output_0")
    frame = at.dataframe[0].value
    assert list(frame["vectors"].unique()) == ["fp32", "int8", "int4", "binary", "pq8"]
    assert set(frame["model"]) == {"FP32", "W8A8"}
    fp32 = frame[(frame["model"] == "FP32") & (frame["vectors"] == "fp32")].iloc[0]
    assert fp32["R@1"] == fp32["R@10"] == fp32["R@100"] == 1.0
    assert fp32["bytes/vector"] == 128  # 32 float32 dimensions
    binary = frame[(frame["model"] == "FP32") & (frame["vectors"] == "binary")].iloc[0]
    assert binary["bytes/vector"] == 4 and binary["R@10"] <= binary["R@10 rescored"]
    assert "held out as queries" in texts(at)


def test_choosing_formats_and_an_output_source():
    at = _page("transformer")
    at.multiselect(key="vector_formats").set_value(["int8", "pq4"]).run()
    assert list(at.dataframe[0].value["vectors"].unique()) == ["int8", "pq4"]
    at.selectbox(key="vector_source").set_value(at.selectbox(key="vector_source").options[0]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="vector_source").value.startswith("output logits")
    assert len(at.dataframe[0].value) == 4


def _sequence_model(rank: int):
    """x -> MatMul -> Relu -> MatMul -> y, x of rank `rank` (batch, [5,] 4): the last layer's input has that rank."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from quant_core.model.model_io import load_model, prepare_model

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w2")
    middle = [5] if rank == 3 else []
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/first/MatMul"),
         helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="/second/MatMul")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *middle, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", *middle, 3])], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return prepare_model(load_model(model.SerializeToString()))


def test_the_last_layers_input_is_offered_only_when_it_is_one_vector_per_sample():
    from ui.vectors_view import sources

    flat = _sequence_model(rank=2)
    assert [kind for kind, _ in sources(flat.info, flat.model).values()] == ["output", "features"]
    sequence = _sequence_model(rank=3)
    assert sources(sequence.info, sequence.model) == {}, "a sequence is neither an output vector nor pooled features"

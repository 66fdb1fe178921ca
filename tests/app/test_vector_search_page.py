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

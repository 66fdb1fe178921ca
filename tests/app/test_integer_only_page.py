"""The Integer-only page: the demo CNN's W8A8 export is integer-only; the transformer's is not, and says where."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "pages" / "11_Integer_only.py")


def _page(model: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    if at.selectbox(key="model_choice").value != model:
        at.selectbox(key="model_choice").set_value(model).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_cnn_is_integer_only_with_the_same_accuracy():
    at = _page("cnn")
    assert at.success and at.success[0].value.startswith("Integer-only: yes")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Exported model accuracy"] == metrics["Integer-only accuracy"]
    layers = at.dataframe[-1].value
    assert list(layers["layer"]) == ["/conv1/Conv", "/conv2/Conv"]
    assert (layers["codes changed %"] == 0).all()  # 31-bit multipliers represent float32 scales exactly
    at.select_slider(key="integer_multiplier_bits").set_value(8).run()
    assert (at.dataframe[-1].value["multiplier rel. error"] > 0).all()


def test_transformer_lists_its_float_nodes():
    at = _page("transformer")
    assert at.error and at.error[0].value.startswith("Integer-only: no")
    ops = set(at.dataframe[0].value["op"])
    assert {"LayerNormalization", "Softmax"} <= ops

"""The Model page (app.py): opens on a demo model, ready, and describes it with measured numbers."""
from tests.app.conftest import run_page, texts


def test_the_landing_page_opens_on_the_cnn_demo_with_its_layers_and_accuracy():
    at = run_page("app.py")
    assert at.selectbox(key="model_choice").value == "cnn"
    layers = at.dataframe[2].value
    assert list(layers["layer"])[:1] == ["/conv1/Conv"]
    assert "FP32 top-1 accuracy" in texts(at)

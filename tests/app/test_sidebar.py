"""The shared sidebar: model choice, data, and the quantization config with presets and save/load."""
import json
import re

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from tests.app.conftest import model_page_tables, run_page, texts, tiny_data_bytes, tiny_model_bytes

CONFIG_FILE = "quant_config_{}.json"


def _layer_names(at) -> list[str]:
    return list(model_page_tables(at)[2]["layer"])


def test_the_preset_starts_at_w8a8_and_the_download_serves_that_config(downloads):
    at = run_page("app.py")
    assert at.selectbox(key="config_preset").value == "W8A8"
    served = QuantConfig.from_json(downloads[CONFIG_FILE.format("W8A8")])
    assert served == PRESETS["W8A8"]


def test_a_saved_config_loads_back_as_the_same_config(downloads):
    at = run_page("app.py")
    custom = PRESETS["W4A8"].with_layer("/conv1/Conv", LayerQuant(TensorQuant("int8")))
    at.file_uploader(key="config_upload").set_value(("mine.json", custom.to_json().encode(), "application/json"))
    at.run()
    assert at.selectbox(key="config_preset").value == "custom"
    saved = downloads[CONFIG_FILE.format("custom")]
    assert QuantConfig.from_json(saved) == custom

    at.selectbox(key="config_preset").set_value("FP32").run()
    assert QuantConfig.from_json(downloads[CONFIG_FILE.format("FP32")]) == PRESETS["FP32"]
    at.file_uploader(key="config_upload").set_value(("saved.json", saved, "application/json")).run()
    assert not at.error
    assert at.selectbox(key="config_preset").value == "custom"
    downloads.clear()
    at.run()
    assert QuantConfig.from_json(downloads[CONFIG_FILE.format("custom")]) == custom


def test_the_config_survives_a_page_switch():
    at = run_page("app.py")
    at.selectbox(key="config_preset").set_value("W4 weight-only per-group").run()
    at.switch_page("pages/1_Weights.py").run()
    assert not at.exception
    assert at.selectbox(key="config_preset").value == "W4 weight-only per-group"
    at.switch_page("pages/0_Model.py").run()
    assert at.selectbox(key="config_preset").value == "W4 weight-only per-group"


def test_a_broken_config_file_shows_one_error_and_keeps_the_previous_config(downloads):
    at = run_page("app.py")
    at.selectbox(key="config_preset").set_value("W4A8").run()
    at.file_uploader(key="config_upload").set_value(("bad.json", b"{not json", "application/json")).run()
    assert not at.exception
    assert len(at.error) == 1 and "bad.json" in at.error[0].value and "previous config is kept" in at.error[0].value
    assert at.selectbox(key="config_preset").value == "W4A8"


def test_a_config_naming_layers_the_model_does_not_have_is_refused():
    at = run_page("app.py")
    foreign = PRESETS["W8A8"].with_layer("/not/a/layer", LayerQuant(TensorQuant("int4")))
    at.file_uploader(key="config_upload").set_value(("foreign.json", foreign.to_json().encode(), "application/json"))
    at.run()
    assert len(at.error) == 1 and "/not/a/layer" in at.error[0].value
    assert at.selectbox(key="config_preset").value == "W8A8"


def test_choosing_another_demo_shows_its_layers():
    at = run_page("app.py")
    at.selectbox(key="model_choice").set_value("mlp").run()
    assert not at.exception
    assert _layer_names(at) == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]
    assert any(h.value == "Model: mlp" for h in at.header)


def test_an_uploaded_model_replaces_the_demo_and_data_can_be_added_for_it():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    assert _layer_names(at) == ["/first/MatMul", "/second/MatMul"]
    assert at.selectbox(key="model_choice").value == "uploaded"
    assert any(h.value == "Model: tiny.onnx" for h in at.header)
    assert any("upload a .npz" in w.value for w in at.warning)

    at.file_uploader(key="data_upload").set_value(("tiny.npz", tiny_data_bytes(300), "application/octet-stream"))
    at.run()
    assert not at.exception and not at.error
    counts = re.search(r"tiny\.npz: (\d+) calibration / (\d+) evaluation samples", texts(at))
    assert counts and int(counts[1]) + int(counts[2]) == 300
    assert "FP32 top-1 accuracy" in texts(at)


def test_a_corrupt_model_upload_shows_an_error_and_keeps_the_previous_model():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("broken.onnx", b"\x08\x07garbage", "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "broken.onnx" in message and "previous model is still loaded" in message and "Traceback" not in message
    assert _layer_names(at) == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]


def test_data_that_does_not_fit_the_model_shows_an_error_and_keeps_the_demo_data():
    at = run_page("app.py")
    at.file_uploader(key="data_upload").set_value(("wrong.npz", tiny_data_bytes(50), "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "wrong.npz" in at.error[0].value
    assert "256 calibration / 541 evaluation samples" in texts(at)


def test_a_config_with_an_unknown_format_is_refused_naming_the_format():
    at = run_page("app.py")
    payload = json.dumps({"default": {"weights": {"format": "int9x"}}}).encode()
    at.file_uploader(key="config_upload").set_value(("odd.json", payload, "application/json")).run()
    assert len(at.error) == 1 and "unknown number format" in at.error[0].value


def test_data_too_small_to_split_is_refused_with_one_line():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.file_uploader(key="data_upload").set_value(("one.npz", tiny_data_bytes(1), "application/octet-stream"))
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "one.npz" in at.error[0].value and "2 samples" in at.error[0].value


def test_the_chosen_model_follows_the_user_to_other_pages():
    at = run_page("app.py")
    at.selectbox(key="model_choice").set_value("mlp").run()
    at.switch_page("pages/1_Weights.py").run()
    assert not at.exception
    assert at.selectbox(key="weights_layer").options == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]
    assert at.selectbox(key="model_choice").value == "mlp"


def test_an_uploaded_model_follows_the_user_to_other_pages():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    at.switch_page("pages/1_Weights.py").run()
    assert not at.exception
    assert at.selectbox(key="weights_layer").options == ["/first/MatMul", "/second/MatMul"]
    assert at.selectbox(key="model_choice").value == "uploaded"


def test_choosing_a_demo_after_an_upload_goes_back_to_the_demo():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream"))
    at.run()
    assert at.selectbox(key="model_choice").options[-1] == "Uploaded: tiny.onnx"
    at.selectbox(key="model_choice").set_value("cnn").run()
    assert not at.exception
    assert _layer_names(at) == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]
    assert not any(option.startswith("Uploaded") for option in at.selectbox(key="model_choice").options)


def test_switching_model_drops_a_config_naming_the_old_models_layers():
    at = run_page("app.py")
    custom = PRESETS["W8A8"].with_layer("/conv2/Conv", LayerQuant(TensorQuant("int4")))
    at.file_uploader(key="config_upload").set_value(("cnn.json", custom.to_json().encode(), "application/json"))
    at.run()
    assert at.selectbox(key="config_preset").value == "custom"
    at.selectbox(key="model_choice").set_value("mlp").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="config_preset").value == "W8A8"
    assert any("/conv2/Conv" in note.value for note in at.info)


def _holds(value, content: bytes, depth: int = 4) -> bool:
    """True if `value` (session state, searched through containers and objects) holds `content`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) == content
    if depth == 0:
        return False
    if isinstance(value, dict):
        return any(_holds(v, content, depth - 1) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds(v, content, depth - 1) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return any(_holds(v, content, depth - 1) for v in vars(value).values())
    return False


def test_the_session_keeps_an_upload_once_as_the_opened_model_not_also_as_bytes():
    model, data = tiny_model_bytes(), tiny_data_bytes(300)
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", model, "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("tiny.npz", data, "application/octet-stream")).run()
    assert not at.exception and not at.error
    state = dict(at.session_state.items())
    assert not _holds(state, model) and not _holds(state, data)
    assert "tiny.npz: " in texts(at)


def test_a_lesson_on_a_demo_model_does_not_unpin_the_uploaded_model_and_data():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("tiny.npz", tiny_data_bytes(300), "application/octet-stream")).run()
    at.switch_page("pages/12_Learn.py").run()
    at.radio(key="lesson").set_value(at.radio(key="lesson").options[-1]).run()  # a lesson on a demo model
    assert not at.exception
    at.switch_page("pages/0_Model.py").run()
    assert not at.exception and not at.error
    assert _layer_names(at) == ["/first/MatMul", "/second/MatMul"]
    assert "tiny.npz: " in texts(at)


def test_data_too_small_to_split_is_refused_and_the_previous_data_stays_in_use():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("tiny.npz", tiny_data_bytes(300), "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value(("one.npz", tiny_data_bytes(1), "application/octet-stream")).run()
    assert not at.exception
    assert len(at.error) == 1 and "previous data is still used" in at.error[0].value
    at.run()
    assert not at.exception
    assert "tiny.npz: " in texts(at)


def test_a_session_that_lost_its_uploaded_model_says_so_and_shows_the_demo():
    at = run_page("app.py")
    at.file_uploader(key="model_upload").set_value(("tiny.onnx", tiny_model_bytes(), "application/octet-stream")).run()
    at.session_state["_cache_pinned"] = {}  # not expected to happen; must never be a traceback
    at.run()
    assert not at.exception
    assert any("no longer held by this session" in e.value for e in at.error)
    assert _layer_names(at) == ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]  # the default demo

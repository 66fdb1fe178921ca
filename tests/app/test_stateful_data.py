"""A stateful model from a plain .npz in the app: the data layout shown, streaming beside per frame, every page."""
from pathlib import Path

import pytest

from tests.app.conftest import ROOT, app_test, model_page_tables, texts

STRUCTURES = ROOT / "demo_models" / "structures"
PAGES = ["pages/1_Weights.py", "pages/2_Activations.py", "pages/3_Mixed_precision.py", "pages/5_Sensitivity.py",
         "pages/6_Trade-offs.py"]


def _upload(name: str):
    at = app_test("app.py").run()
    at.file_uploader(key="model_upload").set_value((f"{name}.onnx", (STRUCTURES / f"{name}.onnx").read_bytes(),
                                                     "application/octet-stream")).run()
    at.file_uploader(key="data_upload").set_value((f"{name}.npz", (STRUCTURES / f"{name}.npz").read_bytes(),
                                                    "application/octet-stream")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _streaming_rows(at) -> list[str]:
    return [list(table["run"]) for table in model_page_tables(at) if "run" in table.columns]


def test_the_model_page_says_how_it_read_the_data_and_shows_streaming_beside_per_frame():
    at = _upload("vad_gru")
    shown = texts(at)
    assert "'state': each sample a complete input (batch dimension 1 at axis 1)" in shown
    assert "'sr': one scalar per sample" in shown
    assert "streaming: consecutive samples carry the state stateN → state" in shown
    assert _streaming_rows(at) == [["per frame (recorded state)", "streaming (own state carried)"]]


def test_the_state_pairs_can_be_turned_off_or_retyped_and_a_bad_pair_is_one_line():
    at = _upload("lstm_hc")
    assert "hn → h, cn → c" in texts(at)
    at.text_input(key="data_state").set_value("none").run()
    assert not at.exception and _streaming_rows(at) == []
    at.text_input(key="data_state").set_value("hn=x").run()
    assert len(at.error) == 1
    assert at.error[0].value.startswith("state mapping hn=x: output 'hn' is (1, batch, 16) float32 but input 'x'")
    assert _streaming_rows(at)  # the inferred pairs are used


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_a_stateful_model(page):
    at = _upload("vad_gru")
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_the_tradeoffs_table_shows_streaming_accuracy_beside_per_frame():
    at = _upload("lstm_hc")
    at.switch_page("pages/6_Trade-offs.py").run()
    assert not at.exception, [e.message for e in at.exception]
    tables = [frame.value for frame in at.dataframe]
    table = next(frame for frame in tables if "variant" in frame.columns)
    assert {"accuracy (%)", "streaming accuracy (%)"} <= set(table.columns)
    assert table["streaming accuracy (%)"].notna().all()

"""The evaluation split is cut to the samples whose FP32 outputs fit `evaluate.EVALUATION_OUTPUT_BYTES`.

The Evaluator holds the FP32 outputs of what it scores for as long as it lives, and a config's outputs beside
them while scoring: with an upload of thousands of text lines (1 MB of outputs each) that grew without bound.
Now the first samples that fit are scored (at least EVALUATION_MIN_SAMPLES), the numbers are those of an
Evaluator given only those samples, and `sample_note` says so.
"""
import json

import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.engine import evaluate as evaluate_module
from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.model.data import Dataset
from quant_core.model.model_io import prepare_model
from tests.engine.conftest import chain_model


@pytest.fixture
def wide():
    """A dense chain with a 64-wide output (256 bytes a sample) and 100 labelled samples."""
    prepared = prepare_model(chain_model(widths=(6, 16, 64)))
    rng = np.random.default_rng(0)
    data = Dataset({"x": rng.normal(size=(100, 6)).astype(np.float32)}, rng.integers(0, 64, 100))
    return prepared, calibrate(prepared, data), data


def test_a_split_past_the_output_budget_is_scored_on_its_first_samples(wide, monkeypatch):
    prepared, calibration, data = wide
    monkeypatch.setattr(evaluate_module, "EVALUATION_OUTPUT_BYTES", 40 * 256)
    capped = Evaluator(prepared, calibration, data)
    assert (capped.sample_count, capped.available_samples) == (40, 100)
    assert capped.fp32_outputs[0].shape == (40, 64) and len(capped.labels) == 40
    assert capped.sample_note.startswith("scored on the first 40 of the 100 evaluation samples")
    first = Evaluator(prepared, calibration, data.subset(np.arange(40)))
    assert first.sample_note is None
    for name in ("W8A8", "W4A8"):
        got, want = capped.evaluate(PRESETS[name]), first.evaluate(PRESETS[name])
        assert got.sample_count == want.sample_count == 40
        assert json.dumps(got.score.to_dict()) == json.dumps(want.score.to_dict())  # NaN: a class never seen
    assert capped.layer_errors(PRESETS["W8A8"]) == first.layer_errors(PRESETS["W8A8"])


def test_at_least_the_minimum_is_scored_and_small_outputs_are_never_cut(wide, monkeypatch):
    prepared, calibration, data = wide
    monkeypatch.setattr(evaluate_module, "EVALUATION_OUTPUT_BYTES", 1)
    assert Evaluator(prepared, calibration, data).sample_count == evaluate_module.EVALUATION_MIN_SAMPLES
    monkeypatch.undo()
    whole = Evaluator(prepared, calibration, data)
    assert whole.sample_count == 100 and whole.sample_note is None


def test_the_command_line_says_how_many_samples_it_scored(wide, monkeypatch, tmp_path, capsys):
    import onnx
    from quant_core.cli.main import main
    prepared, _, data = wide
    onnx.save(prepared.model, tmp_path / "wide.onnx")
    np.savez(tmp_path / "wide.npz", x=np.concatenate([data.inputs["x"]] * 5))  # 500: 250 evaluated
    monkeypatch.setattr(evaluate_module, "EVALUATION_OUTPUT_BYTES", 40 * 256)
    assert main(["evaluate", str(tmp_path / "wide.onnx"), "--data", str(tmp_path / "wide.npz"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["sample_count"], document["available_samples"]) == (40, 250)
    assert document["sample_note"].startswith("scored on the first 40 of the 250 evaluation samples")

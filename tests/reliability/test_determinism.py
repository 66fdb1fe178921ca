"""Same inputs and config give the same numbers: splits, calibration, evaluation, sweeps, suggestions, the CLI.

Everything is built twice from scratch (new onnxruntime sessions, new caches) and compared exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from quant_core.engine.calibrate import calibrate
from quant_core.config import PRESETS
from quant_core.model.data import split_dataset
from quant_core.model.demo import DEMO_MODELS, load_demo
from quant_core.engine.evaluate import Evaluator
from quant_core.model.model_io import load_model, prepare_model
from quant_core.search.sensitivity import run_sweep
from quant_core.search.suggest import suggest_config
from tests.reliability.conftest import ROOT, run_cli

SWEEP_FORMATS = ["int8", "int4", "int2", "fp8_e4m3fn", "ternary", "kmeans3"]


def _evaluator(name: str) -> Evaluator:
    """A new Evaluator for demo `name` on the app's split, from the file on up."""
    model_bytes, data = load_demo(name)
    prepared = prepare_model(load_model(model_bytes))
    calibration_data, evaluation_data = split_dataset(data, calibration_samples=256, seed=0)
    return Evaluator(prepared, calibrate(prepared, calibration_data), evaluation_data)


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def twins(request):
    return _evaluator(request.param), _evaluator(request.param)


def test_the_split_is_the_same_every_time_and_depends_on_the_seed():
    _, data = load_demo("cnn")
    first, second = split_dataset(data, seed=0), split_dataset(data, seed=0)
    for a, b in zip(first, second):
        assert np.array_equal(a.inputs["image"], b.inputs["image"]) and np.array_equal(a.labels, b.labels)
    other, _ = split_dataset(data, seed=1)
    assert not np.array_equal(other.labels, first[0].labels)


def test_calibration_twice_gives_identical_histograms(twins):
    a, b = (evaluator.calibration for evaluator in twins)
    assert a.tensors == b.tensors and a.sample_count == b.sample_count
    for tensor in a.tensors:
        ha, hb = a.histogram(tensor), b.histogram(tensor)
        assert np.array_equal(ha.counts, hb.counts) and np.array_equal(ha.edges, hb.edges), tensor


@pytest.mark.parametrize("preset", ["W8A8", "W4A8", "W8 weight-only", "FP16"])
def test_evaluation_twice_gives_identical_results(twins, preset):
    a, b = twins
    config = PRESETS[preset]
    assert a.evaluate(config).to_dict() == b.evaluate(config).to_dict()
    assert [e.to_dict() for e in a.layer_errors(config)] == [e.to_dict() for e in b.layer_errors(config)]


def test_a_sweep_twice_gives_identical_rows(twins):
    a, b = twins
    rows_a = [row.to_dict() for row in run_sweep(a, SWEEP_FORMATS, activations=True)]
    rows_b = [row.to_dict() for row in run_sweep(b, SWEEP_FORMATS, activations=True)]
    assert len(rows_a) == len(a.layers) * len(SWEEP_FORMATS)
    assert rows_a == rows_b


def test_a_suggestion_twice_gives_the_same_config_and_trace(twins):
    a, b = twins
    budget = a.fp32_size_bytes // 6
    first, second = suggest_config(a, max_size_bytes=budget), suggest_config(b, max_size_bytes=budget)
    assert first.config == second.config
    assert first.to_dict() == second.to_dict()


def test_the_command_line_prints_the_same_json_twice(digits_npz, tmp_path):
    config = tmp_path / "w4a8.json"
    config.write_text(PRESETS["W4A8"].to_json())
    runs = [run_cli("evaluate", DEMO_MODELS["mlp"].path, "--data", digits_npz, "--config", config, "--json")
            for _ in range(2)]
    assert runs[0].status == 0 and runs[0].out == runs[1].out


@pytest.mark.slow
def test_separate_processes_with_different_hash_seeds_print_the_same_json(digits_npz):
    """Nothing depends on set/dict ordering of strings (PYTHONHASHSEED) or on the process."""
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        completed = subprocess.run(
            [sys.executable, "-m", "quant_core", "sensitivity", str(DEMO_MODELS["mlp"].path), "--data",
             str(digits_npz), "--formats", "int8,int4,kmeans3", "--json"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert completed.returncode == 0, completed.stderr
        outputs.append(completed.stdout)
    assert outputs[0] == outputs[1] and outputs[0].strip()

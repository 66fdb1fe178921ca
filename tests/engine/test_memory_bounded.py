"""Every engine run of the split goes in batches within a byte budget, and the numbers do not depend on it."""
import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.engine import evaluate as evaluate_module
from quant_core.engine.calibrate import activation_bytes, calibrate, calibration_tensors
from quant_core.engine.evaluate import Evaluator
from quant_core.model.data import Dataset, split_dataset
from quant_core.model.demo import load_demo
from quant_core.model.layout import classic_layout, feeder
from quant_core.model.model_io import load_model, prepare_model
from quant_core.search.sensitivity import run_sweep
from quant_core.search.suggest import suggest_config

from .conftest import chain_model

CONFIGS = ("FP32", "W8A8", "W4A8", "W8 weight-only")


def _feeder(samples: int, batch_size: int = 1024):
    x = np.zeros((samples, 4), dtype=np.float32)
    return feeder({"x": x}, _Info(), ("x",), ("y",), batch_size)


class _Info:
    """A model whose input x has a free batch dimension."""

    class _Tensor:
        name, shape, dtype = "x", ("batch", 4), "float32"

    inputs = (_Tensor(),)
    outputs = ()


def test_the_budget_sets_the_rows_from_one_sample_weighed():
    weighed = []
    found = _feeder(10).within_budget(lambda feed: weighed.append(len(feed["x"])) or 100, 350)
    assert weighed == [1]  # one sample weighed
    assert list(found.bounds()) == [(0, 3), (3, 6), (6, 9), (9, 10)]


def test_a_last_batch_smaller_than_the_minimum_joins_the_one_before():
    found = _feeder(10).within_budget(lambda feed: 100, 350, min_batch=2)
    assert list(found.bounds()) == [(0, 3), (3, 6), (6, 10)]
    assert list(_feeder(7).within_budget(lambda feed: 100, 1, min_batch=2).bounds()) == [(0, 2), (2, 4), (4, 7)]


def test_a_budget_that_holds_every_sample_keeps_one_batch_and_small_batches_stay():
    assert list(_feeder(10).within_budget(lambda feed: 1, 2**30).bounds()) == [(0, 10)]
    assert _feeder(10, batch_size=4).within_budget(lambda feed: 1, 2**30).batch_size == 4
    one = _feeder(10, batch_size=1)
    assert one.within_budget(lambda feed: pytest.fail("not weighed"), 1) is one


def test_a_heavy_split_comes_in_balanced_batches_one_per_worker_whatever_the_machine():
    # 16 samples of 1 MiB, a budget of 13 of them: two batches of 8 (not 13 + 3), so that two workers share it.
    found = _feeder(16).within_budget(lambda feed: 2**20, 13 * 2**20, min_batch=2, parts=2, parts_from_bytes=2**23)
    assert list(found.bounds()) == [(0, 8), (8, 16)] and found.in_flight == 2
    # A budget of 5 of them: four batches of 4 (balanced: not 5, 5, 5, 1), two at a time.
    found = _feeder(16).within_budget(lambda feed: 2**20, 5 * 2**20, min_batch=2, parts=2, parts_from_bytes=2**23)
    assert list(found.bounds()) == [(0, 4), (4, 8), (8, 12), (12, 16)] and found.in_flight == 2


def test_batches_that_the_minimum_makes_heavier_than_the_budget_run_one_at_a_time():
    # 80 MiB a sample, a 64 MiB budget, at least 2 samples a batch: one batch (160 MiB) is over twice the
    # budget already.
    found = _feeder(16).within_budget(lambda feed: 80 * 2**20, 64 * 2**20, min_batch=2, parts=2,
                                      parts_from_bytes=2**23)
    assert found.batch_size == 2 and found.in_flight == 1
    assert _feeder(16).in_flight == 1  # nothing weighed: one at a time
    # The whole split within the budget: still two batches.
    assert list(_feeder(16).within_budget(lambda feed: 2**20, 2**30, min_batch=2, parts=2,
                                          parts_from_bytes=2**23).bounds()) == [(0, 8), (8, 16)]


def test_an_in_flight_budget_apart_lets_two_batches_of_the_minimum_run_side_by_side():
    # 80 MiB a sample, a 64 MiB batch budget, at least 2 samples a batch: 160 MiB a batch, so within twice
    # the batch budget one at a time; within an in-flight budget of 320 MiB, two.
    one = _feeder(16).within_budget(lambda feed: 80 * 2**20, 64 * 2**20, min_batch=2)
    two = _feeder(16).within_budget(lambda feed: 80 * 2**20, 64 * 2**20, min_batch=2, in_flight_budget=320 * 2**20)
    assert one.batch_size == two.batch_size == 2 and (one.in_flight, two.in_flight) == (1, 2)


def test_the_error_pass_of_a_heavy_conv_model_runs_two_batches_side_by_side():
    """The per-layer error pass weighs one sample as its every layer input and output at least (ocr_rec: 43
    MiB, measured 31 MiB of onnxruntime's working set), and its budget holds two batches of two such samples:
    it uses both cores on the conformance conv models (before: one batch at a time, 4.3-4.5 forwards)."""
    sample = 43 * 2**20
    found = _feeder(16).within_budget(lambda feed: sample, evaluate_module.LAYER_ERRORS_BATCH_BYTES,
                                      min_batch=evaluate_module.EVALUATION_MIN_BATCH, parts=2, parts_from_bytes=2**23,
                                      in_flight_budget=evaluate_module.LAYER_ERRORS_IN_FLIGHT_BYTES)
    assert found.batch_size == 2 and found.in_flight == 2


def test_a_light_split_or_too_few_samples_stay_in_one_batch():
    light = _feeder(16).within_budget(lambda feed: 1024, 2**30, min_batch=2, parts=2, parts_from_bytes=2**23)
    assert list(light.bounds()) == [(0, 16)]  # 16 KiB in all: threads would cost more than they save
    three = _feeder(3).within_budget(lambda feed: 2**24, 2**30, min_batch=2, parts=2, parts_from_bytes=1)
    assert list(three.bounds()) == [(0, 3)]  # two batches would leave one with a lone sample


def test_a_model_that_fixes_its_batch_keeps_it():
    fixed = _feeder(10)
    fixed = type(fixed)(fixed.inputs, classic_layout(("x",)), 5, 10, fixed_batch=True)
    assert fixed.within_budget(lambda feed: pytest.fail("not weighed"), 1) is fixed


def _evaluators(prepared, calibration, data, monkeypatch):
    """(one batch for the whole split, batches of two or three samples), sharing one session."""
    monkeypatch.setattr(evaluate_module, "EVALUATION_BATCH_BYTES", 2**62)
    whole = Evaluator(prepared, calibration, data)
    monkeypatch.setattr(evaluate_module, "EVALUATION_BATCH_BYTES", 3 * calibration.sample_bytes - 1)
    small = Evaluator(prepared, calibration, data, session=whole.session)
    assert whole.feeder.batch_size >= whole.sample_count and small.feeder.batch_size == 2
    return whole, small


def _demo(name):
    model, held_out = load_demo(name)
    prepared = prepare_model(load_model(model))
    calibration_data, evaluation = split_dataset(held_out)
    return prepared, calibrate(prepared, calibration_data), evaluation.subset(np.arange(61))


def _chain():
    prepared = prepare_model(chain_model())
    x = np.random.default_rng(1).normal(size=(300, 6)).astype(np.float32)
    return prepared, calibrate(prepared, Dataset(inputs={"x": x[:200]})), Dataset(inputs={"x": x[200:261]})


@pytest.mark.parametrize("case", ["mlp", "cnn", "transformer", "chain"])
def test_small_batches_give_the_same_outputs_scores_and_layer_errors_as_one_batch(case, monkeypatch):
    prepared, calibration, data = _chain() if case == "chain" else _demo(case)
    whole, small = _evaluators(prepared, calibration, data, monkeypatch)
    assert len(list(small.feeder.bounds())) == 30  # 61 samples: 29 batches of 2, then 3
    for expected, found in zip(whole.fp32_outputs, small.fp32_outputs):
        assert np.array_equal(expected, found)
    for name in CONFIGS:
        config = PRESETS[name]
        for expected, found in zip(whole.outputs(config), small.outputs(config)):
            assert np.array_equal(expected, found), name
        assert small.evaluate(config) == whole.evaluate(config), name
        assert small.layer_errors(config) == whole.layer_errors(config), name


@pytest.mark.parametrize("case", ["cnn", "transformer"])
def test_sweeps_and_suggestions_from_captured_batches_equal_one_batch(case, monkeypatch):
    """Suffix runs and anchors capture per batch: the rows and the suggestion are the same."""
    prepared, calibration, data = _demo(case)
    whole, small = _evaluators(prepared, calibration, data, monkeypatch)
    formats = ["int8", "int4", "int2"]
    assert [row.to_dict() for row in run_sweep(small, formats)] == [row.to_dict() for row in run_sweep(whole, formats)]
    budget = int(0.6 * whole.fp32_size_bytes)
    assert suggest_config(small, max_size_bytes=budget).to_dict() == suggest_config(whole, max_size_bytes=budget).to_dict()


def test_calibration_weighs_one_sample_and_a_weights_only_evaluator_weighs_the_same():
    prepared, calibration, data = _demo("cnn")
    feed = {"input": data.inputs["input"][:1]} if "input" in data.inputs else {
        name: array[:1] for name, array in data.inputs.items()}
    assert calibration.sample_bytes == activation_bytes(prepared, feed) > 0
    assert len(calibration_tensors(prepared)) == len(calibration.tensors)
    weights_only = Evaluator(prepared, None, data)
    assert weights_only.feeder.batch_size >= data.num_samples  # 61 digits fit the budget: one batch

"""Batches on several cores: results in batch order, the same numbers as on one."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.engine.calibrate import calibrate
from quant_core.engine.evaluate import Evaluator
from quant_core.engine.workers import default_workers, map_in_order
from tests.engine.run_counting import counting_runs


def test_results_come_in_the_items_order_whatever_finishes_first():
    def slow_first(i: int) -> int:
        time.sleep(0.05 if i == 0 else 0.0)
        return i * i

    assert list(map_in_order(slow_first, range(7), workers=2)) == [i * i for i in range(7)]


def test_at_most_workers_items_are_drawn_ahead_of_the_one_yielded():
    drawn = []

    def items():
        for i in range(10):
            drawn.append(i)
            yield i

    results = map_in_order(lambda i: i, items(), workers=2)
    assert next(results) == 0
    assert len(drawn) <= 3  # the one yielded, one in flight, and at most one being drawn


def test_batches_run_on_two_threads_at_once_when_two_workers_are_asked_for():
    names, barrier = set(), threading.Barrier(2, timeout=5)

    def meet(i: int) -> int:
        barrier.wait()  # both must be running at the same time, or this times out
        names.add(threading.current_thread().name)
        return i

    assert list(map_in_order(meet, range(4), workers=2)) == [0, 1, 2, 3]
    assert len(names) == 2


def test_an_error_in_one_item_reaches_the_caller_in_its_turn():
    def fails_on_three(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    results = map_in_order(fails_on_three, range(6), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_one_worker_or_one_item_stays_in_the_callers_thread():
    caller = threading.current_thread().name
    assert list(map_in_order(lambda i: threading.current_thread().name, range(3), workers=1)) == [caller] * 3
    assert list(map_in_order(lambda i: threading.current_thread().name, [0], workers=2)) == [caller]


def test_default_workers_is_one_or_two():
    assert default_workers() in (1, 2)


def _configs(evaluator: Evaluator) -> list[QuantConfig]:
    layer = next(layer for layer in evaluator.layers if layer in evaluator.session.fp32_weights)
    return [PRESETS["W8A8"], PRESETS["W4 weight-only per-group"],
            PRESETS["W8A8"].with_layer(layer, LayerQuant(TensorQuant("int3", granularity="per_channel")))]


def test_an_evaluator_on_two_workers_gives_every_number_of_one_worker_bit_for_bit(demo_cnn):
    prepared, calibration_data, evaluation = demo_cnn
    calibration = calibrate(prepared, calibration_data)
    one = Evaluator(prepared, calibration, evaluation, batch_size=48, workers=1)
    two = Evaluator(prepared, calibration, evaluation, batch_size=48, workers=2)
    assert len(list(two.feeder.batches())) >= 2  # so that the two workers really share the split
    for config in _configs(one):
        for a, b in zip(one.outputs(config), two.outputs(config)):
            np.testing.assert_array_equal(a, b)
        assert one.evaluate(config) == two.evaluate(config)
        assert one.layer_errors(config) == two.layer_errors(config)


def test_evaluate_with_errors_equals_evaluate_and_layer_errors_apart(demo_cnn):
    prepared, calibration_data, evaluation = demo_cnn
    calibration = calibrate(prepared, calibration_data)
    apart = Evaluator(prepared, calibration, evaluation, batch_size=48)
    together = Evaluator(prepared, calibration, evaluation, batch_size=48)
    for config in _configs(apart):
        assert together.evaluate_with_errors(config) == (apart.evaluate(config), apart.layer_errors(config))


def test_a_new_config_with_its_errors_costs_one_pass_of_the_error_session(demo_cnn, monkeypatch):
    prepared, calibration_data, evaluation = demo_cnn
    calibration = calibrate(prepared, calibration_data)
    evaluator = Evaluator(prepared, calibration, evaluation, batch_size=48)
    evaluator.evaluate_with_errors(PRESETS["W8A8"])  # builds the error session of this activation pattern
    batches = len(list(evaluator._errors_feeder.batches()))
    calls = counting_runs(evaluator, monkeypatch)
    evaluator.evaluate_with_errors(QuantConfig(LayerQuant(TensorQuant("int5", granularity="per_channel"),
                                                          PRESETS["W8A8"].default.activations)))
    assert calls == ["errors"] * batches  # no simulation run: the outputs came with the errors


def test_a_pass_inside_a_batch_runs_in_that_batchs_thread_instead_of_waiting_for_the_busy_threads():
    def inner(i: int) -> list[int]:
        return list(map_in_order(lambda j: i * 10 + j, range(3), workers=2))

    assert list(map_in_order(inner, range(4), workers=2)) == [[i * 10 + j for j in range(3)] for i in range(4)]


def test_the_threads_are_started_once_for_every_pass():
    for _ in range(3):
        list(map_in_order(lambda i: i, range(4), workers=2))
    assert len([t for t in threading.enumerate() if t.name.startswith("qlab-batch")]) <= 2

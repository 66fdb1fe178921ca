"""suggest_config's time budget: no measurement starts after it, and the best config found so far is returned."""
import pytest

import quant_core.search.suggest
from quant_core.config import PRESETS
from quant_core.errors import ConfigError
from quant_core.search.suggest import suggest_config


class _Clock:
    """A stand-in for time.perf_counter that moves only when the search measures a config."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _TickingEvaluator:
    """The real evaluator, but every evaluate() takes exactly one second on `clock`."""

    def __init__(self, evaluator, clock: _Clock):
        self._evaluator, self._clock, self.evaluations = evaluator, clock, 0

    def __getattr__(self, name):
        return getattr(self._evaluator, name)

    def evaluate(self, config):
        self._clock.now += 1.0
        self.evaluations += 1
        return self._evaluator.evaluate(config)


@pytest.fixture
def ticking(cnn_evaluator, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(quant_core.search.suggest, "time", clock)
    return _TickingEvaluator(cnn_evaluator, clock)


def test_no_measurement_starts_after_the_time_budget_and_an_unmet_size_budget_says_so(ticking):
    budget = int(0.2 * ticking.evaluate(PRESETS["FP32"]).fp32_size_bytes)
    ticking.evaluations, ticking._clock.now = 0, 0.0
    suggestion = suggest_config(ticking, max_size_bytes=budget, time_budget_s=2.5)
    assert ticking.evaluations == 3, "measured at 0 s, 1 s and 2 s; nothing starts at 3 s"
    assert not suggestion.met and suggestion.steps == ()
    assert suggestion.stopped == ("stopped after 3 s (time budget 2.5 s), 0 steps taken: no measured config met "
                                  "the constraint; the closest is returned")
    assert suggestion.to_dict()["stopped"] == suggestion.stopped


def test_a_stopped_size_search_returns_the_smallest_config_it_measured_not_where_it_started(ticking):
    """Nothing met the size budget: the closest measured config is the smallest one (before: the start,
    the largest, while the Pareto chart showed smaller and better measured configs)."""
    budget = int(0.2 * ticking.evaluate(PRESETS["FP32"]).fp32_size_bytes)
    suggestion = suggest_config(ticking, max_size_bytes=budget, time_budget_s=2.5)
    sizes = [point.size_bytes for point in suggestion.pareto]
    assert len(set(sizes)) > 1
    assert suggestion.result.size_bytes == min(sizes)
    assert suggestion.chosen.startswith("no measured config met the constraint; the closest is returned: measured "
                                        "on the way (")
    assert suggestion.to_dict()["chosen"] == suggestion.chosen


def test_a_stopped_accuracy_search_returns_the_smallest_measured_config_that_keeps_the_floor(ticking):
    suggestion = suggest_config(ticking, min_accuracy=0.5, time_budget_s=4)
    assert ticking.evaluations == 4
    assert suggestion.met and suggestion.result.accuracy >= 0.5
    keeping = [point.size_bytes for point in suggestion.pareto if point.accuracy >= 0.5]
    assert len(keeping) < len(suggestion.pareto), "some measured configs fell below the floor"
    assert suggestion.result.size_bytes == min(keeping), "the smallest measured config that keeps the floor"
    assert suggestion.stopped.startswith("stopped after 4 s (time budget 4 s), 0 steps taken: the best measured "
                                         "config that meets the constraint is returned")
    assert ticking._evaluator.evaluate(suggestion.config).size_bytes == suggestion.result.size_bytes


def test_a_search_that_ends_within_its_time_budget_is_not_marked_stopped(cnn_evaluator):
    fp32 = cnn_evaluator.evaluate(PRESETS["FP32"]).fp32_size_bytes
    unlimited = suggest_config(cnn_evaluator, max_size_bytes=int(0.2 * fp32))
    budgeted = suggest_config(cnn_evaluator, max_size_bytes=int(0.2 * fp32), time_budget_s=3600)
    assert unlimited.stopped is None and budgeted.stopped is None
    assert budgeted.config == unlimited.config and budgeted.steps == unlimited.steps


@pytest.mark.parametrize("seconds", [0, -1, float("nan")])
def test_the_time_budget_must_be_a_positive_number_of_seconds(cnn_evaluator, seconds):
    with pytest.raises(ConfigError, match="time budget must be a positive number of seconds"):
        suggest_config(cnn_evaluator, min_accuracy=0.5, time_budget_s=seconds)

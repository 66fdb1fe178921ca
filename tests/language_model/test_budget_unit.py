"""The suggestion's quality budget follows the task's metric: a percentage for accuracy-like headlines,
a perplexity increase for a language model ("at most +0.5 perplexity" = headline >= fp32 / (fp32 + 0.5))."""
import pytest

from quant_core.engine.tasks import Metric, TaskKind, TaskScore
from quant_core.errors import ConfigError
from quant_core.search.budget import BudgetUnit, budget_unit


def _lm_score(perplexity, fp32):
    return TaskScore(TaskKind.LANGUAGE_MODEL, Metric.PERPLEXITY_RATIO, ((Metric.PERPLEXITY_RATIO, fp32 / perplexity),
                                               (Metric.PERPLEXITY, perplexity),
                                               (Metric.PERPLEXITY_INCREASE, perplexity - fp32)))


def test_a_language_models_budget_is_a_perplexity_increase():
    unit = budget_unit(_lm_score(6.2, 6.0))
    assert unit.is_perplexity and unit.fp32_perplexity == pytest.approx(6.0)
    assert unit.to_headline(0.5) == pytest.approx(6.0 / 6.5)
    assert unit.from_headline(unit.to_headline(0.5)) == pytest.approx(0.5)
    assert unit.describe(6.0 / 6.5) == "perplexity 6.500 (+0.500 vs FP32)"
    assert unit.to_headline(0.0) == pytest.approx(1.0)


def test_other_tasks_keep_a_percentage():
    unit = budget_unit(TaskScore(TaskKind.CLASSIFICATION, Metric.ACCURACY, ((Metric.ACCURACY, 0.97),)))
    assert not unit.is_perplexity and unit.to_headline(98.5) == pytest.approx(0.985)
    assert unit.describe(0.975) == "accuracy 97.50%"


@pytest.mark.parametrize("unit, value, message", [
    (BudgetUnit(Metric.PERPLEXITY_RATIO, 6.0), -0.1, "the perplexity increase must be 0 or more, got -0.1"),
    (BudgetUnit(Metric.ACCURACY), 120, "the minimum accuracy is a percentage in [0, 100], got 120"),
])
def test_a_budget_out_of_range_is_refused_in_one_line(unit, value, message):
    with pytest.raises(ConfigError, match=r"^" + message.replace("[", r"\[").replace("]", r"\]") + "$"):
        unit.to_headline(value)

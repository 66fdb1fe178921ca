"""The suggestion's quality budget in the unit of the task's headline metric.

The search (`suggest_config(min_accuracy=...)`) keeps the headline at or above a floor: a fraction where FP32
scores 1. People set budgets in the metric's own unit: "at least 98 % accuracy", but "at most +0.5
perplexity" for a language model, whose headline is FP32 perplexity / perplexity:

    perplexity <= fp32 + increase   <=>   headline >= fp32 / (fp32 + increase)

`budget_unit(score)` returns the unit of a task's score; `to_headline` / `from_headline` convert both ways.
"""
from __future__ import annotations

from dataclasses import dataclass

from quant_core.engine.tasks import Metric
from quant_core.errors import ConfigError


@dataclass(frozen=True)
class BudgetUnit:
    """How a budget on one headline metric is set: a percentage floor, or a perplexity increase ceiling."""

    metric: str                          # the headline metric's name
    fp32_perplexity: float | None = None  # set for a language model's perplexity headline

    @property
    def is_perplexity(self) -> bool:
        return self.fp32_perplexity is not None

    @property
    def label(self) -> str:
        return "maximum perplexity increase" if self.is_perplexity else f"minimum {self.metric} (%)"

    def to_headline(self, value: float) -> float:
        """The headline floor of a budget `value` (a perplexity increase, or a percentage)."""
        if self.is_perplexity:
            if not value >= 0:
                raise ConfigError(f"the perplexity increase must be 0 or more, got {value}")
            return self.fp32_perplexity / (self.fp32_perplexity + value)
        if not 0 <= value <= 100:
            raise ConfigError(f"the minimum {self.metric} is a percentage in [0, 100], got {value}")
        return value / 100.0

    def from_headline(self, headline: float) -> float:
        """A headline value in the budget's unit: the perplexity increase, or a percentage."""
        if self.is_perplexity:
            return self.fp32_perplexity / headline - self.fp32_perplexity if headline > 0 else float("inf")
        return 100.0 * headline

    def describe(self, headline: float) -> str:
        """The headline as the budget's unit says it: "perplexity 6.02 (+0.10)" or "97.50 % accuracy"."""
        if self.is_perplexity:
            increase = self.from_headline(headline)
            return f"perplexity {self.fp32_perplexity + increase:.3f} ({increase:+.3f} vs FP32)"
        return f"{self.metric} {headline:.2%}"


def budget_unit(score) -> BudgetUnit:
    """The budget unit of a `TaskScore` (None: a plain percentage of accuracy)."""
    if score is None:
        return BudgetUnit("accuracy")
    if score.headline == Metric.PERPLEXITY_RATIO:
        metrics = dict(score.metrics)
        return BudgetUnit(score.headline, metrics[Metric.PERPLEXITY] - metrics[Metric.PERPLEXITY_INCREASE])
    return BudgetUnit(score.headline)

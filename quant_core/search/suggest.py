"""A transparent greedy mixed-precision search, with every step recorded and a Pareto front.

Start with every weighted layer at the first candidate format (int8). Lowering phase: each step
lowers the one layer whose next format costs the least accuracy per byte saved, until the size
budget is met (`max_size_bytes`) or until any further step would fall below `min_accuracy`.
Raising phase (size budget only): raise back, one step at a time, the layer that gains the most
accuracy while the budget still holds.

`time_budget_s` bounds the search's own time (a shared server runs one heavy job at a time): no
new measurement starts once it is spent; the best config measured so far that meets the constraint
is returned (`met`), or the closest one when none does, with the steps taken and a `stopped` note
("stopped after 121 s ...").
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig
from quant_core.errors import ConfigError
from quant_core.engine.evaluate import EvaluationResult
from quant_core.numerics.formats import NumberFormat, parse_format
from quant_core.search.sensitivity import SweepRow, headline_of, weight_quant
from quant_core.engine.tasks import Task

DEFAULT_CANDIDATES = ("int8", "int6", "int4", "int3", "int2")


@dataclass(frozen=True)
class SuggestionStep:
    step: int
    action: str  # "lower" or "raise"
    layer: str
    from_format: str
    to_format: str
    size_bytes: int
    accuracy: float
    reason: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ParetoPoint:
    size_bytes: int
    accuracy: float
    label: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Suggestion:
    config: QuantConfig
    result: EvaluationResult
    met: bool
    metric: str  # the task's headline metric (quant_core.engine.tasks), e.g. "accuracy" or "recall@k"
    steps: tuple[SuggestionStep, ...]
    pareto: tuple[ParetoPoint, ...]
    stopped: str | None = None  # why the search ended early (time budget), else None
    # why the config returned is not where the last step ended (a config measured on the way beats it), else None
    chosen: str | None = None

    def to_dict(self) -> dict:
        return {"met": self.met, "metric": self.metric, "stopped": self.stopped, "chosen": self.chosen,
                "size_bytes": self.result.size_bytes,
                "accuracy": _metric(self.result), "fp32_size_bytes": self.result.fp32_size_bytes,
                "config": self.config.to_dict(), "steps": [s.to_dict() for s in self.steps],
                "pareto": [p.to_dict() for p in self.pareto]}


def _metric(result: EvaluationResult) -> float:
    return headline_of(result)[1]


def _row_metric(row: SweepRow) -> float:
    if row.score is not None:
        return row.score
    return row.accuracy if row.accuracy is not None else row.agreement


def pareto_front(points: Sequence[ParetoPoint]) -> tuple[ParetoPoint, ...]:
    """Return the points no other point beats on both size (smaller) and accuracy (higher), by size."""
    front: list[ParetoPoint] = []
    for point in sorted(points, key=lambda p: (p.size_bytes, -p.accuracy)):
        if not front or point.accuracy > front[-1].accuracy:
            front.append(point)
    return tuple(front)


class _Search:
    def __init__(self, evaluator, formats: list[NumberFormat], sweep_rows, task: Task | None = None):
        self.evaluator = evaluator
        self.task = task
        self.formats = formats
        self.layers = [layer for layer in evaluator.layers if _has_weight(evaluator, layer)]
        self.rows = {(row.layer, row.format): _row_metric(row) for row in (sweep_rows or ())}
        self.visited: dict[QuantConfig, ParetoPoint] = {}
        self.results: dict[QuantConfig, EvaluationResult] = {}

    def config(self, levels: dict[str, int]) -> QuantConfig:
        overrides = []
        for layer, level in levels.items():
            shape = tuple(self.evaluator.session.fp32_weight(layer).shape)
            overrides.append((layer, LayerQuant(weight_quant(self.formats[level], shape))))
        return QuantConfig(FP32_LAYER, tuple(overrides), name="suggested")

    def measure(self, levels: dict[str, int], label: str) -> EvaluationResult:
        config = self.config(levels)
        result = self.evaluator.evaluate(config) if self.task is None else self.evaluator.evaluate(config, task=self.task)
        self.visited.setdefault(config, ParetoPoint(result.size_bytes, _metric(result), label))
        self.results.setdefault(config, result)
        return result

    def estimated_drop(self, levels, layer) -> float | None:
        """Accuracy lost by lowering `layer`, from the sweep rows when they cover it (else None)."""
        here = self.rows.get((layer, self.formats[levels[layer]].name))
        there = self.rows.get((layer, self.formats[levels[layer] + 1].name))
        return None if here is None or there is None else here - there


def _best_measured(results: dict[QuantConfig, EvaluationResult], fits, *, by_size: bool
                   ) -> tuple[QuantConfig, str]:
    """(the measured config to return, a sentence saying which it is).

    Among the measured configs that meet the constraint: with a size budget the best metric (then the
    smaller), with a metric budget the smallest (then the better metric). When none meets it, the closest:
    the smallest with a size budget, the best metric with a metric budget.
    """
    better = lambda r: (_metric(r), -r.size_bytes)  # noqa: E731
    smaller = lambda r: (-r.size_bytes, _metric(r))  # noqa: E731
    meeting = [config for config, result in results.items() if fits(result)]
    if meeting:
        rank = better if by_size else smaller
        best = max(meeting, key=lambda config: rank(results[config]))
        return best, "the best measured config that meets the constraint is returned"
    rank = smaller if by_size else better
    return (max(results, key=lambda config: rank(results[config])),
            "no measured config met the constraint; the closest is returned")


def _has_weight(evaluator, layer: str) -> bool:
    try:
        evaluator.session.fp32_weight(layer)
    except KeyError:
        return False
    return True


def suggest_config(evaluator, *, max_size_bytes: int | None = None, min_accuracy: float | None = None,
                   candidate_formats: Sequence[NumberFormat | str] = DEFAULT_CANDIDATES,
                   sweep_rows: Sequence[SweepRow] | None = None,
                   progress: Callable[[float], None] | None = None,
                   cancel: Callable[[], bool] | None = None,
                   time_budget_s: float | None = None, task: Task | None = None) -> Suggestion:
    """Return a weight-only mixed-precision config meeting one budget, and how it was found (`_suggest`).

    Each step's candidates differ from the current config in one layer: the Evaluator may run them
    from that layer on (`Evaluator.anchor`); the anchor is dropped when the search ends. `task` (a
    `tasks.Task`; default: the evaluator's) is what "accuracy" means: the task's headline metric.
    """
    try:
        return _suggest(evaluator, max_size_bytes=max_size_bytes, min_accuracy=min_accuracy,
                        candidate_formats=candidate_formats, sweep_rows=sweep_rows, progress=progress,
                        cancel=cancel, time_budget_s=time_budget_s, task=task)
    finally:
        if hasattr(evaluator, "clear_anchor"):
            evaluator.clear_anchor()  # its captured activations serve this search only


def _anchor(evaluator, config: QuantConfig) -> None:
    if hasattr(evaluator, "anchor"):
        evaluator.anchor(config)


def _suggest(evaluator, *, max_size_bytes, min_accuracy, candidate_formats, sweep_rows, progress, cancel,
             time_budget_s, task) -> Suggestion:
    """Return a weight-only mixed-precision config meeting one budget, and how it was found.

    Exactly one of `max_size_bytes` and `min_accuracy` is required. The metric is the task's headline
    (`quant_core.engine.tasks`): a classifier's accuracy with labels, else its top-1 agreement with FP32. `sweep_rows` (from run_sweep) rank the lowering steps without
    evaluating every candidate; each chosen step is still measured. `cancel()` stops the search
    between steps (the suggestion so far is returned, `met` tells whether it fits).
    `time_budget_s` (seconds of searching, None: no limit): no measurement starts after it; the
    best measured config that meets the constraint is returned, else the closest, and `stopped`
    says "stopped after N s".
    """
    if (max_size_bytes is None) == (min_accuracy is None):
        raise ConfigError("give exactly one budget: max_size_bytes or min_accuracy")
    if max_size_bytes is not None and max_size_bytes <= 0:
        raise ConfigError(f"max_size_bytes must be positive, got {max_size_bytes}")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise ConfigError(f"min_accuracy is a fraction in [0, 1], got {min_accuracy}")
    if time_budget_s is not None and not time_budget_s > 0:
        raise ConfigError(f"the time budget must be a positive number of seconds, got {time_budget_s}")
    started = time.perf_counter()

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - started >= time_budget_s
    try:
        formats = [f if isinstance(f, NumberFormat) else parse_format(f) for f in candidate_formats]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not formats:
        raise ConfigError("give at least one candidate format, e.g. int8,int4")
    search = _Search(evaluator, formats, sweep_rows, task)
    if not search.layers:
        raise ConfigError("the model has no layer with a weight to quantize")
    levels = dict.fromkeys(search.layers, 0)
    current = search.measure(levels, f"start: every layer {formats[0].name}")
    metric_name = headline_of(current)[0]
    steps: list[SuggestionStep] = []
    total_steps = len(search.layers) * (len(formats) - 1)

    def fits(result: EvaluationResult) -> bool:
        if max_size_bytes is not None:
            return result.size_bytes <= max_size_bytes
        return _metric(result) >= min_accuracy

    def record(action: str, layer: str, old: int, new: int, result: EvaluationResult, reason: str) -> None:
        steps.append(SuggestionStep(len(steps) + 1, action, layer, formats[old].name, formats[new].name,
                                    result.size_bytes, _metric(result), reason))
        if progress is not None:
            progress(min(len(steps) / max(total_steps, 1), 1.0))

    stopped = False
    timed_out = False
    # Lowering phase.
    while max_size_bytes is None or current.size_bytes > max_size_bytes:
        if min_accuracy is not None and _metric(current) < min_accuracy:
            break  # even the starting point misses the accuracy budget
        if cancel is not None and cancel():
            stopped = True
            break
        if out_of_time():
            stopped = timed_out = True
            break
        options = []
        if min_accuracy is not None or not search.rows:  # every candidate will be measured
            _anchor(evaluator, search.config(levels))
        for layer in search.layers:
            if out_of_time():
                break
            if levels[layer] + 1 >= len(formats):
                continue
            trial = dict(levels, **{layer: levels[layer] + 1})
            saved = current.size_bytes - evaluator.size_bytes(search.config(trial))
            if saved <= 0:
                continue
            drop, source = search.estimated_drop(levels, layer), "from the sweep"
            if drop is None or min_accuracy is not None:
                result = search.measure(trial, f"{layer} -> {formats[trial[layer]].name}")
                if min_accuracy is not None and _metric(result) < min_accuracy:
                    continue
                if drop is None:
                    drop, source = _metric(current) - _metric(result), "measured"
            options.append((drop / saved, layer, trial, saved, drop, source))
        if out_of_time():  # the options are incomplete: do not take a step from them
            stopped = timed_out = True
            break
        if not options:
            break
        _, layer, trial, saved, drop, source = min(options, key=lambda o: (o[0], o[1]))
        old = levels[layer]
        levels = trial
        current = search.measure(levels, f"step {len(steps) + 1}: {layer} -> {formats[levels[layer]].name}")
        record("lower", layer, old, levels[layer], current,
               f"smallest {metric_name} cost per byte saved ({source}): {drop:+.4f} for {saved} bytes")
    # Raising phase: spend what the budget left on the layers that gain most.
    while max_size_bytes is not None and not stopped and current.size_bytes <= max_size_bytes:
        if cancel is not None and cancel():
            break
        if out_of_time():
            timed_out = True
            break
        options = []
        _anchor(evaluator, search.config(levels))
        for layer in search.layers:
            if out_of_time():
                timed_out = True
                break
            if levels[layer] == 0:
                continue
            trial = dict(levels, **{layer: levels[layer] - 1})
            if evaluator.size_bytes(search.config(trial)) > max_size_bytes:
                continue
            result = search.measure(trial, f"{layer} -> {formats[trial[layer]].name}")
            gain = _metric(result) - _metric(current)
            if gain > 0:
                options.append((gain, layer, trial, result))
        if not options:
            break
        gain, layer, trial, result = max(options, key=lambda o: (o[0], o[1]))
        old = levels[layer]
        levels, current = trial, result
        record("raise", layer, old, levels[layer], current,
               f"largest {metric_name} gain ({gain:+.4f}) that stays within the size budget")
    if progress is not None:
        progress(1.0)
    config = search.config(levels)
    # What the search measured, not only where its last step ended, decides what is returned: a config it
    # measured on the way (a raise trial, an accuracy check, an earlier step) may be better or closer.
    chosen, how = _best_measured(search.results, fits, by_size=max_size_bytes is not None)
    note = (f"stopped after {time.perf_counter() - started:.0f} s (time budget {time_budget_s:g} s), "
            f"{len(steps)} steps taken: {how}") if timed_out else None
    why_chosen = None
    if chosen != config:
        result = search.results[chosen]
        why_chosen = (f"{how}: measured on the way ({search.visited[chosen].label}: {result.size_bytes} bytes, "
                      f"{metric_name} {_metric(result):.4f}), it beats where the last step ended "
                      f"({current.size_bytes} bytes, {metric_name} {_metric(current):.4f})")
    config, current = chosen, search.results[chosen]
    return Suggestion(config, current, fits(current), metric_name, tuple(steps),
                      pareto_front(list(search.visited.values())), note, why_chosen)

"""Per-layer sensitivity: quantize one layer at a time in each format, everything else FP32."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig, TensorQuant
from quant_core.errors import ConfigError
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, parse_format
from quant_core.engine.tasks import Task

# Formats that can also quantize an activation (the others are weight-only).
_ACTIVATION_KINDS = (FormatKind.INT, FormatKind.UINT, FormatKind.FP16, FormatKind.BF16,
                     FormatKind.FP8_E4M3FN, FormatKind.FP8_E5M2)


@dataclass(frozen=True)
class SweepRow:
    """One layer in one format, measured on the model output against FP32.

    `score` is the task's headline metric (`metric` names it; `quant_core.engine.tasks`): what sweeps rank by.
    """

    layer: str
    format: str
    sqnr_db: float
    cosine: float
    accuracy: float | None
    agreement: float
    size_bytes: int
    metric: str = ""
    score: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def weight_quant(fmt: NumberFormat, weight_shape: tuple[int, ...] | None) -> TensorQuant:
    """Symmetric min-max weights, per channel when the weight has 2+ dimensions.

    The axis is left to each layer (axis=None: its output channels, see `quant_core.numerics.axes`).
    """
    per_channel = weight_shape is not None and len(weight_shape) >= 2 and (fmt.is_integer or fmt.is_float)
    return TensorQuant(fmt, symmetric=True,
                       granularity=Granularity.PER_CHANNEL if per_channel else Granularity.PER_TENSOR)


def activation_quant(fmt: NumberFormat) -> TensorQuant | None:
    """Asymmetric min-max activations in the same format, or None for weight-only formats."""
    if fmt.kind not in _ACTIVATION_KINDS:
        return None
    return TensorQuant(fmt, symmetric=not fmt.is_integer)


def sweep_config(evaluator, layer: str, fmt: NumberFormat, *, activations: bool) -> QuantConfig:
    """FP32 everywhere except `layer`, whose weights (and activations if asked) use `fmt`."""
    shape = _weight_shape(evaluator, layer)
    weights = weight_quant(fmt, shape) if shape is not None else None
    acts = activation_quant(fmt) if activations and layer in evaluator.session.quantizable_activations else None
    return QuantConfig(FP32_LAYER, ((layer, LayerQuant(weights, acts)),), name=f"{layer} {fmt.name}")


def headline_of(result) -> tuple[str, float]:
    """(metric name, value) a sweep ranks by: the task's headline, else accuracy or agreement."""
    if result.score is not None:
        return result.score.headline, result.score.headline_value
    return ("accuracy", result.accuracy) if result.accuracy is not None else ("top-1 agreement", result.top1_agreement)


def _weight_shape(evaluator, layer: str) -> tuple[int, ...] | None:
    try:
        return tuple(evaluator.session.fp32_weight(layer).shape)
    except KeyError:
        return None


def _formats(formats: Sequence[NumberFormat | str]) -> list[NumberFormat]:
    if not formats:
        raise ConfigError("give at least one format to sweep, e.g. int8,int4")
    try:
        return [f if isinstance(f, NumberFormat) else parse_format(f) for f in formats]
    except ValueError as err:
        raise ConfigError(str(err)) from None


def run_sweep(evaluator, formats: Sequence[NumberFormat | str], *, activations: bool = False,
              layers: Sequence[str] | None = None, progress: Callable[[float], None] | None = None,
              cancel: Callable[[], bool] | None = None, time_budget_s: float | None = None,
              task: Task | None = None) -> list[SweepRow]:
    """Evaluate every layer x format, one layer at a time; return one SweepRow each.

    Layers without a weight are skipped unless `activations` is set and they read a float
    activation. `cancel()` is polled before each config: on True the rows finished so far are
    returned. `progress(fraction)` is called after each config. `task` (a `tasks.Task`; default: the
    evaluator's) chooses the scored output and metric.

    Notes
    -----
    With `time_budget_s`, no config starts once the sweep has run that long: the rows finished so
    far are returned (fewer than layers x formats tells the caller it stopped). The config running
    when the budget ends is finished, so the sweep can overrun by one evaluation.
    """
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be a positive number of seconds or None, got {time_budget_s!r}")
    started = time.perf_counter()
    fmts = _formats(formats)
    names = list(evaluator.layers if layers is None else layers)
    unknown = [name for name in names if name not in evaluator.layers]
    if unknown:
        raise ConfigError(f"unknown layer(s) {unknown}; the model's layers are {list(evaluator.layers)[:5]}...")
    quantizable = set(evaluator.session.quantizable_activations)
    names = [n for n in names if _weight_shape(evaluator, n) is not None or (activations and n in quantizable)]
    total = len(names) * len(fmts)
    rows: list[SweepRow] = []
    for layer in names:
        if hasattr(evaluator, "prepare_sweep"):
            evaluator.prepare_sweep(layer, len(fmts), activations)  # may run only the model from this layer on
        for fmt in fmts:
            if cancel is not None and cancel():
                return rows
            if time_budget_s is not None and time.perf_counter() - started >= time_budget_s:
                return rows
            config = sweep_config(evaluator, layer, fmt, activations=activations)
            result = evaluator.evaluate(config) if task is None else evaluator.evaluate(config, task=task)
            rows.append(SweepRow(layer, fmt.name, result.sqnr_db, result.cosine, result.accuracy,
                                 result.top1_agreement, result.size_bytes, *headline_of(result)))
            if progress is not None:
                progress(len(rows) / total)
    return rows

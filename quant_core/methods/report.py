"""What a method did: one report per method, with the before / after a page can draw."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from quant_core.config import QuantConfig
from quant_core.model.data import Dataset


@dataclass(frozen=True)
class MethodContext:
    """What every method is given besides the model: the config, calibration inputs, progress and stop.

    `progress(fraction)` and `cancel()` follow the engine's conventions (docs/engine.md).
    """

    config: QuantConfig
    data: Dataset
    progress: Callable[[float], None] | None = None
    cancel: Callable[[], bool] | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class Series:
    """Per-channel values before and after a method at one place of the model (one chart)."""

    title: str
    before: tuple[float, ...]
    after: tuple[float, ...]

    @classmethod
    def of(cls, title: str, before, after) -> Series:
        return cls(title, tuple(float(v) for v in np.ravel(before)), tuple(float(v) for v in np.ravel(after)))

    def to_dict(self) -> dict:
        return {"title": self.title, "before": list(self.before), "after": list(self.after)}


@dataclass(frozen=True)
class MethodReport:
    """One method's run: what it changed (a sentence each), what it could not use and why, a table, charts.

    `table` is (columns, rows) with one row per place the method looked at; `series` holds per-channel
    values before / after (weight ranges for CLE, activation maxima for SmoothQuant).
    """

    name: str
    options: tuple[tuple[str, object], ...]
    changed: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()   # (where, why)
    columns: tuple[str, ...] = ()
    rows: tuple[tuple, ...] = ()
    series: tuple[Series, ...] = ()
    seconds: float = 0.0
    stopped: bool = False                        # a time budget or stop ended it early (what was done stays)

    def to_dict(self) -> dict:
        def plain(value):
            return None if isinstance(value, float) and not math.isfinite(value) else value
        return {"name": self.name, "options": dict(self.options), "changed": list(self.changed),
                "skipped": [{"where": where, "why": why} for where, why in self.skipped],
                "table": {"columns": list(self.columns), "rows": [[plain(v) for v in row] for row in self.rows]},
                "series": [s.to_dict() for s in self.series], "seconds": self.seconds, "stopped": self.stopped}

    def lines(self) -> list[str]:
        """The report as text, for the command line."""
        head = ", ".join(f"{k}={v}" for k, v in self.options)
        out = [f"{self.name}{f' ({head})' if head else ''}: {self.seconds:.2f} s" + (", stopped early" if self.stopped else "")]
        out += [f"  changed: {line}" for line in self.changed]
        out += [f"  not used: {where}: {why}" for where, why in self.skipped]
        return out


@dataclass(frozen=True)
class MethodsReport:
    """Every method of a config, in the order they ran."""

    methods: tuple[MethodReport, ...] = field(default_factory=tuple)

    @property
    def seconds(self) -> float:
        return sum(report.seconds for report in self.methods)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "methods": [report.to_dict() for report in self.methods]}

    def lines(self) -> list[str]:
        return [line for report in self.methods for line in report.lines()]

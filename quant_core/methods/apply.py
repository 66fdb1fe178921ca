"""Apply a config's methods in order: the one entry the command line, the app and the bench use.

    apply_methods(prepared, config, calibration_data) -> (prepared', MethodsReport)

runs `config.methods` in order (CLE, SmoothQuant, bias correction, AdaRound; `registry.methods()`), each on
the model the previous one returned. The simulation, sweeps, suggestion and export then work on
prepared' (see docs/methods.md); `config.methods` itself is not read by them.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from quant_core.config import MethodSpec, QuantConfig
from quant_core.methods.catalog import MethodKind, method_info
from quant_core.methods.registry import method
from quant_core.methods.report import MethodContext, MethodReport, MethodsReport
from quant_core.model.data import Dataset

__all__ = ["apply_methods", "changes_fp32", "parse_methods"]


def changes_fp32(config: QuantConfig) -> bool:
    """True when a method of `config` changes what the FP32 model computes (bias correction): metrics
    must then be taken against the original model's outputs (`Evaluator(reference_outputs=...)`)."""
    return any(method_info(spec.name).kind != MethodKind.FUNCTION_PRESERVING for spec in config.methods)


def parse_methods(text: str | None) -> tuple[MethodSpec, ...]:
    """`--methods cle,smoothquant` -> MethodSpecs with default options ('' or None: none)."""
    return tuple(MethodSpec(name.strip()) for name in (text or "").split(",") if name.strip())


def apply_methods(prepared, config: QuantConfig, calibration_data: Dataset, *,
                  progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                  batch_size: int = 64):
    """Apply `config.methods` in order; return (the transformed PreparedModel, MethodsReport).

    `prepared` is not changed; without methods it is returned as is. `progress(fraction)` covers
    all methods; `cancel()` is polled between batches and raises `calibrate.Cancelled`.
    """
    reports = []
    total = len(config.methods)
    for index, spec in enumerate(config.methods):
        def step(fraction, index=index):
            if progress is not None:
                progress((index + min(max(fraction, 0.0), 1.0)) / total)
        context = MethodContext(config, calibration_data, step, cancel, batch_size)
        started = time.perf_counter()
        prepared, report = method(spec.name).function(prepared, context, **dict(spec.options))
        reports.append(_timed(report, spec, time.perf_counter() - started))
    if progress is not None:
        progress(1.0)
    return prepared, MethodsReport(tuple(reports))


def _timed(report: MethodReport, spec: MethodSpec, seconds: float) -> MethodReport:
    return replace(report, options=spec.options, seconds=seconds)

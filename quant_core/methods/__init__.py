"""Accuracy-recovery methods: pure transformations of the prepared FP32 model, each with a report.

    apply_methods(prepared, config, calibration_data) -> (prepared', MethodsReport)

runs `config.methods` in order (CLE, SmoothQuant, bias correction, AdaRound; `registry.methods()`),
each on the model the previous one returned. The simulation, sweeps, suggestion and export then work
on prepared' (docs/methods.md). `catalog.py` is the config's vocabulary (names, options) and imports
nothing of the engine, so this package's names load on first use (config imports the catalog).
"""
from __future__ import annotations

_NAMES = {"apply_methods": "apply", "changes_fp32": "apply", "parse_methods": "apply",
          "MethodContext": "report", "MethodReport": "report", "MethodsReport": "report", "Series": "report",
          "MethodKind": "catalog", "method": "registry", "methods": "registry"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'quant_core.methods' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"quant_core.methods.{_NAMES[name]}"), name)

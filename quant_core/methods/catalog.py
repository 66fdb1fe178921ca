"""The accuracy-recovery methods a config may name: name, title, kind, description, options (data only).

Part of the config's vocabulary (like number formats): `config.MethodSpec` checks names and options
here, without importing the methods themselves (`registry.py` maps each name to its function). To add
a method: one `MethodInfo` below and its function in `registry.FUNCTIONS`.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from quant_core.errors import ConfigError


class MethodKind(StrEnum):
    FUNCTION_PRESERVING = "function-preserving"   # the FP32 model computes the same (up to float rounding)
    CONFIG_DEPENDENT = "config-dependent"         # uses the config's formats (weights snapped / biases moved)


@dataclass(frozen=True)
class MethodInfo:
    """What a config may say about a method. `check(options)` returns an error message or None."""

    name: str
    title: str
    kind: MethodKind
    description: str
    defaults: Mapping[str, object]
    check: Callable[[dict], str | None] | None = None


def _alpha(options: dict) -> str | None:
    return None if 0.0 <= options["alpha"] <= 1.0 else f"alpha must be in [0, 1], got {options['alpha']}"


def _gptq(options: dict) -> str | None:
    return None if 0.0 < options["damp"] < 1.0 else f"damp must be in (0, 1), got {options['damp']}"


def _awq(options: dict) -> str | None:
    return None if 2 <= options["grid"] <= 100 else f"grid must be 2 to 100 values of alpha, got {options['grid']}"


def _hqq(options: dict) -> str | None:
    if not 1 <= options["iterations"] <= 200:
        return f"iterations must be 1 to 200, got {options['iterations']}"
    return None if 0.0 < options["p"] <= 1.0 else f"p must be in (0, 1], got {options['p']}"


def _adaround(options: dict) -> str | None:
    if options["iterations"] < 1:
        return f"iterations must be at least 1, got {options['iterations']}"
    if not options["time_budget_s"] > 0:
        return f"time_budget_s must be a positive number of seconds, got {options['time_budget_s']}"
    if options["regularization"] < 0 or not options["learning_rate"] > 0:
        return "regularization must be >= 0 and learning_rate > 0"
    return None


CATALOG: dict[str, MethodInfo] = {info.name: info for info in (
    MethodInfo("cle", "Cross-layer equalization", MethodKind.FUNCTION_PRESERVING,
               "Rescales the output channels of a layer and the input channels of the next (through ReLU, "
               "pooling or nothing) so their per-channel weight ranges equalize; optionally absorbs high biases "
               "into the next layer.", {"high_bias_absorption": False}),
    MethodInfo("smoothquant", "SmoothQuant", MethodKind.FUNCTION_PRESERVING,
               "Moves activation outliers of MatMul / Gemm inputs into the weights with strength alpha; the "
               "inverse scale is folded into the preceding LayerNorm / layer or an inserted Mul.",
               {"alpha": 0.5}, _alpha),
    MethodInfo("bias_correction", "Bias correction (empirical)", MethodKind.CONFIG_DEPENDENT,
               "Moves each quantized layer's bias by the mean output shift its quantized weights cause on the "
               "calibration data, layer by layer.", {}),
    MethodInfo("adaround", "AdaRound", MethodKind.CONFIG_DEPENDENT,
               "Learns per weight whether to round up or down on the config's grid so the layer's output error "
               "is smallest on the calibration data; layer by layer within a time budget.",
               {"iterations": 300, "time_budget_s": 60.0, "regularization": 0.01, "learning_rate": 0.05}, _adaround),
    MethodInfo("rtn", "RTN (weight-only)", MethodKind.FUNCTION_PRESERVING,
               "Round to nearest on the config's grid: what the config does without a method; named so a "
               "comparison of weight-only methods has its baseline.", {}),
    MethodInfo("hqq", "HQQ (weight-only)", MethodKind.CONFIG_DEPENDENT,
               "Half-quadratic optimisation of each weight group's scale (symmetric) or zero point (asymmetric) "
               "for an lp error with p < 1, no data; each group keeps the better of its min-max and HQQ grid. "
               "MatMul / Gemm with integer per-group or per-channel weights.", {"iterations": 20, "p": 0.7}, _hqq),
    MethodInfo("gptq", "GPTQ (weight-only)", MethodKind.CONFIG_DEPENDENT,
               "Rounds a MatMul / Gemm weight one input row at a time on the config's grid and spreads each "
               "row's error over the rows not yet rounded, weighted by the inverse Hessian of the calibration "
               "inputs. Integer per-group or per-channel weights.", {"damp": 0.01}, _gptq),
    MethodInfo("awq", "AWQ (weight-only)", MethodKind.FUNCTION_PRESERVING,
               "Scales the input channels of MatMul / Gemm weights by mean|x|^alpha before the config's "
               "rounding (the inverse folded into the LayerNorm or layer before, or a Mul), alpha searched on the "
               "layers' output error: channels with large inputs get finer steps.", {"grid": 20}, _awq),
)}


def method_info(name: str) -> MethodInfo:
    found = CATALOG.get(name)
    if found is None:
        raise ConfigError(f"unknown method {name!r}: expected one of {', '.join(CATALOG)}")
    return found


def checked_options(name: str, options: dict) -> tuple[tuple[str, object], ...]:
    """The options of method `name` with defaults filled in, type-checked, sorted by key (hashable)."""
    if not isinstance(name, str):
        raise ConfigError(f"a method name must be a string such as \"cle\", got {name!r}")
    found = method_info(name)
    unknown = sorted(set(options) - set(found.defaults))
    if unknown:
        expected = ", ".join(found.defaults) or "none"
        raise ConfigError(f"method {name!r} has no option(s) {unknown}; its options: {expected}")
    merged = dict(found.defaults)
    for key, value in options.items():
        default = found.defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"method {name!r} option {key!r} must be like {default!r}, got {value!r}")
        merged[key] = value
    if found.check is not None:
        message = found.check(merged)
        if message:
            raise ConfigError(f"method {name!r}: {message}")
    return tuple(sorted(merged.items()))

"""The registry of accuracy-recovery methods: name -> function, with the catalog's kind, description, options.

A method is `apply_<name>(prepared, context, **options) -> (prepared, MethodReport)`, a pure function
(the prepared model given is not changed). To add one: its `MethodInfo` in `catalog.CATALOG` (what a
config may say) and its function in `FUNCTIONS` below.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quant_core.methods.adaround import apply_adaround
from quant_core.methods.bias_correction import apply_bias_correction
from quant_core.methods.catalog import CATALOG, MethodInfo, MethodKind, checked_options, method_info
from quant_core.methods.cle import apply_cle
from quant_core.methods.smoothquant import apply_smoothquant
from quant_core.methods.weight_only import apply_awq, apply_gptq, apply_hqq, apply_rtn

__all__ = ["FUNCTIONS", "Method", "MethodKind", "checked_options", "method", "methods"]

FUNCTIONS: dict[str, Callable] = {
    "cle": apply_cle,
    "smoothquant": apply_smoothquant,
    "bias_correction": apply_bias_correction,
    "adaround": apply_adaround,
    "rtn": apply_rtn,
    "hqq": apply_hqq,
    "gptq": apply_gptq,
    "awq": apply_awq,
}


@dataclass(frozen=True)
class Method:
    """A registered method: its catalog entry and its function."""

    info: MethodInfo
    function: Callable

    def __getattr__(self, name: str):  # name, title, kind, description, defaults, check
        return getattr(self.info, name)


def method(name: str) -> Method:
    return Method(method_info(name), FUNCTIONS[name])


def methods() -> dict[str, Method]:
    """Every registered method by name, in the catalog's order."""
    return {name: method(name) for name in CATALOG}

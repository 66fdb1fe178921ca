"""The CPU target beside exported numbers: what this machine's int8 kernels do, and which target a config exports for."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from quant_core.numerics import cpu_target
from quant_core.config import QuantConfig
from quant_core.numerics.cpu_target import CpuTarget

from . import state

TARGET_SELECT = "export_target"


def kernel_fact() -> str:
    """This machine's verdict in a few words, for the Model page's facts."""
    probe = cpu_target.probe_int8_kernels()
    return "saturating" if probe.saturates else "exact"


def kernel_caption() -> None:
    """One line under a header that shows exported, measured numbers."""
    probe = cpu_target.probe_int8_kernels()
    st.caption(f"int8 kernels on this machine ({probe.cpu}): {probe.summary()}. Measured by a probe that compares "
               "onnxruntime's MatMulInteger and QLinearConv with exact integer arithmetic.")


def _target_label(value: str) -> str:
    target = CpuTarget(value)
    if target == CpuTarget.AUTO:
        return f"{target.label}: {cpu_target.probe_int8_kernels().target.value}"
    return target.label


def target_selector(config: QuantConfig) -> QuantConfig:
    """Choose the CPU target the export (and its simulation) is for; the choice is part of the config."""
    options = [target.value for target in CpuTarget]
    st.session_state[TARGET_SELECT] = config.target.value

    def apply() -> None:
        state.set_config(replace(state.get_config(), target=CpuTarget(st.session_state[TARGET_SELECT])))

    st.selectbox("Export for CPU", options, key=TARGET_SELECT, format_func=_target_label, on_change=apply,
                 help="On x86 without VNNI, onnxruntime's u8×s8 kernels add pairs of products into a saturating "
                      "int16; for the saturating target the export stores int8 weights of integer-kernel layers as "
                      "uint8 (the same grid), so onnxruntime runs u8×u8 kernels, which do not saturate, and the "
                      "export computes what the simulation shows. Saved in the config JSON as 'target'.")
    st.caption(cpu_target.describe_target(config.target))
    return state.get_config()

"""Which integer grid an exported model really computes on: the CPU target and this machine's kernels.

On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI), onnxruntime's u8 x s8 dot products go
through an instruction (vpmaddubsw) that adds each *pair* of products into a saturating int16:
255 * 127 * 2 = 64770 does not fit 32767, so the sum is clipped and the exported model computes
something the integer arithmetic of the simulation does not. VNNI (vpdpbusd), ARM and GPU kernels
accumulate in int32 exactly.

The usual remedies are 7-bit weights or u8 x u8 kernels; we measured both (bench/bench_cpu_targets.py,
docs/cpu_targets.md) and use u8 x u8: on a saturating target the int8 weights of layers exported with
integer kernels are *stored* as uint8 with their zero point moved by 128. That is the same grid
(q + 128 for every code, clipped alike), so the simulation does not change and keeps its 8-bit
accuracy, while onnxruntime runs its u8 x u8 kernels, which widen to int16 before multiplying and
never saturate. 7-bit weights also agree with their simulation but lost 7.8 pp on the demo CNN.

`probe_int8_kernels()` finds out, once per process, whether this machine's kernels saturate, by
running MatMulInteger and QLinearConv on adversarial values and comparing them with exact int32
arithmetic. `CpuTarget.AUTO` means "this machine".
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from onnx import TensorProto, helper

from quant_core.numerics.formats import FormatKind, NumberFormat

class CpuTarget(StrEnum):
    """The CPU class an export is made for (recorded in the config JSON as "target")."""

    AUTO = "auto"                      # this machine, as the probe finds it
    NO_SATURATION = "no-saturation"    # VNNI x86, ARM, GPU: exact int32 accumulation of u8 x s8
    SATURATING_X86 = "saturating-x86"  # x86 without VNNI: u8 x s8 pairs saturate in int16, so u8 x u8

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    CpuTarget.AUTO: "auto (this machine)",
    CpuTarget.NO_SATURATION: "no saturation (VNNI x86, ARM, GPU)",
    CpuTarget.SATURATING_X86: "saturating x86 (AVX2 / AVX-512 without VNNI)",
}


@dataclass(frozen=True)
class ProbeCheck:
    """One kernel run on adversarial values: what exact int32 arithmetic gives and what onnxruntime gave."""

    op_type: str
    exact: int
    onnxruntime: int

    @property
    def saturates(self) -> bool:
        return self.exact != self.onnxruntime


@dataclass(frozen=True)
class KernelProbe:
    """Whether this machine's onnxruntime u8 x s8 kernels saturate, with the runs that show it."""

    saturates: bool
    checks: tuple[ProbeCheck, ...]
    cpu: str            # the processor's model name, for the record
    vnni_flag: bool | None  # what /proc/cpuinfo says (None: unknown); the probe's verdict is what counts

    @property
    def target(self) -> CpuTarget:
        """The concrete target this machine is."""
        return CpuTarget.SATURATING_X86 if self.saturates else CpuTarget.NO_SATURATION

    def summary(self) -> str:
        """One sentence a page or the CLI shows next to exported numbers."""
        if self.saturates:
            return ("this CPU's onnxruntime int8 kernels saturate (u8×s8 pairs add into int16: x86 without VNNI); "
                    "int8 weights of integer-kernel layers are exported as uint8 (same grid, u8×u8 kernels)")
        return ("this CPU's onnxruntime int8 kernels do not saturate (exact int32 accumulation: VNNI x86, ARM or other); "
                "int8 weights are exported as int8 (u8×s8 kernels)")


def _matmul_integer_model(depth: int) -> bytes:
    a = helper.make_tensor_value_info("a", TensorProto.UINT8, [1, depth])
    b = helper.make_tensor_value_info("b", TensorProto.INT8, [depth, 2])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe", [a, b], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def _qlinear_conv_model(channels: int, y_scale: float) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 1, 1])
    inits = [
        helper.make_tensor("w", TensorProto.INT8, [1, channels, 1, 1], [127] * channels),
        helper.make_tensor("x_scale", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("x_zero_point", TensorProto.UINT8, [], [0]),
        helper.make_tensor("w_scale", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("w_zero_point", TensorProto.INT8, [], [0]),
        helper.make_tensor("y_scale", TensorProto.FLOAT, [], [y_scale]),
        helper.make_tensor("y_zero_point", TensorProto.UINT8, [], [0]),
    ]
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                                            "y_scale", "y_zero_point"], ["y"])
    graph = helper.make_graph([node], "probe", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def _session(model: bytes):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _probe_matmul_integer(depth: int = 64) -> ProbeCheck:
    a = np.full((1, depth), 255, np.uint8)
    b = np.full((depth, 2), 127, np.int8)
    b[:, 1] = -128
    got = _session(_matmul_integer_model(depth)).run(None, {"a": a, "b": b})[0]
    exact = a.astype(np.int64) @ b.astype(np.int64)
    # Report the first column that differs (or the first one): both columns overflow int16 pairs.
    column = int(np.argmax(got[0] != exact[0])) if np.any(got != exact) else 0
    return ProbeCheck("MatMulInteger", int(exact[0, column]), int(got[0, column]))


def _probe_qlinear_conv(channels: int = 64) -> ProbeCheck:
    exact_sum = channels * 255 * 127
    # Requantize so that the exact sum lands on 200 and a pairwise-saturated one near half of it.
    y_scale = exact_sum / 200.0
    x = np.full((1, channels, 1, 1), 255, np.uint8)
    got = int(_session(_qlinear_conv_model(channels, y_scale)).run(None, {"x": x})[0].reshape(-1)[0])
    return ProbeCheck("QLinearConv", 200, got)


def _cpuinfo() -> tuple[str, bool | None]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 16)
    except OSError:
        return (os.uname().machine if hasattr(os, "uname") else "unknown"), None
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[1].split()) if flags_line else set()
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) if flags else None
    return model or "unknown", vnni


@functools.cache
def probe_int8_kernels() -> KernelProbe:
    """Run onnxruntime's u8 x s8 kernels on adversarial values once per process; say whether they saturate.

    Notes
    -----
    Both checks reduce 64 products 255 * 127: exact int32 arithmetic gives 2,072,640; a kernel that
    adds pairs into a saturating int16 gives 32 * 32767 = 1,048,544. MatMulInteger covers the GEMM
    path (MatMulIntegerToFloat, QGemm, QLinearMatMul); QLinearConv covers onnxruntime's convolution
    kernels, which are separate code.
    """
    checks = (_probe_matmul_integer(), _probe_qlinear_conv())
    model, vnni = _cpuinfo()
    return KernelProbe(any(check.saturates for check in checks), checks, model, vnni)


def saturates(target: CpuTarget) -> bool:
    """Return True when `target`'s int8 kernels saturate (AUTO asks this machine's probe)."""
    target = CpuTarget(target)
    if target == CpuTarget.AUTO:
        return probe_int8_kernels().saturates
    return target == CpuTarget.SATURATING_X86


def kernel_weight_storage(fmt: NumberFormat, *, saturating: bool) -> NumberFormat:
    """Return the type an integer-kernel layer's weight codes are stored in: int8 becomes uint8 on a saturating target.

    Notes
    -----
    Storing q + 128 as uint8 with zero point z + 128 keeps every dequantized value, so the grid
    (and the simulation) is unchanged; only the kernel changes, to u8 x u8, which does not saturate.
    """
    if saturating and fmt.kind == FormatKind.INT and fmt.bits == 8:
        return NumberFormat(FormatKind.UINT, 8)
    return fmt


def describe_target(target: CpuTarget) -> str:
    """How a config's target resolves on this machine, for notes beside exported numbers."""
    target = CpuTarget(target)
    if target == CpuTarget.AUTO:
        probe = probe_int8_kernels()
        return f"target auto = {probe.target.value} on this machine ({probe.cpu}): {probe.summary()}"
    storage = ("stored as uint8 (same grid; u8×u8 kernels)" if target == CpuTarget.SATURATING_X86
               else "stored as int8 (u8×s8 kernels)")
    note = ""
    if saturates(CpuTarget.AUTO) and not saturates(target):
        note = ("; this machine is of the other class: its kernels saturate, so the export measured here can lose "
                "accuracy that the simulation (and a VNNI, ARM or GPU machine) does not")
    elif saturates(target) and not saturates(CpuTarget.AUTO):
        note = "; this machine is of the other class (u8×u8 kernels may run slower here than u8×s8)"
    return f"target {target.value}: int8 weights of integer-kernel layers {storage}{note}"


__all__ = ["CpuTarget", "KernelProbe", "ProbeCheck", "describe_target", "kernel_weight_storage",
           "probe_int8_kernels", "saturates"]

"""Suite-wide options.

`--int8-kernels=saturating` makes this process *believe* its onnxruntime int8 kernels saturate,
whatever the probe finds. On a saturating target the export stores int8 weights as uint8 (u8 x u8
kernels), which both CPU classes compute exactly, so the whole suite must pass that way on any
machine: CI runs it so, to prove on a VNNI machine that nothing assumes int8 storage. (The opposite pretence would be wrong
on a saturating machine, whose kernels really saturate, so it is not offered.) Kernel-level truth
is checked by tests that compare real onnxruntime runs, which no option can fake; `.ci/run` also
runs those under an emulated x86 CPU without VNNI.
"""
import pytest

from quant_core.numerics import cpu_target


def pytest_addoption(parser):
    parser.addoption("--int8-kernels", choices=("probe", "saturating"), default="probe",
                     help="pretend this machine's int8 kernels saturate instead of probing")


@pytest.fixture(autouse=True, scope="session")
def _int8_kernel_verdict(request):
    choice = request.config.getoption("--int8-kernels")
    if choice == "probe":
        yield
        return
    real = cpu_target.probe_int8_kernels()
    pretended = cpu_target.KernelProbe(True, real.checks, real.cpu, real.vnni_flag)
    original = cpu_target.probe_int8_kernels
    cpu_target.probe_int8_kernels = lambda: pretended
    try:
        yield
    finally:
        cpu_target.probe_int8_kernels = original

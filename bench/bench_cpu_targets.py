"""Accuracy of the three ways to export int8 weights on each CPU class, simulated and exported, side by side.

    .venv/bin/python bench/bench_cpu_targets.py [--models mlp,cnn,transformer]
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/bench_cpu_targets.py   # an x86 CPU without VNNI, emulated

For every demo (256 held-out digits to calibrate, 541 to evaluate, as the app) and W8A8 per-channel:
- 8-bit int8 weights (target no-saturation), 7-bit int8 weights (target saturating-x86), and uint8
  weights (u8 x u8 kernels, which do not saturate);
- each simulated by the Evaluator and exported with `export_model`, then run by onnxruntime on this
  machine. The verdict of this machine's int8 probe is printed first: on a saturating CPU the 8-bit
  export is the one that disagrees with its simulation.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quant_core import cpu_target  # noqa: E402
from quant_core.calibrate import calibrate  # noqa: E402
from quant_core.config import LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.cpu_target import CpuTarget  # noqa: E402
from quant_core.data import split_dataset  # noqa: E402
from quant_core.demo import load_demo  # noqa: E402
from quant_core.evaluate import Evaluator  # noqa: E402
from quant_core.export import export_model  # noqa: E402
from quant_core.formats import Granularity, parse_format  # noqa: E402
from quant_core.latency import create_session  # noqa: E402
from quant_core.model_io import load_model, prepare_model  # noqa: E402


def _configs() -> dict[str, QuantConfig]:
    activations = TensorQuant(parse_format("uint8"), symmetric=False)
    int8 = LayerQuant(TensorQuant(parse_format("int8"), granularity=Granularity.PER_CHANNEL), activations)
    uint8 = LayerQuant(TensorQuant(parse_format("uint8"), granularity=Granularity.PER_CHANNEL), activations)
    return {
        "int8, 8-bit grid (no-saturation)": QuantConfig(int8, target=CpuTarget.NO_SATURATION),
        "int8, 7-bit grid (saturating-x86)": QuantConfig(int8, target=CpuTarget.SATURATING_X86),
        "uint8 weights (u8 x u8)": QuantConfig(uint8, target=CpuTarget.SATURATING_X86),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    args = parser.parse_args()
    probe = cpu_target.probe_int8_kernels()
    print(f"this machine: {probe.target.value} ({probe.cpu}); {probe.summary()}")
    print(f"{'model':12} {'weights':36} {'simulated %':>12} {'exported %':>11} {'diff pp':>8} {'simulated only':>15}")
    for name in args.models.split(","):
        model, held_out = load_demo(name)
        prepared = prepare_model(load_model(model))
        calibration_data, evaluation = split_dataset(held_out)
        calibration = calibrate(prepared, calibration_data)
        evaluator = Evaluator(prepared, calibration, evaluation)
        for label, config in _configs().items():
            started = time.perf_counter()
            simulated = 100.0 * evaluator.evaluate(config).accuracy
            result = export_model(prepared, config, calibration, calibration_data=calibration_data)
            logits = create_session(result.model).run(None, evaluation.inputs)[0]
            exported = 100.0 * float(np.mean(logits.argmax(axis=1) == evaluation.labels))
            print(f"{name:12} {label:36} {simulated:12.2f} {exported:11.2f} {exported - simulated:8.2f} "
                  f"{len(result.simulated_only):15d}   ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

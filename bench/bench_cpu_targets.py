"""Accuracy and latency of int8 weights exported as int8 (u8 x s8) and as uint8 (u8 x u8), simulated and exported.

    .venv/bin/python bench/bench_cpu_targets.py [--models mlp,cnn,transformer]
    qemu-x86_64 -cpu Haswell .venv/bin/python bench/bench_cpu_targets.py   # an x86 CPU without VNNI, emulated

For every demo (256 held-out digits to calibrate, 541 to evaluate, as the app) and W8A8 per-channel:
- int8 weights for target no-saturation (stored int8: u8 x s8 kernels) and for target saturating-x86
  (stored uint8 with zero point + 128, the same grid: u8 x u8 kernels);
- each simulated by the Evaluator and exported with `export_model`, then run by onnxruntime on this
  machine, and timed (median of 30 runs of a 64-sample batch, one thread; meaningless under qemu).
  The verdict of this machine's int8 probe is printed first: on a saturating CPU the int8-stored
  export is the one that disagrees with its simulation.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quant_core import cpu_target  # noqa: E402
from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.numerics.cpu_target import CpuTarget  # noqa: E402
from quant_core.model.data import split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.export.ort_export import export_model  # noqa: E402
from quant_core.numerics.formats import Granularity, parse_format  # noqa: E402
from quant_core.export.latency import create_session, measure_latency  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402


def _configs() -> dict[str, QuantConfig]:
    activations = TensorQuant(parse_format("uint8"), symmetric=False)
    int8 = LayerQuant(TensorQuant(parse_format("int8"), granularity=Granularity.PER_CHANNEL), activations)
    return {
        "stored int8, u8xs8 (no-saturation)": QuantConfig(int8, target=CpuTarget.NO_SATURATION),
        "stored uint8, u8xu8 (saturating-x86)": QuantConfig(int8, target=CpuTarget.SATURATING_X86),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    args = parser.parse_args()
    probe = cpu_target.probe_int8_kernels()
    print(f"this machine: {probe.target.value} ({probe.cpu}); {probe.summary()}")
    print(f"{'model':12} {'weights':38} {'simulated %':>12} {'exported %':>11} {'diff pp':>8} {'ms / 64':>8} "
          f"{'vs int8':>8}")
    for name in args.models.split(","):
        model, held_out = load_demo(name)
        prepared = prepare_model(load_model(model))
        calibration_data, evaluation = split_dataset(held_out)
        calibration = calibrate(prepared, calibration_data)
        evaluator = Evaluator(prepared, calibration, evaluation)
        baseline = None
        for label, config in _configs().items():
            simulated = 100.0 * evaluator.evaluate(config).accuracy
            result = export_model(prepared, config, calibration, calibration_data=calibration_data)
            assert not result.simulated_only
            logits = create_session(result.model).run(None, evaluation.inputs)[0]
            exported = 100.0 * float(np.mean(logits.argmax(axis=1) == evaluation.labels))
            batch = {key: value[:64] for key, value in evaluation.inputs.items()}
            median = measure_latency(result.model, batch, batch_size=64, repeats=30).median_ms
            baseline = baseline or median
            print(f"{name:12} {label:38} {simulated:12.2f} {exported:11.2f} {exported - simulated:8.2f} "
                  f"{median:8.3f} {median / baseline:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

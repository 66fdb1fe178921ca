"""Benchmark: measured onnxruntime latency of the standard variants of each demo model, against FP32 in the same run.

    /work/venv/bin/python bench/bench_latency.py [--models mlp,cnn,transformer] [--batches 1,64] [--rounds 3]

For each model and batch size, every variant (FP32, FP16, dynamic INT8, static INT8 per-tensor and
per-channel, 4-bit MatMulNBits when the model has MatMul/Gemm layers, and the W8A8 preset as the
"current config") is timed with quant_core.export.latency.measure_latency, 1 intra-op thread. The variants
are timed round-robin `--rounds` times; the table shows the median over rounds of each round's
median (and of its p10 / p90), so slow drift of the machine hits all of them alike. Ratios are
variant / FP32 (below 1 = faster), of the medians and of the p10s; the p10 ratio is the more robust
one when other processes share the cores (the load average is printed before and after).
Also prints each exported model's real accuracy on the app's evaluation split of the held-out digits.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import PRESETS  # noqa: E402
from quant_core.model.data import split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.export.latency import create_session, measure_latency, standard_variants  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402

REPEATS = {1: 300, 64: 60}


def accuracy(model: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    logits = create_session(model).run(None, {"image": images})[0]
    return 100.0 * float(np.mean(logits.argmax(axis=1) == labels))


def bench_model(name: str, batches: list[int], rounds: int, threads: int) -> list[str]:
    model, digits = load_demo(name)
    prepared = prepare_model(load_model(model))
    sample, evaluation = split_dataset(digits)  # the app's split: 256 to calibrate, 541 to evaluate
    calibration = calibrate(prepared, sample)
    variants = standard_variants(prepared, calibration, PRESETS["W8A8"], calibration_data=sample)
    images = evaluation.inputs["image"]
    held_out = images, evaluation.labels
    lines = [f"\n### {name}\n",
             "| variant | batch | median ms | p10–p90 ms | × FP32 (median) | × FP32 (p10) | size KB | accuracy % | kernels |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for batch in batches:
        runs: dict[str, list] = {v.name: [] for v in variants if v.model is not None}
        for _ in range(rounds):
            for variant in variants:
                if variant.model is None:
                    continue
                result = measure_latency(variant.model, images, batch_size=batch, threads=threads, warmup=10,
                                         repeats=REPEATS.get(batch, 60))
                runs[variant.name].append(result)
        fp32 = float(np.median([r.median_ms for r in runs["FP32"]]))
        fp32_p10 = float(np.median([r.p10_ms for r in runs["FP32"]]))
        for variant in variants:
            if variant.model is None:
                lines.append(f"| {variant.name} | {batch} | – | – | – | – | – | – | {variant.note} |")
                continue
            result = runs[variant.name][-1]
            median = float(np.median([r.median_ms for r in runs[variant.name]]))
            p10 = float(np.median([r.p10_ms for r in runs[variant.name]]))
            p90 = float(np.median([r.p90_ms for r in runs[variant.name]]))
            kernels = ", ".join(k for k in result.kernels if k not in ("Transpose", "Reshape", "Flatten", "Shape",
                                                                           "Gather", "Unsqueeze", "Concat"))
            simulated = " (part simulated only)" if variant.simulated else ""
            lines.append(f"| {variant.name}{simulated} | {batch} | {median:.4f} | {p10:.4f}–{p90:.4f} | {median / fp32:.2f} | {p10 / fp32_p10:.2f} | {result.size_bytes / 1024:.1f} | "
                         f"{accuracy(variant.model, *held_out):.2f} | {kernels} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn,transformer")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import os

    import onnxruntime
    print(f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores)")
    print(f"onnxruntime {onnxruntime.__version__}, {platform.processor() or platform.machine()}, "
          f"threads={args.threads}, rounds={args.rounds}; accuracy on the 541 evaluation digits of the app's split")
    for name in args.models.split(","):
        print("\n".join(bench_model(name, [int(b) for b in args.batches.split(",")], args.rounds, args.threads)))
        sys.stdout.flush()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

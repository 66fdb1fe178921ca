"""Benchmark: the shipped language model under weight-only quantization — perplexity table and latency.

    /work/main/.venv/bin/python bench/bench_language_model.py [--table] [--latency] [--rounds 5]

--table: every method (RTN, HQQ, GPTQ, AWQ) × bits (3, 4, 8) × group size (32, 64, 128), symmetric
(and asymmetric with --asymmetric), on every MatMul weight: perplexity on the lab's evaluation
windows (the .npz split 128 / 128, seed 0), the quantized weights' size, the time to quantize (GPTQ
and AWQ: plus the one pass that collects the calibration inputs, printed once), and the exported
MatMulNBits model's perplexity where onnxruntime runs the bit width (4, 8).
--latency: the exported model (MatMulNBits with our integers) at the context length, batch 1 and 8,
FP32 vs 8-bit vs 4-bit, timed round-robin `--rounds` times with quant_core.export.latency.measure_latency
(1 intra-op thread); median of the rounds' medians, ratio to FP32 measured in the same run.
--config-methods: the same methods as *config methods* (`"methods"` in a config, `--methods gptq`): every
MatMul weight in the config's int3 / int4 per-group format (groups 32 and 128, symmetric; the embedding
FP32), each method applied before the config's rounding, the perplexity the lab's simulation measures and
that of the exported model (MatMulNBits with the config's integers; 3 bits: simulated only), time to apply.
Prints Markdown tables (docs/language_models.md and docs/BENCHMARKS.md record them).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.model.data import split_dataset  # noqa: E402
from quant_core.model.demo import LANGUAGE_MODELS, load_demo  # noqa: E402
from quant_core.engine.language_model import (WeightOnlySpec, collect_layer_inputs, fp32_weight_bytes,  # noqa: E402
                                       measure_weight_only, model_perplexity, quantize_weights)
from quant_core.export.latency import measure_latency  # noqa: E402
from quant_core.model.model_io import load_model  # noqa: E402
from quant_core.export.nbits import MATMUL_NBITS_BITS, export_matmul_nbits  # noqa: E402
from quant_core.numerics.weight_only import BITS, BLOCK_SIZES, WeightOnlyMethod  # noqa: E402

CALIBRATION_WINDOWS = 64


def data(name: str):
    model_bytes, dataset = load_demo(name)
    calibration, evaluation = split_dataset(dataset)
    return load_model(model_bytes), calibration, evaluation


def table(name: str, symmetric_values: tuple[bool, ...]) -> list[str]:
    model, calibration, evaluation = data(name)
    tokens, labels = evaluation.inputs["tokens"], evaluation.labels
    started = time.perf_counter()
    inputs = collect_layer_inputs(model, calibration.inputs["tokens"][:CALIBRATION_WINDOWS])
    collect_s = time.perf_counter() - started
    fp32 = model_perplexity(model, tokens, labels)
    fp32_mb = fp32_weight_bytes(model) / 2**20
    lines = [f"FP32 perplexity {fp32:.4f} on {len(tokens)} windows × {tokens.shape[1]} tokens; MatMul weights "
             f"{fp32_mb:.2f} MiB FP32; calibration inputs of {CALIBRATION_WINDOWS} windows collected in "
             f"{collect_s:.1f} s (GPTQ, AWQ)\n",
             "| method | bits | group | sym | perplexity | Δ vs FP32 | exported perplexity | weights MiB | × FP32 size | quantize s |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for symmetric in symmetric_values:
        for bits in BITS:
            for block in BLOCK_SIZES:
                for method in WeightOnlyMethod:
                    spec = WeightOnlySpec(method, bits, block, symmetric)
                    result, _ = measure_weight_only(model, spec, tokens, labels, inputs=inputs, fp32_perplexity=fp32)
                    exported = "simulated only"
                    if bits in MATMUL_NBITS_BITS:
                        quantized = quantize_weights(model, spec, inputs)
                        exported = f"{model_perplexity(export_matmul_nbits(model, quantized.layers), tokens, labels):.4f}"
                    lines.append(f"| {method.value.upper()} | {bits} | {block} | {'sym' if symmetric else 'asym'} | "
                                 f"{result.perplexity:.4f} | {result.perplexity_increase:+.4f} | {exported} | "
                                 f"{result.weight_bytes / 2**20:.2f} | {result.weight_bytes / result.fp32_weight_bytes:.3f} | "
                                 f"{result.seconds:.2f} |")
                    print(lines[-1], flush=True)
    return lines


def config_methods_table(name: str) -> list[str]:
    import onnx

    from quant_core.config import FP32_LAYER, LayerQuant, QuantConfig, TensorQuant
    from quant_core.engine.evaluate import Evaluator
    from quant_core.export.ort_export import export_model
    from quant_core.methods import apply_methods, changes_fp32, parse_methods
    from quant_core.model.model_io import prepare_model
    from quant_core.numerics.formats import Granularity, parse_format

    model_bytes, dataset = load_demo(name)
    calibration, evaluation = split_dataset(dataset)
    calibration = type(calibration)(inputs={"tokens": calibration.inputs["tokens"][:CALIBRATION_WINDOWS]})
    prepared = prepare_model(load_model(model_bytes))
    tokens, labels = evaluation.inputs["tokens"], evaluation.labels
    original = Evaluator(prepared, None, evaluation)
    fp32 = model_perplexity(prepared.model, tokens, labels)
    lines = [f"FP32 perplexity {fp32:.4f}; config methods on {CALIBRATION_WINDOWS} calibration windows; every "
             "MatMul per group along K, symmetric, the embedding FP32\n",
             "| method | bits | group | perplexity (simulated) | Δ vs FP32 | exported perplexity | apply s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for bits in (4, 3):
        for block in (32, 128):
            weights = TensorQuant(parse_format(f"int{bits}"), granularity=Granularity.PER_GROUP, block_size=block)
            base = QuantConfig(LayerQuant(weights), name=f"int{bits} g{block}").with_layer("/embed/Gather", FP32_LAYER)
            for method in ("rtn", "hqq", "gptq", "awq"):
                config = base.with_methods(parse_methods(method))
                started = time.perf_counter()
                transformed, _ = apply_methods(prepared, config, calibration)
                seconds = time.perf_counter() - started
                evaluator = Evaluator(transformed, None, evaluation,
                                      reference_outputs=original.fp32_outputs if changes_fp32(config) else None)
                simulated = dict(evaluator.evaluate(config).score.metrics)["perplexity"]
                exported = "simulated only"
                if bits == 4:
                    model = onnx.load_from_string(export_model(transformed, config, None).model)
                    exported = f"{model_perplexity(model, tokens, labels):.4f}"
                lines.append(f"| {method.upper()} | {bits} | {block} | {simulated:.4f} | {simulated - fp32:+.4f} | "
                             f"{exported} | {seconds:.2f} |")
                print(lines[-1], flush=True)
    return lines


def latency(name: str, rounds: int, batches: list[int]) -> list[str]:
    model, calibration, evaluation = data(name)
    tokens = evaluation.inputs["tokens"]
    variants = {"FP32": model}
    for bits in (8, 4):
        spec = WeightOnlySpec(WeightOnlyMethod.RTN, bits, 32, True)
        variants[f"int{bits} g32 MatMulNBits"] = export_matmul_nbits(model, quantize_weights(model, spec).layers)
    payloads = {label: variant.SerializeToString() for label, variant in variants.items()}
    lines = [f"load average before: {os.getloadavg()[0]:.2f}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores\n",
             "| variant | batch | median ms | p10–p90 ms | × FP32 (median) | file MiB |", "|---|---:|---:|---:|---:|---:|"]
    for batch in batches:
        medians = {label: [] for label in payloads}
        spreads = {label: [] for label in payloads}
        for _ in range(rounds):
            for label, payload in payloads.items():
                result = measure_latency(payload, {"tokens": tokens}, batch_size=batch, threads=1, warmup=3,
                                         repeats=20 if batch == 1 else 8)
                medians[label].append(result.median_ms)
                spreads[label].append((result.p10_ms, result.p90_ms))
        base = float(np.median(medians["FP32"]))
        for label, payload in payloads.items():
            median = float(np.median(medians[label]))
            p10, p90 = np.median(np.asarray(spreads[label]), axis=0)   # medians over rounds, like the median
            lines.append(f"| {label} | {batch} | {median:.2f} | {p10:.2f}–{p90:.2f} | "
                         f"{median / base:.2f} | {len(payload) / 2**20:.2f} |")
            print(lines[-1], flush=True)
    lines.append(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=next(iter(LANGUAGE_MODELS)))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--asymmetric", action="store_true", help="the table also for asymmetric groups")
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--config-methods", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    if not (args.table or args.latency or args.config_methods):
        args.table = args.latency = True
    output = []
    if args.table:
        output += ["\n## Perplexity per method × bits × group size\n",
                   *table(args.model, (True, False) if args.asymmetric else (True,))]
    if args.config_methods:
        output += ["\n## Config methods on the config's grid\n", *config_methods_table(args.model)]
    if args.latency:
        output += ["\n## Latency of the exported model\n",
                   *latency(args.model, args.rounds, [int(b) for b in args.batches.split(",")])]
    print("\n".join(output))


if __name__ == "__main__":
    main()

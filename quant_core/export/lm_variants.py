"""Perplexity vs size vs latency of a language model's exported variants (the Language model page).

FP32, and each weight-only choice exported as MatMulNBits with our integers (`nbits.export_matmul_nbits`;
bit widths without a kernel: the simulated model, no latency), timed with onnxruntime
(`latency.measure_latency`) at the context length for each batch size, round-robin.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from quant_core.engine.language_model import fp32_weight_bytes, model_perplexity, quantize_weights, simulated_model
from quant_core.export.latency import measure_latency
from quant_core.export.nbits import MATMUL_NBITS_BITS, export_matmul_nbits


@dataclass(frozen=True)
class VariantMeasure:
    """One variant of a language model: perplexity, file and weight size, measured latency per batch size.

    latency_ms: batch size -> (median, p10, p90) ms of one run on `batch` windows of the full context,
    measured with onnxruntime (1 intra-op thread); empty for a simulated-only variant.
    """

    label: str
    perplexity: float
    file_bytes: int | None
    weight_bytes: int
    latency_ms: dict = field(default_factory=dict)

    @property
    def exported(self) -> bool:
        return self.file_bytes is not None


def exported_variants(model: onnx.ModelProto, specs: dict, inputs=None) -> dict:
    """label -> (ModelProto exported as MatMulNBits, or the simulated model when its bits have no kernel;
    MatMul weight bytes; exported?) for each WeightOnlySpec of `specs` (label -> spec), plus "FP32"."""
    found = {"FP32": (model, fp32_weight_bytes(model), True)}
    for label, spec in specs.items():
        quantized = quantize_weights(model, spec, inputs if spec.needs_calibration else None)
        if spec.bits in MATMUL_NBITS_BITS:
            found[label] = (export_matmul_nbits(model, quantized.layers), quantized.storage_bytes(), True)
        else:
            found[label] = (simulated_model(model, quantized), quantized.storage_bytes(), False)
    return found


def measure_variants(variants: dict, tokens: np.ndarray, labels: np.ndarray, *, batches=(1, 8), rounds: int = 2,
                     repeats: int = 10, progress=None) -> list[VariantMeasure]:
    """Perplexity of every variant on (tokens, labels) and the latency of the exported ones at the context
    length, each batch size, timed round-robin `rounds` times (median of the rounds' medians), 1 thread."""
    payloads = {label: model.SerializeToString() for label, (model, _, exported) in variants.items() if exported}
    timings = {label: {batch: [] for batch in batches} for label in payloads}
    steps, done = len(batches) * rounds * len(payloads) + len(variants), 0
    for batch in batches:
        for _ in range(rounds):
            for label, payload in payloads.items():
                result = measure_latency(payload, {"tokens": tokens}, batch_size=batch, threads=1, warmup=2,
                                         repeats=repeats if batch == 1 else max(3, repeats // 3))
                timings[label][batch].append((result.median_ms, result.p10_ms, result.p90_ms))
                done += 1
                if progress is not None:
                    progress(done / steps)
    measured = []
    for label, (model, weight_bytes, exported) in variants.items():
        latency = {batch: tuple(float(v) for v in np.median(np.asarray(timings[label][batch]), axis=0))
                   for batch in batches} if exported else {}
        measured.append(VariantMeasure(label, model_perplexity(model, tokens, labels),
                                       len(payloads[label]) if exported else None, weight_bytes, latency))
        done += 1
        if progress is not None:
            progress(done / steps)
    return measured

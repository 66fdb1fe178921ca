"""MX / NVFP4 block formats on real weights: the figures of docs/formats.md.

    nice python bench/bench_block_formats.py [--minilm]

Per demo model, each block format as weight-only config (activations FP32): accuracy on the 541
evaluation digits, output SQNR against FP32, model bytes; then the weight SQNR of every layer summed
over the model, by the spec's shared-exponent rule and rounded up. --minilm adds all-MiniLM-L6-v2
(cached by tests/real_models/fetch.py) on its 32 sentences: embedding cosine and recall@5.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.model.data import load_npz, split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.numerics.formats import parse_format  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402

FORMATS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxfp4_up", "mxint8", "nvfp4")
BASELINES = ("W8 weight-only", "W4 weight-only per-group")


def weight_sqnr(evaluator: Evaluator, tq: TensorQuant) -> float:
    """SQNR (dB) of all the model's quantized weights together: sum of powers over sum of errors."""
    signal = noise = 0.0
    for layer in evaluator.layers:
        x = evaluator.session.fp32_weight(layer).astype(np.float64)
        q = evaluator.quantized_weight(layer, tq).astype(np.float64)
        signal += float(np.sum(x * x))
        noise += float(np.sum((x - q) ** 2))
    return 10 * np.log10(signal / noise)


def rows(evaluator: Evaluator, metric: str) -> None:
    fp32 = evaluator.evaluate(PRESETS["FP32"])
    print(f"| config | bits / weight | {metric} | output SQNR dB | weight SQNR dB | model bytes |")
    print("|---|---|---|---|---|---|")
    print(f"| FP32 | 32 | {fp32.score.value(fp32.score.headline):.4f} | - | - | {fp32.size_bytes} |")
    configs = [(name, QuantConfig(LayerQuant(TensorQuant(parse_format(name))), name=name)) for name in FORMATS]
    configs += [(name, PRESETS[name]) for name in BASELINES]
    for name, config in configs:
        result = evaluator.evaluate(config)
        tq = config.default.weights
        bits = "%.3g" % (8 * (result.size_bytes - evaluator._other_bytes) /
                         sum(evaluator.session.fp32_weight(layer).size for layer in evaluator.layers))
        print(f"| {name} | {bits} | {result.score.value(result.score.headline):.4f} | {result.sqnr_db:.1f} | "
              f"{weight_sqnr(evaluator, tq):.1f} | {result.size_bytes} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", action="store_true")
    args = parser.parse_args()
    for name in ("mlp", "cnn", "transformer"):
        raw, data = load_demo(name)
        prepared = prepare_model(load_model(raw))
        _, evaluation_data = split_dataset(data)
        print(f"### demo {name} (weights only; accuracy on 541 digits)\n")
        rows(Evaluator(prepared, None, evaluation_data), "accuracy")
    if args.minilm:
        cache = Path.home() / ".cache" / "quantization-lab" / "real-models"
        prepared = prepare_model(load_model(str(next((cache / "models").glob("minilm-*.onnx")))))
        data = load_npz(str(next((cache / "data").glob("minilm-*.npz"))), prepared.info)
        print("### all-MiniLM-L6-v2 (weights only; 32 sentences; headline = recall@5 of the embeddings)\n")
        rows(Evaluator(prepared, None, data), "recall@5")


if __name__ == "__main__":
    main()

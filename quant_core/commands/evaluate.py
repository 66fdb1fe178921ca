"""`python -m quant_core evaluate MODEL.onnx --data DATA.npz [--config CONFIG.json] [--json]`.

Calibrates on a seeded split of the data, evaluates the config on the rest (without --config:
the W8A8 preset, per-channel int8 weights and uint8 min-max activations). docs/engine.md lists
the --json keys.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..calibrate import calibrate
from ..config import PRESETS, QuantConfig
from ..data import load_npz, split_dataset
from ..errors import ConfigError
from ..evaluate import Evaluator
from ..model_io import load_model, prepare_model


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file")
    parser.add_argument("--data", required=True, help=".npz with one array per model input and optional 'labels'")
    parser.add_argument("--calibration-samples", type=int, default=256,
                        help="samples used to calibrate (at most half the data; default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def build_evaluator(args: argparse.Namespace, *, activations: bool = True) -> Evaluator:
    """Load, split, calibrate and build the Evaluator the engine commands share.

    activations=False (a weights-only sweep) skips the calibration pass; the evaluation split is the
    same seeded split either way, so the numbers are too."""
    prepared = prepare_model(load_model(args.model))
    calibration_data, evaluation_data = split_dataset(load_npz(args.data, prepared.info),
                                                      calibration_samples=args.calibration_samples)
    calibration = calibrate(prepared, calibration_data) if activations else None
    return Evaluator(prepared, calibration, evaluation_data)


def finite(value):
    """JSON has no Infinity: an infinite SQNR (identical outputs) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def dump_json(document) -> None:
    json.dump(finite(document), sys.stdout, indent=2)
    sys.stdout.write("\n")


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--config", help="config JSON (QuantConfig.to_json); default: the W8A8 preset")


def _load_config(path: str | None) -> QuantConfig:
    if path is None:
        return PRESETS["W8A8"]
    try:
        return QuantConfig.from_json(Path(path).read_bytes())
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None


def run(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    evaluator = build_evaluator(args)
    result = evaluator.evaluate(config)
    fp32 = evaluator.evaluate(PRESETS["FP32"])
    document = {"config": config.to_dict(), "fp32_accuracy": fp32.accuracy, **result.to_dict(),
                "layers": [e.to_dict() for e in evaluator.layer_errors(config)]}
    if args.json:
        dump_json(document)
        return 0
    accuracy = "n/a (no labels)" if result.accuracy is None else f"{result.accuracy:.4f} (FP32 {fp32.accuracy:.4f})"
    lines = [f"config {config.name} on {result.sample_count} samples",
             f"accuracy        {accuracy}",
             f"top-1 agreement {result.top1_agreement:.4f}",
             f"cosine          {result.cosine:.6f}",
             f"SQNR            {result.sqnr_db:.2f} dB",
             f"size            {result.size_bytes} bytes (FP32 {result.fp32_size_bytes}, x{result.compression:.2f})"]
    if result.simulated_only:
        lines.append(f"simulated only (no onnxruntime kernel): {', '.join(result.simulated_only)}")
    lines.append("layer SQNR (dB): isolated / accumulated")
    lines += [f"  {e.layer}: {e.isolated_sqnr_db:.2f} / {e.accumulated_sqnr_db:.2f}"
              for e in evaluator.layer_errors(config)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

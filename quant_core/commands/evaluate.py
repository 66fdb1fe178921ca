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
from ..data import load_npz, record_state, split_dataset
from ..errors import ConfigError
from ..evaluate import Evaluator
from ..layout import parse_state
from ..model_io import load_model, prepare_model


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file")
    parser.add_argument("--data", required=True, help=".npz with one array per model input and optional 'labels'")
    add_state_argument(parser)
    parser.add_argument("--calibration-samples", type=int, default=256,
                        help="samples used to calibrate (at most half the data; default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add_state_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", action="append", metavar="OUTPUT=INPUT",
                        help="a state output fed to an input at the next sample (streaming), e.g. stateN=state; "
                             "repeat or comma-separate; 'none' turns streaming off (default: inferred from names "
                             "and shapes, docs/data.md)")


def load_data(args: argparse.Namespace, prepared):
    """The --data .npz read against the model, with the --state pairs (inferred when absent); state inputs
    the file leaves out are filled with the FP32 model's carried state (`data.record_state`)."""
    return record_state(prepared, load_npz(args.data, prepared.info, state=parse_state(getattr(args, "state", None))))


def build_evaluator(args: argparse.Namespace, *, activations: bool = True) -> Evaluator:
    """Load, split, calibrate and build the Evaluator the engine commands share.

    activations=False (a weights-only sweep) skips the calibration pass; the evaluation split is the
    same seeded split either way, so the numbers are too."""
    prepared = prepare_model(load_model(args.model))
    calibration_data, evaluation_data = split_dataset(load_data(args, prepared),
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
    stream = evaluator.streaming()
    streamed = None if stream is None else stream.evaluate(config)
    document = {"config": config.to_dict(), "fp32_accuracy": fp32.accuracy, **result.to_dict(),
                "layers": [e.to_dict() for e in evaluator.layer_errors(config)],
                "layout": evaluator.feeder.layout.to_dict(),
                "streaming": None if streamed is None else streamed.to_dict()}
    if args.json:
        dump_json(document)
        return 0
    lines = [f"config {config.name} on {result.sample_count} samples",
             *(f"data: {line}" for line in evaluator.feeder.layout.describe())]
    if streamed is None:
        lines += [f"{name:<16}{value}" for name, value in _metrics(result, fp32.accuracy)]
    else:  # per frame: each sample fed its recorded state; streaming: the config carries its own state
        frames = _metrics(result, fp32.accuracy)
        streams = _metrics(streamed, stream.evaluate(PRESETS["FP32"]).accuracy)
        width = max(len(value) for _, value in frames) + 2
        lines.append(f"{'':<16}{'per frame':<{width}}streaming")
        lines += [f"{name:<16}{frame:<{width}}{value}" for (name, frame), (_, value) in zip(frames, streams)]
    lines.append(f"size            {result.size_bytes} bytes (FP32 {result.fp32_size_bytes}, x{result.compression:.2f})")
    if result.simulated_only:
        lines.append(f"simulated only (no onnxruntime kernel): {', '.join(result.simulated_only)}")
    lines.append("layer SQNR (dB): isolated / accumulated")
    lines += [f"  {e.layer}: {e.isolated_sqnr_db:.2f} / {e.accumulated_sqnr_db:.2f}"
              for e in evaluator.layer_errors(config)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _metrics(result, fp32_accuracy) -> list[tuple[str, str]]:
    accuracy = "n/a (no labels)" if result.accuracy is None else f"{result.accuracy:.4f} (FP32 {fp32_accuracy:.4f})"
    return [("accuracy", accuracy), ("top-1 agreement", f"{result.top1_agreement:.4f}"),
            ("cosine", f"{result.cosine:.6f}"), ("SQNR", f"{result.sqnr_db:.2f} dB")]

"""`python -m quant_core integer_only MODEL.onnx [--data DATA.npz [--config C.json] [--out INT.onnx]] [--json]`.

Which nodes still compute in float once onnxruntime has optimized the model (docs/integer_only.md), and
the verdict "integer-only: yes/no". Without --data, MODEL is checked as given (an exported quantized
model). With --data, MODEL is the FP32 model: the config (default W8A8) is exported as the app exports
it, checked, rewritten in integer ONNX ops with fixed-point requantization when its ops allow, and both
are scored on the evaluation split; --out writes the integer-only model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quant_core.cli.commands.evaluate import dump_json, load_data
from quant_core.config import PRESETS, QuantConfig
from quant_core.engine.calibrate import calibrate
from quant_core.engine.tasks import read_config_json
from quant_core.errors import ConfigError
from quant_core.export.integer_only import (IntegerOnlyComparison, IntegerOnlyReport, check_integer_only,
                                            compare_integer_only)
from quant_core.export.ort_export import export_model
from quant_core.model.data import split_dataset
from quant_core.model.model_io import load_model, prepare_model


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an exported quantized .onnx, or the FP32 model with --data")
    parser.add_argument("--data", help=".npz with the model's inputs (and 'labels'): export, then compare")
    parser.add_argument("--config", help="config JSON to export (default: the W8A8 preset)")
    parser.add_argument("--calibration-samples", type=int, default=256, help="default %(default)s")
    parser.add_argument("--multiplier-bits", type=int, default=31,
                        help="bits of the fixed-point multipliers (default 31: int32, exact for float32 scales)")
    parser.add_argument("--out", help="write the integer-only model here")
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        report = check_integer_only(Path(args.model).read_bytes())
        if args.json:
            dump_json(report.to_dict())
        else:
            sys.stdout.write("\n".join(_check_lines(report)) + "\n")
        return 0
    config = _config(args.config)
    prepared = prepare_model(load_model(args.model))
    calibration_data, evaluation_data = split_dataset(load_data(args, prepared),
                                                      calibration_samples=args.calibration_samples)
    exported = export_model(prepared, config, calibrate(prepared, calibration_data))
    comparison = compare_integer_only(exported.model, evaluation_data.inputs, evaluation_data.labels,
                                      multiplier_bits=args.multiplier_bits)
    if args.out and comparison.model is not None:
        Path(args.out).write_bytes(comparison.model.SerializeToString())
    if args.json:
        dump_json({"config": config.name, **comparison.to_dict()})
    else:
        sys.stdout.write("\n".join(_comparison_lines(config.name, comparison, args.out)) + "\n")
    return 0


def _config(path: str | None) -> QuantConfig:
    if path is None:
        return PRESETS["W8A8"]
    try:
        return read_config_json(Path(path).read_bytes())[0]
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path}: {err}") from None


def _check_lines(report: IntegerOnlyReport) -> list[str]:
    lines = [f"integer-only: {'yes' if report.integer_only else 'no'} "
             f"({len(report.float_nodes)} of {len(report.nodes)} nodes compute in float after onnxruntime's optimizations)"]
    lines += [f"  float  {node.op_type:<22} {node.name}   ({node.reason})" for node in report.float_nodes]
    return lines


def _comparison_lines(config: str, comparison: IntegerOnlyComparison, out: str | None) -> list[str]:
    lines = [f"config {config}, exported as the app exports it", *_check_lines(comparison.check)]
    if comparison.model is None:
        return lines + [f"no integer-only export: {comparison.refused}"]
    lines.append(f"fixed-point requantization ({comparison.multiplier_bits}-bit multiplier + right shift, one rounding) "
                 "against float scales, per layer:")
    lines += [f"  {layer.layer}: multiplier error <= {layer.max_multiplier_error:.1e}, "
              f"{100 * layer.changed_fraction:.3f}% codes changed (max {layer.max_code_change}), "
              f"SQNR {layer.sqnr_db:.1f} dB (gemmlowp's two roundings: {100 * layer.gemmlowp_changed_fraction:.3f}%)"
              for layer in comparison.layers]
    if comparison.exported_accuracy is not None:
        lines.append(f"accuracy: exported {100 * comparison.exported_accuracy:.2f}%, integer-only "
                     f"{100 * comparison.integer_accuracy:.2f}% "
                     f"({100 * (comparison.integer_accuracy - comparison.exported_accuracy):+.2f} pp)")
    lines.append(f"argmax agreement: {100 * comparison.agreement:.2f}%")
    if out:
        lines.append(f"integer-only model written to {out}")
    return lines

"""`python -m quant_core export MODEL.onnx --data DATA.npz --config CONFIG.json -o OUT.onnx`.

Calibrates on a seeded split of the data (as `evaluate` does), exports a real quantized model (static QDQ by default) and writes it with
its TensorQuantOverrides JSON beside it (OUT.overrides.json). Prints which layers run with integer
kernels and which stay FP32 because their format is simulated only. See docs/export.md.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from quant_core.config import PRESETS, QuantConfig
from quant_core.numerics.cpu_target import CpuTarget
from quant_core.errors import ConfigError, DataError

KINDS = ("static", "dynamic", "fp16", "matmul_nbits")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file")
    parser.add_argument("--data", help=".npz with one array per model input (first axis = samples); "
                                       "needed for --kind static")
    parser.add_argument("--config", default="W8A8",
                        help="config JSON file, or a preset name (%(default)s by default; "
                             f"presets: {', '.join(PRESETS)})")
    parser.add_argument("-o", "--output", required=True, help="where to write the exported .onnx")
    parser.add_argument("--kind", choices=KINDS, default="static",
                        help="static: the config as static QDQ (default); dynamic: onnxruntime dynamic int8; "
                             "fp16; matmul_nbits: 4-bit weight-only MatMulNBits")
    from quant_core.cli.commands.evaluate import add_state_argument
    add_state_argument(parser)
    parser.add_argument("--calibration-samples", type=int, default=256,
                        help="samples of --data used for calibration, a seeded split as in `evaluate` "
                             "(at most half the data; default %(default)s)")
    parser.add_argument("--target", choices=[target.value for target in CpuTarget],
                        help="CPU class the static export is for (default: the config's, else auto = this machine); "
                             "saturating-x86 stores int8 weights as uint8 (same grid, u8xu8 kernels)")


def load_config(text: str) -> QuantConfig:
    """A preset name or the path of a config JSON file."""
    if text in PRESETS:
        return PRESETS[text]
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"--config {text!r} is neither a config file nor a preset ({', '.join(PRESETS)})")
    try:
        return QuantConfig.from_json(path.read_bytes())
    except ValueError as err:
        raise ConfigError(f"{path.name}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from quant_core.export.ort_export import export_dynamic_int8, export_fp16, export_matmul_nbits, export_model, save_export
    from quant_core.model.model_io import load_model, prepare_model
    prepared = prepare_model(load_model(args.model))
    if args.kind == "static":
        from quant_core.engine.calibrate import calibrate
        from quant_core.model.data import split_dataset
        from quant_core.cli.commands.evaluate import load_data
        from quant_core.model.validate import validate_config
        if not args.data:
            raise DataError("--kind static needs --data DATA.npz to calibrate the activation ranges")
        config = load_config(args.config)
        if args.target:
            config = replace(config, target=CpuTarget(args.target))
        validate_config(config, prepared.info)
        sample, _ = split_dataset(load_data(args, prepared), calibration_samples=args.calibration_samples)
        calibration = calibrate(prepared, sample)
        result = export_model(prepared, config, calibration, calibration_data=sample)
    elif args.kind == "dynamic":
        result = export_dynamic_int8(prepared)
    elif args.kind == "fp16":
        result = export_fp16(prepared)
    else:
        result = export_matmul_nbits(prepared)
    model_path, json_path = save_export(result, args.output)
    print(f"wrote {model_path} ({len(result.model):,} bytes, {result.kind}) and {json_path}")
    if args.kind == "static":
        print(f"config: {config.name}, calibrated on {sample.num_samples} sample(s)")
        from quant_core.numerics.cpu_target import describe_target
        print(describe_target(config.target))
        from quant_core.engine.plan import ExportKind, plan_export
        kinds = [entry.kind for entry in plan_export(prepared, config)]
        print(f"integer kernels (int8 weights, 8-bit activations): {kinds.count(ExportKind.INTEGER)} of "
              f"{len(kinds)} layer(s); {len(result.overrides)} tensor override(s)")
        if result.simulated_only:
            print(f"simulated only, kept FP32 in the export: {', '.join(result.simulated_only)}")
        else:
            print("simulated only: none (every layer is exported as configured)")
    for note in result.notes:
        print(f"note: {note}")
    return 0

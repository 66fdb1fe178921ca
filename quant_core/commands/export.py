"""`python -m quant_core export MODEL.onnx --data DATA.npz --config CONFIG.json -o OUT.onnx`.

Calibrates on the data, exports a real quantized model (static QDQ by default) and writes it with
its TensorQuantOverrides JSON beside it (OUT.overrides.json). Prints which layers run with integer
kernels and which stay FP32 because their format is simulated only. See docs/export.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..config import PRESETS, QuantConfig
from ..errors import ConfigError, DataError

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
    parser.add_argument("--calibration-samples", type=int, default=512,
                        help="samples of --data used for calibration (default %(default)s)")


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


def load_inputs(path: str, input_names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read the model inputs from an .npz (no pickle); one array per input, samples on the first axis."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file not found: {file}")
    with open(file, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise DataError(f"{file.name} is not an .npz archive (save the arrays with numpy.savez)")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{file.name} is not a readable .npz without pickled objects ({str(err).splitlines()[0]})") \
            from None
    missing = [name for name in input_names if name not in arrays]
    if missing:
        raise DataError(f"{file.name} has no array for model input(s) {missing}; it has {sorted(arrays)}")
    inputs = {name: arrays[name] for name in input_names}
    counts = {len(array) for array in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"{file.name}: the input arrays must have the same, non-zero number of samples")
    return inputs


def run(args: argparse.Namespace) -> int:
    from ..export import export_dynamic_int8, export_fp16, export_matmul_nbits, export_model, save_export
    from ..model_io import load_model, prepare_model
    if args.calibration_samples < 1:
        raise ValueError(f"--calibration-samples must be >= 1, got {args.calibration_samples}")
    prepared = prepare_model(load_model(args.model))
    if args.kind == "static":
        from ..calibrate import calibrate
        from ..validate import validate_config
        if not args.data:
            raise DataError("--kind static needs --data DATA.npz to calibrate the activation ranges")
        config = load_config(args.config)
        validate_config(config, prepared.info)
        inputs = load_inputs(args.data, tuple(t.name for t in prepared.info.inputs))
        sample = {name: array[:args.calibration_samples] for name, array in inputs.items()}
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
        print(f"config: {config.name}, calibrated on {len(next(iter(sample.values())))} sample(s)")
        from ..overrides import ExportKind, plan_export
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

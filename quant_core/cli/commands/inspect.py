"""`python -m quant_core inspect MODEL.onnx [--json]`: a model's inputs, outputs and quantizable layers.

Shows the model as the app sees it (after `prepare_model`): layer names are ONNX node names, unnamed nodes
get "{op_type}_{index}". The --json keys are stable; docs/models.md lists them.
"""
from __future__ import annotations

import argparse
import json
import sys

from quant_core.model.model_io import MAX_MODEL_BYTES, Layer, ModelInfo, TensorInfo, load_model, prepare_model


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file (self-contained: external data is refused)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--max-mb", type=float, default=MAX_MODEL_BYTES / 2**20,
                        help="refuse models larger than this many MiB (default %(default).0f)")


def run(args: argparse.Namespace) -> int:
    prepared = prepare_model(load_model(args.model, max_bytes=int(args.max_mb * 2**20)))
    report = to_dict(prepared.info, prepared.notes)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(prepared.info, prepared.notes))
    return 0


def to_dict(info: ModelInfo, prepare_notes: tuple[str, ...] = ()) -> dict:
    """The --json document: plain JSON types, dynamic dims as strings, unknown dims as null."""
    return {
        "inputs": [_tensor(tensor) for tensor in info.inputs],
        "outputs": [_tensor(tensor) for tensor in info.outputs],
        "opset": info.opset,
        "ir_version": info.ir_version,
        "producer": info.producer,
        "already_quantized": info.already_quantized,
        "quantized_ops": list(info.quantized_ops),
        "total_params": info.total_params,
        "layers": [_layer(layer) for layer in info.layers],
        "notes": [*prepare_notes, *info.notes],
    }


def to_text(info: ModelInfo, prepare_notes: tuple[str, ...] = ()) -> str:
    lines = [f"opset {info.opset}, IR version {info.ir_version}, producer: {info.producer or 'unknown'}",
             f"already quantized: {'yes (' + ', '.join(info.quantized_ops) + ')' if info.already_quantized else 'no'}",
             f"parameters: {info.total_params:,}", ""]
    lines += _table(["input", "shape", "dtype"],
                    [[tensor.name, _shape_text(tensor.shape), tensor.dtype] for tensor in info.inputs])
    lines.append("")
    lines += _table(["output", "shape", "dtype"],
                    [[tensor.name, _shape_text(tensor.shape), tensor.dtype] for tensor in info.outputs])
    lines.append("")
    rows = [[layer.name, layer.op_type,
             ", ".join(f"{ref.name} {_shape_text(ref.shape)}" for ref in layer.weights) or "-",
             f"{layer.params:,}", layer.note] for layer in info.layers]
    lines += _table(["layer", "op_type", "weights", "params", "note"], rows) if rows else ["no layers"]
    notes = [*prepare_notes, *info.notes]
    if notes:
        lines += [""] + [f"note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _tensor(tensor: TensorInfo) -> dict:
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": tensor.dtype}


def _layer(layer: Layer) -> dict:
    return {
        "layer": layer.name,
        "op_type": layer.op_type,
        "weights": [{"name": ref.name, "shape": list(ref.shape), "dtype": ref.dtype} for ref in layer.weights],
        "bias": None if layer.bias is None else {"name": layer.bias.name, "shape": list(layer.bias.shape)},
        "params": layer.params,
        "input": layer.activation_input,
        "note": layer.note,
    }


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("?" if dim is None else str(dim) for dim in shape) + ("," if len(shape) == 1 else "") + ")"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [header, *rows]]

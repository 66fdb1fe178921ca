"""`python -m quant_core COMMAND ...`: the command-line front over the same core as the app.

Each command lives in `quant_core/cli/commands/<name>.py` with `configure(parser)` and `run(args) -> int`.
Bad input ends with exit status 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from quant_core.errors import QuantLabError

COMMANDS = {
    "inspect": "list a model's inputs, outputs and quantizable layers",
    "evaluate": "evaluate a quantization config on data",
    "sensitivity": "per-layer sensitivity sweep",
    "suggest": "mixed-precision suggestion under a size or accuracy budget",
    "export": "export a real quantized ONNX model and its TensorQuantOverrides JSON",
    "bench": "measure onnxruntime latency of a model",
    "integer_only": "which nodes compute in float; integer-only export with fixed-point requantization",
    "vectors": "recall@k of quantized embedding vectors against exact FP32 search",
}


def _command_module(name: str):
    return importlib.import_module(f"quant_core.cli.commands.{name}")


def build_parser(available: dict[str, object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quant_core", description="Quantization Lab command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in available.items():
        command_parser = sub.add_parser(name, help=COMMANDS[name])
        module.configure(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    available = {name: _command_module(name) for name in COMMANDS}
    args = build_parser(available).parse_args(argv)
    try:
        return int(available[args.command].run(args) or 0)
    except (QuantLabError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last resort: one line, never a traceback
        print(f"error: unexpected {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())

"""`python -m quant_core sensitivity MODEL.onnx --data DATA.npz [--formats int8,int4] [--activations] [--json]`.

One row per layer x format (one layer quantized at a time). docs/engine.md lists the --json keys.
"""
from __future__ import annotations

import argparse
import sys

from ..sensitivity import run_sweep
from .evaluate import add_common_arguments, build_evaluator, dump_json

DEFAULT_FORMATS = "int8,int6,int4,int3,int2"


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help="comma-separated formats (default %(default)s)")
    parser.add_argument("--activations", action="store_true",
                        help="quantize the layer's input activation in the same format too")


def row_dict(row, with_labels: bool) -> dict:
    """The --json row: accuracy when the data has labels, else top-1 agreement with FP32."""
    data = {"layer": row.layer, "format": row.format, "sqnr_db": row.sqnr_db, "cosine": row.cosine,
            "size_bytes": row.size_bytes}
    if with_labels:
        data["accuracy"] = row.accuracy
    else:
        data["agreement"] = row.agreement
    return data


def run(args: argparse.Namespace) -> int:
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    evaluator = build_evaluator(args)
    rows = run_sweep(evaluator, formats, activations=args.activations)
    with_labels = evaluator.labels is not None
    documents = [row_dict(row, with_labels) for row in rows]
    if args.json:
        dump_json(documents)
        return 0
    metric = "accuracy" if with_labels else "agreement"
    width = max([len("layer")] + [len(row.layer) for row in rows])
    fmt_width = max([len("format")] + [len(row.format) for row in rows])
    lines = [f"{'layer':<{width}}  {'format':<{fmt_width}} {'SQNR dB':>8} {'cosine':>9} {metric:>9} {'bytes':>9}"]
    for doc in documents:
        lines.append(f"{doc['layer']:<{width}}  {doc['format']:<{fmt_width}} {doc['sqnr_db']:>8.2f} {doc['cosine']:>9.5f} "
                     f"{doc[metric]:>9.4f} {doc['size_bytes']:>9}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

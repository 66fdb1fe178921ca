"""`python -m quant_core sensitivity MODEL.onnx --data DATA.npz [--formats int8,int4] [--activations]
[--task KIND ...] [--time-budget S] [--json]`.

One row per layer x format (one layer quantized at a time), scored by the task's headline metric
("metric" and "score" in --json; docs/tasks.md). docs/engine.md lists the --json keys.
With --time-budget no config starts after S seconds of sweeping: the rows finished so far are printed
and a line "stopped after N s ..." (on stderr with --json, so the JSON stays a list of rows).
"""
from __future__ import annotations

import argparse
import sys
import time

from quant_core.errors import ConfigError
from quant_core.search.sensitivity import run_sweep
from quant_core.cli.commands.evaluate import add_common_arguments, build_evaluator, dump_json

DEFAULT_FORMATS = "int8,int6,int4,int3,int2"


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help="comma-separated formats (default %(default)s)")
    parser.add_argument("--activations", action="store_true",
                        help="quantize the layer's input activation in the same format too")
    add_time_budget(parser, "sweeping")


def add_time_budget(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--time-budget", type=float, metavar="S",
                        help=f"stop {what} after S seconds and print what was found so far (default: no limit)")


def check_time_budget(seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:  # also refuses nan
        raise ConfigError(f"--time-budget must be a positive number of seconds, got {seconds:g}")


def row_dict(row, with_labels: bool) -> dict:
    """The --json row: accuracy when the labels can be scored, else top-1 agreement with FP32; and the
    task's headline metric ("metric", "score") the sweep ranks by."""
    data = {"layer": row.layer, "format": row.format, "sqnr_db": row.sqnr_db, "cosine": row.cosine,
            "size_bytes": row.size_bytes}
    if with_labels:
        data["accuracy"] = row.accuracy
    else:
        data["agreement"] = row.agreement
    data["metric"], data["score"] = row.metric, row.score
    return data


def run(args: argparse.Namespace) -> int:
    check_time_budget(args.time_budget)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    evaluator = build_evaluator(args, activations=args.activations)
    done = [0.0]  # the sweep's last progress fraction: below 1 when the time budget stopped it
    started = time.perf_counter()
    rows = run_sweep(evaluator, formats, activations=args.activations, time_budget_s=args.time_budget,
                     progress=lambda fraction: done.__setitem__(0, fraction))
    stopped = None
    if args.time_budget is not None and done[0] < 1.0:
        total = round(len(rows) / done[0]) if rows and done[0] > 0 else None
        stopped = (f"stopped after {time.perf_counter() - started:.0f} s (time budget {args.time_budget:g} s): "
                   f"{len(rows)}{'' if total is None else f' of {total}'} rows")
    with_labels = evaluator.fp32_accuracy is not None  # labels that fit the scored output
    documents = [row_dict(row, with_labels) for row in rows]
    if args.json:
        dump_json(documents)
        if stopped:
            sys.stderr.write(stopped + "\n")
        return 0
    metric = rows[0].metric if rows else evaluator.task.headline_name
    width = max([len("layer")] + [len(row.layer) for row in rows])
    fmt_width = max([len("format")] + [len(row.format) for row in rows])
    lines = [f"task: {evaluator.task.describe()}",
             f"{'layer':<{width}}  {'format':<{fmt_width}} {'SQNR dB':>8} {'cosine':>9} {metric:>9} {'bytes':>9}"]
    for doc in documents:
        lines.append(f"{doc['layer']:<{width}}  {doc['format']:<{fmt_width}} {doc['sqnr_db']:>8.2f} {doc['cosine']:>9.5f} "
                     f"{doc['score']:>9.4f} {doc['size_bytes']:>9}")
    if stopped:
        lines.append(stopped)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

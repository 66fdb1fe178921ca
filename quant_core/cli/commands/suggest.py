"""`python -m quant_core suggest MODEL.onnx --data DATA.npz (--max-size-mb X | --min-accuracy Y) [--task KIND ...]
[--time-budget S] [--json]`.

"Accuracy" is the task's headline metric (docs/tasks.md): a classifier's accuracy with labels, else its
top-1 agreement with FP32; 1 − CER for CTC, recall@k for an embedding.

A greedy weight-only mixed-precision search; prints every step. With --time-budget the search stops
after S seconds with the best config found so far that meets the budget (or says none did): "stopped
after N s ..." (the --json key "stopped", null when the search ran to its end). docs/engine.md lists the --json keys.
"""
from __future__ import annotations

import argparse
import sys

from quant_core.errors import ConfigError
from quant_core.search.suggest import DEFAULT_CANDIDATES, suggest_config
from quant_core.cli.commands.evaluate import add_common_arguments, build_engine, dump_json, refuse_range_search
from quant_core.cli.commands.sensitivity import add_time_budget, check_time_budget


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-size-mb", type=float, help="size budget in MB (10^6 bytes) of all weights")
    budget.add_argument("--min-accuracy", type=float,
                        help="lowest value of the task's headline metric (fraction 0..1: accuracy with labels, "
                             "else top-1 agreement with FP32; 1 - CER for CTC, recall@k for an embedding)")
    budget.add_argument("--max-perplexity-increase", type=float, metavar="DELTA",
                        help="a language model's budget in its own unit: perplexity at most FP32's + DELTA "
                             "(e.g. 0.5)")
    parser.add_argument("--formats", default=",".join(DEFAULT_CANDIDATES),
                        help="candidate formats, highest precision first (default %(default)s)")
    add_time_budget(parser, "the search")


def method_spec(report):
    from quant_core.config import MethodSpec
    return MethodSpec(report.name, report.options)


def run(args: argparse.Namespace) -> int:
    check_time_budget(args.time_budget)
    refuse_range_search(args, "suggest")
    max_size = None if args.max_size_mb is None else int(args.max_size_mb * 1e6)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    evaluator, report = build_engine(args)
    min_accuracy = args.min_accuracy
    if args.max_perplexity_increase is not None:
        from quant_core.config import PRESETS
        from quant_core.search.budget import budget_unit
        unit = budget_unit(evaluator.evaluate(PRESETS["FP32"]).score)
        if not unit.is_perplexity:
            raise ConfigError("--max-perplexity-increase needs a language model with next-token labels "
                              "(task language_model); use --min-accuracy for this task")
        min_accuracy = unit.to_headline(args.max_perplexity_increase)
    suggestion = suggest_config(evaluator, max_size_bytes=max_size, min_accuracy=min_accuracy,
                                candidate_formats=formats, time_budget_s=args.time_budget)
    methods = () if report is None else tuple(method_spec(entry) for entry in report.methods)
    suggested = suggestion.config.with_methods(methods)  # the config to export: the same methods first
    if args.json:
        dump_json({**suggestion.to_dict(), "config": suggested.to_dict(),
                   "methods": None if report is None else report.to_dict()})
        return 0
    result = suggestion.result
    budget = f"size <= {max_size} bytes" if max_size is not None else f"{suggestion.metric} >= {min_accuracy:.6g}"
    if args.max_perplexity_increase is not None:
        budget += f" (perplexity at most FP32 + {args.max_perplexity_increase:g})"
    lines = [f"budget {budget}: {'met' if suggestion.met else 'NOT met'}; "
             f"{result.size_bytes} bytes (FP32 {result.fp32_size_bytes}), {suggestion.metric} "
             f"{suggestion.to_dict()['accuracy']:.4f}"]
    for step in suggestion.steps:
        lines.append(f"  {step.step:>2}. {step.action} {step.layer}: {step.from_format} -> {step.to_format}  "
                     f"{step.size_bytes} bytes, {suggestion.metric} {step.accuracy:.4f}  ({step.reason})")
    if suggestion.stopped:
        lines.append(suggestion.stopped)
    if suggestion.chosen:
        lines.append(suggestion.chosen)
    lines.append("Pareto front (bytes, " + suggestion.metric + "): " +
                 ", ".join(f"({p.size_bytes}, {p.accuracy:.4f})" for p in suggestion.pareto))
    lines.append("config:")
    lines += [f"method {line}" for line in ([] if report is None else report.lines())]
    lines.append(suggested.to_json())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0

"""`python -m quant_core evaluate MODEL.onnx --data DATA.npz [--config CONFIG.json] [--task KIND ...] [--json]`.

Calibrates on a seeded split of the data, evaluates the config on the rest (without --config:
the W8A8 preset, per-channel int8 weights and uint8 min-max activations). The task (which output is
scored and by what metric, docs/tasks.md) comes from --task, else the config's "task", else is
inferred from the model's outputs. docs/engine.md lists the --json keys.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from quant_core.engine.calibrate import calibrate, layer_input_tensors
from quant_core.config import PRESETS, QuantConfig
from quant_core.model.data import load_npz, record_state, split_dataset
from quant_core.errors import ConfigError
from quant_core.engine.evaluate import Evaluator
from quant_core.model.layout import parse_state
from quant_core.model.model_io import load_model, prepare_model
from quant_core.engine.tasks import Task, TaskKind, check_task, infer_task, read_config_json


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file")
    parser.add_argument("--data", required=True, help=".npz with one array per model input and optional 'labels'")
    add_state_argument(parser)
    parser.add_argument("--calibration-samples", type=int, default=256,
                        help="samples used to calibrate (at most half the data; default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    add_methods_argument(parser)
    task = parser.add_argument_group("task (default: inferred from the model's outputs; docs/tasks.md)")
    task.add_argument("--task", choices=[kind.value for kind in TaskKind],
                      help="what the scored output is for, which sets the metric")
    task.add_argument("--task-output", metavar="NAME", help="the output to score (default: the first)")
    task.add_argument("--class-axis", type=int, metavar="AXIS",
                      help="class axis (classification, sequence, CTC) or channel axis (detection)")
    task.add_argument("--blank", type=int, help="CTC blank class (default 0; -1: the last class)")
    task.add_argument("--k", type=int, help="neighbours of the embedding recall@k (default 5)")


def add_methods_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", metavar="NAMES",
                        help="accuracy-recovery methods applied in order before quantizing, comma-separated "
                             "(cle, smoothquant, bias_correction, adaround; weight-only: rtn, hqq, gptq, awq; docs/methods.md); options come from the "
                             "config's \"methods\" where it names the method; 'none': none (default: the config's). "
                             "range_search (last) then picks each layer's activation range method in the config")


def methods_from_args(args: argparse.Namespace, config: QuantConfig) -> QuantConfig:
    """`config` with the methods --methods names (each with the config's own options for it), else its own."""
    text = getattr(args, "methods", None)
    if text is None:
        return config
    from quant_core.methods import parse_methods
    own = {spec.name: spec for spec in config.methods}
    text = ",".join(name for name in text.split(",") if name.strip() != RANGE_SEARCH)
    names = () if text.strip() in ("none", "") else parse_methods(text)
    return config.with_methods(own.get(spec.name, spec) for spec in names)


RANGE_SEARCH = "range_search"  # a config rewrite, not a model method: done on the built Evaluator


def wants_range_search(args: argparse.Namespace) -> bool:
    return RANGE_SEARCH in [name.strip() for name in (getattr(args, "methods", None) or "").split(",")]


def refuse_range_search(args: argparse.Namespace, command: str) -> None:
    """sensitivity and suggest choose formats themselves: a range search of one config has no place there."""
    if wants_range_search(args):
        raise ConfigError(f"--methods range_search rewrites one config's activation ranges: use it with evaluate "
                          f"or export, not {command}")


def range_searched(args: argparse.Namespace, evaluator: Evaluator, config: QuantConfig):
    """(config, search or None): with `--methods ...,range_search`, each layer's activation range chosen."""
    if not wants_range_search(args):
        return config, None
    from quant_core.methods.range_search import search_activation_ranges
    search = search_activation_ranges(evaluator, config)
    return search.config, search


def apply_config_methods(prepared, config: QuantConfig, calibration_data):
    """(prepared, report): the model with the config's methods applied (report None without methods)."""
    if not config.methods:
        return prepared, None
    from quant_core.methods import apply_methods
    return apply_methods(prepared, config, calibration_data)


def add_state_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", action="append", metavar="OUTPUT=INPUT",
                        help="a state output fed to an input at the next sample (streaming), e.g. stateN=state; "
                             "repeat or comma-separate; 'none' turns streaming off (default: inferred from names "
                             "and shapes, docs/data.md)")


def load_data(args: argparse.Namespace, prepared):
    """The --data .npz read against the model, with the --state pairs (inferred when absent); state inputs
    the file leaves out are filled with the FP32 model's carried state (`data.record_state`)."""
    return record_state(prepared, load_npz(args.data, prepared.info, state=parse_state(getattr(args, "state", None))))


def task_from_args(args: argparse.Namespace, info, saved: Task | None = None) -> Task:
    """The task the options ask for: --task, else `saved` (a config's "task"), else inferred; then the
    options given (--task-output, --class-axis, --blank, --k) replace the task's own."""
    options = {key: value for key, value in (("output", args.task_output), ("axis", args.class_axis),
                                             ("blank", args.blank), ("k", args.k)) if value is not None}
    if args.task is not None:
        base = Task(args.task)
    elif saved is not None:
        base = saved
    else:
        base = infer_task(info)
    return check_task(Task(**{**base.to_dict(), **options}), info)


def build_evaluator(args: argparse.Namespace, *, activations: bool = True, saved_task: Task | None = None,
                    config: QuantConfig | None = None) -> Evaluator:
    """Load, split, calibrate and build the Evaluator the engine commands share.

    activations=False (a weights-only sweep) skips the calibration pass; the evaluation split is the
    same seeded split either way, so the numbers are too. `config.methods` (with --methods applied by
    the caller) transform the model first, on the calibration split; config-dependent methods (bias
    correction) use `config`'s formats (default: the W8A8 preset's)."""
    return build_engine(args, activations=activations, saved_task=saved_task, config=config)[0]


def build_engine(args: argparse.Namespace, *, activations: bool = True, saved_task: Task | None = None,
                 config: QuantConfig | None = None):
    """`build_evaluator` and the methods' report (None without methods)."""
    prepared = prepare_model(load_model(args.model))
    task = task_from_args(args, prepared.info, saved_task)  # before the data: a bad task is one line at once
    calibration_data, evaluation_data = split_dataset(load_data(args, prepared),
                                                      calibration_samples=args.calibration_samples)
    config = methods_from_args(args, config or PRESETS["W8A8"])
    original = prepared
    prepared, report = apply_config_methods(prepared, config, calibration_data)
    reference = None
    if report is not None:
        from quant_core.methods import changes_fp32
        if changes_fp32(config):  # metrics against the original FP32 model, not the rewritten one
            reference = Evaluator(original, None, evaluation_data, task=task).fp32_outputs
    # The Evaluator quantizes layer inputs only: their histograms are all it needs (the export calibrates more).
    calibration = calibrate(prepared, calibration_data, tensors=layer_input_tensors(prepared)) if activations else None
    return Evaluator(prepared, calibration, evaluation_data, task=task, reference_outputs=reference), report


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


def _load_config(path: str | None) -> tuple[QuantConfig, Task | None]:
    if path is None:
        return PRESETS["W8A8"], None
    try:
        return read_config_json(Path(path).read_bytes())
    except (ValueError, OSError) as err:
        raise ConfigError(f"{path}: {err}") from None


def metric_lines(result, fp32) -> list[str]:
    """One line per task metric ("name  value (FP32 value)"), the headline first, then why labels were not scored."""
    score, reference = result.score, fp32.score
    names = [score.headline] + [name for name, _ in score.metrics if name != score.headline]
    width = max(len(name) for name in names)
    lines = []
    for name in names:
        value, base = score.value(name), reference.value(name)
        shown = "n/a" if value is None else f"{value:.4f}"
        if value is not None and base is not None and name != "SQNR dB":
            shown += f" (FP32 {base:.4f})"
        lines.append(f"  {name:<{width}}  {shown}" + ("   <- headline" if name == score.headline else ""))
    if score.labels_note:
        lines.append(f"  labels not scored: {score.labels_note}")
    return lines


def run(args: argparse.Namespace) -> int:
    config, saved_task = _load_config(args.config)
    config = methods_from_args(args, config)
    evaluator, report = build_engine(args, saved_task=saved_task, config=config)
    config, search = range_searched(args, evaluator, config)
    result, errors = evaluator.evaluate_with_errors(config)  # one pass over the split for both
    fp32 = evaluator.evaluate(PRESETS["FP32"])
    stream = evaluator.streaming()
    streamed = None if stream is None else stream.evaluate(config)
    document = {"config": config.to_dict(), "task": evaluator.task.to_dict(), "fp32_accuracy": fp32.accuracy,
                **result.to_dict(), "layers": [e.to_dict() for e in errors],
                "layout": evaluator.feeder.layout.to_dict(),
                "available_samples": evaluator.available_samples, "sample_note": evaluator.sample_note,
                "streaming": None if streamed is None else streamed.to_dict(),
                "methods": None if report is None else report.to_dict(),
                "range_search": None if search is None else search.to_dict()}
    if args.json:
        dump_json(document)
        return 0
    lines = [f"config {config.name} on {result.sample_count} samples"
             + (f" ({evaluator.sample_note})" if evaluator.sample_note else ""),
             f"task            {evaluator.task.describe()}",
             *(f"data: {line}" for line in evaluator.feeder.layout.describe()),
             *(f"method {line}" for line in ([] if report is None else report.lines())),
             *(f"range search: {layer}: {chosen}" for layer, chosen, _ in (search.rows if search else ()))]
    if streamed is None:
        lines += metric_lines(result, fp32)
    else:  # per frame: each sample fed its recorded state; streaming: the config carries its own state
        lines += ["per frame (each sample fed its recorded state):", *metric_lines(result, fp32),
                  "streaming (each config carries its own state from sample to sample):",
                  *metric_lines(streamed, stream.evaluate(PRESETS["FP32"]))]
    lines.append(f"size            {result.size_bytes} bytes (FP32 {result.fp32_size_bytes}, x{result.compression:.2f})")
    if result.simulated_only:
        lines.append(f"simulated only (no onnxruntime kernel): {', '.join(result.simulated_only)}")
    lines.append("layer SQNR (dB): isolated / accumulated")
    lines += [f"  {e.layer}: {e.isolated_sqnr_db:.2f} / {e.accumulated_sqnr_db:.2f}"
              for e in errors]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


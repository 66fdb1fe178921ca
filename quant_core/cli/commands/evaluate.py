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

from quant_core.engine.calibrate import calibrate
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
    task = parser.add_argument_group("task (default: inferred from the model's outputs; docs/tasks.md)")
    task.add_argument("--task", choices=[kind.value for kind in TaskKind],
                      help="what the scored output is for, which sets the metric")
    task.add_argument("--task-output", metavar="NAME", help="the output to score (default: the first)")
    task.add_argument("--class-axis", type=int, metavar="AXIS",
                      help="class axis (classification, sequence, CTC) or channel axis (detection)")
    task.add_argument("--blank", type=int, help="CTC blank class (default 0; -1: the last class)")
    task.add_argument("--k", type=int, help="neighbours of the embedding recall@k (default 5)")


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


def build_evaluator(args: argparse.Namespace, *, activations: bool = True, saved_task: Task | None = None
                    ) -> Evaluator:
    """Load, split, calibrate and build the Evaluator the engine commands share.

    activations=False (a weights-only sweep) skips the calibration pass; the evaluation split is the
    same seeded split either way, so the numbers are too."""
    prepared = prepare_model(load_model(args.model))
    task = task_from_args(args, prepared.info, saved_task)  # before the data: a bad task is one line at once
    calibration_data, evaluation_data = split_dataset(load_data(args, prepared),
                                                      calibration_samples=args.calibration_samples)
    calibration = calibrate(prepared, calibration_data) if activations else None
    return Evaluator(prepared, calibration, evaluation_data, task=task)


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
    evaluator = build_evaluator(args, saved_task=saved_task)
    result = evaluator.evaluate(config)
    fp32 = evaluator.evaluate(PRESETS["FP32"])
    stream = evaluator.streaming()
    streamed = None if stream is None else stream.evaluate(config)
    document = {"config": config.to_dict(), "task": evaluator.task.to_dict(), "fp32_accuracy": fp32.accuracy,
                **result.to_dict(), "layers": [e.to_dict() for e in evaluator.layer_errors(config)],
                "layout": evaluator.feeder.layout.to_dict(),
                "streaming": None if streamed is None else streamed.to_dict()}
    if args.json:
        dump_json(document)
        return 0
    lines = [f"config {config.name} on {result.sample_count} samples",
             f"task            {evaluator.task.describe()}",
             *(f"data: {line}" for line in evaluator.feeder.layout.describe())]
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
              for e in evaluator.layer_errors(config)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


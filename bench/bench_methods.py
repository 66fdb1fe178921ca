"""Benchmark the accuracy-recovery methods (quant_core/methods, docs/methods.md): each one's effect, side by side.

    .venv/bin/python bench/bench_methods.py [--sections cle,bias,smoothquant,adaround,export] [--minilm] [--json]

On the demo models (the app's split of the held-out digits: 256 to calibrate, 541 to evaluate; one digit
is 0.18 pp) and, with --minilm, the conformance set's sentence embedder (tests/real_models/fetch.py):
1. cle: static INT8 (uint8 min-max activations) per-tensor and per-channel, FP32 / simulated / exported
   accuracy without and with CLE;
2. bias: weight-only int4 / int3 per-channel, accuracy and cosine without and with bias correction;
3. smoothquant: static W8A8 (int8 weights per-tensor / per-channel, uint8 min-max activations) metric vs
   alpha (none, 0.25 ... 1.0) on the demo transformer and MiniLM (cosine, recall@5);
4. adaround: weight-only 4-bit per-channel, round-to-nearest vs AdaRound (accuracy, cosine, time per layer);
5. export: simulated vs exported accuracy of W8A8 per-channel with each method on (the agreement the test
   checks within 0.5 pp);
6. combos: the demo CNN at int4 / int3 weight-only with CLE, then bias correction and / or AdaRound;
7. ranges: static INT8 with each layer's activation range method searched (range_search.py) vs min-max.
Every "before" and "after" is measured in the same run on the same split.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import PRESETS, LayerQuant, MethodSpec, QuantConfig, TensorQuant  # noqa: E402
from quant_core.model.data import split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.export.ort_export import export_model  # noqa: E402
from quant_core.numerics.formats import Granularity, parse_format  # noqa: E402
from quant_core.export.latency import create_session, static_int8_config  # noqa: E402
from quant_core.methods import apply_methods, changes_fp32, parse_methods  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402

DEMOS = ("mlp", "cnn", "transformer")
ALPHAS = (None, 0.25, 0.5, 0.65, 0.8, 1.0)


def demo(name: str):
    model, held = load_demo(name)
    prepared = prepare_model(load_model(model))
    calibration_data, evaluation = split_dataset(held)
    return prepared, calibration_data, evaluation


def minilm():
    from bench.bench_real_models import load_split, model_files
    import tempfile
    return load_split(*model_files("minilm", Path(tempfile.mkdtemp())))


class Case:
    """One model and split; evaluators of the original and of transformed models, built on demand."""

    def __init__(self, prepared, calibration_data, evaluation):
        self.prepared, self.calibration_data, self.evaluation = prepared, calibration_data, evaluation
        self.original = Evaluator(prepared, calibrate(prepared, calibration_data), evaluation)

    def run(self, config: QuantConfig, *, export: bool = False) -> dict:
        """The config (with its methods) simulated, and exported when asked; the methods' time."""
        started = time.perf_counter()
        transformed, report = apply_methods(self.prepared, config, self.calibration_data)
        seconds = time.perf_counter() - started
        if config.methods:
            calibration = calibrate(transformed, self.calibration_data)
            evaluator = Evaluator(transformed, calibration, self.evaluation, reference_outputs=
                                  self.original.fp32_outputs if changes_fp32(config) else None)
        else:
            calibration, evaluator = self.original.calibration, self.original
        result = evaluator.evaluate(config)
        row = {"accuracy": result.accuracy, "cosine": result.cosine, "headline": result.score.headline,
               "score": result.score.value(result.score.headline), "seconds": seconds, "report": report}
        if export:
            exported = export_model(transformed, config, calibration, calibration_data=self.calibration_data)
            logits = create_session(exported.model).run(None, self.evaluation.inputs)[0]
            row["exported"] = float(np.mean(logits.argmax(axis=1) == self.evaluation.labels))
            row["simulated_only"] = exported.simulated_only
        return row


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def weight_only(bits: int) -> QuantConfig:
    return QuantConfig(LayerQuant(TensorQuant(parse_format(f"int{bits}"), granularity=Granularity.PER_CHANNEL)),
                       name=f"W{bits} per-channel weight-only")


def section_cle(cases, out: list) -> list:
    lines = ["## CLE: static INT8, demo CNN (and the others)", "",
             "| model | weights | FP32 % | sim % | export % | sim % CLE | export % CLE | CLE time s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in DEMOS:
        case = cases[name]
        for per_channel in (False, True):
            config = static_int8_config(case.prepared, per_channel=per_channel)
            before = case.run(config, export=True)
            after = case.run(config.with_methods(parse_methods("cle")), export=True)
            out.append({"section": "cle", "model": name, "per_channel": per_channel,
                        "fp32": case.original.fp32_accuracy, "before": before["accuracy"],
                        "before_export": before["exported"], "after": after["accuracy"],
                        "after_export": after["exported"], "seconds": after["seconds"]})
            lines.append(f"| {name} | {'per-channel' if per_channel else 'per-tensor'} | "
                         f"{pct(case.original.fp32_accuracy)} | {pct(before['accuracy'])} | {pct(before['exported'])} | "
                         f"{pct(after['accuracy'])} | {pct(after['exported'])} | {after['seconds']:.3f} |")
    return lines


def section_bias(cases, out: list) -> list:
    lines = ["## Bias correction: weight-only per-channel", "",
             "| model | weights | FP32 % | acc % | acc % corrected | cosine | cosine corrected | time s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in DEMOS:
        case = cases[name]
        for bits in (4, 3):
            config = weight_only(bits)
            before = case.run(config)
            after = case.run(config.with_methods(parse_methods("bias_correction")))
            out.append({"section": "bias", "model": name, "bits": bits, "before": before["accuracy"],
                        "after": after["accuracy"], "cosine_before": before["cosine"],
                        "cosine_after": after["cosine"], "seconds": after["seconds"]})
            lines.append(f"| {name} | int{bits} | {pct(case.original.fp32_accuracy)} | {pct(before['accuracy'])} | "
                         f"{pct(after['accuracy'])} | {before['cosine']:.5f} | {after['cosine']:.5f} | "
                         f"{after['seconds']:.2f} |")
    return lines


def section_smoothquant(cases, out: list) -> list:
    lines = ["## SmoothQuant: static W8A8 (uint8 min-max activations), metric vs alpha", "",
             "| model | weights | alpha | cosine | headline metric | time s |", "|---|---|---:|---:|---:|---:|"]
    for name in [n for n in ("transformer", "minilm") if n in cases]:
        case = cases[name]
        for per_channel in (False, True):
            for alpha in ALPHAS:
                config = static_int8_config(case.prepared, per_channel=per_channel)
                if alpha is not None:
                    config = config.with_methods([MethodSpec("smoothquant", (("alpha", alpha),))])
                row = case.run(config)
                out.append({"section": "smoothquant", "model": name, "per_channel": per_channel, "alpha": alpha,
                            "cosine": row["cosine"], "headline": row["headline"], "score": row["score"],
                            "seconds": row["seconds"]})
                lines.append(f"| {name} | {'per-channel' if per_channel else 'per-tensor'} | "
                             f"{'none' if alpha is None else alpha} | {row['cosine']:.4f} | "
                             f"{row['headline']} {row['score']:.4f} | {row['seconds']:.2f} |")
    return lines


def section_adaround(cases, out: list) -> list:
    lines = ["## AdaRound: weight-only 4-bit per-channel vs round-to-nearest", "",
             "| model | acc % RTN | acc % AdaRound | cosine RTN | cosine AdaRound | layers taken | s per layer |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in [n for n in (*DEMOS, "minilm") if n in cases]:
        case = cases[name]
        config = weight_only(4)
        before = case.run(config)
        spec = MethodSpec("adaround", (("time_budget_s", 120.0 if name == "minilm" else 60.0),))
        after = case.run(config.with_methods([spec]))
        rows = after["report"].methods[0].rows
        taken = sum(1 for row in rows if row[-1] == "yes")
        per_layer = float(np.mean([row[7] for row in rows])) if rows else 0.0
        out.append({"section": "adaround", "model": name, "before": before["accuracy"], "after": after["accuracy"],
                    "cosine_before": before["cosine"], "cosine_after": after["cosine"], "layers": len(rows),
                    "taken": taken, "seconds_per_layer": per_layer, "seconds": after["seconds"]})
        lines.append(f"| {name} | {pct(before['accuracy'])} | {pct(after['accuracy'])} | {before['cosine']:.5f} | "
                     f"{after['cosine']:.5f} | {taken} of {len(rows)} | {per_layer:.2f} |")
    return lines


def section_export(cases, out: list) -> list:
    lines = ["## Simulation = export with each method (W8A8 per-channel)", "",
             "| model | methods | sim % | export % | difference pp |", "|---|---|---:|---:|---:|"]
    for name in DEMOS:
        case = cases[name]
        for methods in ("cle", "smoothquant", "bias_correction", "adaround", "cle,smoothquant,bias_correction"):
            config = static_int8_config(case.prepared, per_channel=True).with_methods(parse_methods(methods))
            row = case.run(config, export=True)
            difference = 100 * (row["exported"] - row["accuracy"])
            out.append({"section": "export", "model": name, "methods": methods, "simulated": row["accuracy"],
                        "exported": row["exported"]})
            lines.append(f"| {name} | {methods} | {pct(row['accuracy'])} | {pct(row['exported'])} | {difference:+.2f} |")
    return lines


def section_combos(cases, out: list) -> list:
    lines = ["## Methods combined: the demo CNN, weight-only per-channel", "",
             "| weights | methods | acc % | cosine | time s |", "|---|---|---:|---:|---:|"]
    case = cases["cnn"]
    for bits in (4, 3):
        for methods in ("", "cle", "cle,bias_correction", "cle,adaround", "cle,adaround,bias_correction"):
            row = case.run(weight_only(bits).with_methods(parse_methods(methods)))
            out.append({"section": "combos", "model": "cnn", "bits": bits, "methods": methods,
                        "accuracy": row["accuracy"], "cosine": row["cosine"], "seconds": row["seconds"]})
            lines.append(f"| int{bits} | {methods or 'none'} | {pct(row['accuracy'])} | {row['cosine']:.5f} | "
                         f"{row['seconds']:.2f} |")
    return lines


def section_ranges(cases, out: list) -> list:
    from quant_core.methods.range_search import search_activation_ranges
    lines = ["## Per-layer activation range search: static INT8 (uint8 activations)", "",
             "| model | weights | acc % min-max | acc % searched | chosen | time s |", "|---|---|---:|---:|---|---:|"]
    for name in DEMOS:
        case = cases[name]
        for per_channel in (False, True):
            config = static_int8_config(case.prepared, per_channel=per_channel)
            started = time.perf_counter()
            search = search_activation_ranges(case.original, config)
            seconds = time.perf_counter() - started
            before, after = case.original.evaluate(config), case.original.evaluate(search.config)
            chosen = ", ".join(sorted({row[1] for row in search.rows}))
            out.append({"section": "ranges", "model": name, "per_channel": per_channel, "before": before.accuracy,
                        "after": after.accuracy, "chosen": [row[1] for row in search.rows], "seconds": seconds})
            lines.append(f"| {name} | {'per-channel' if per_channel else 'per-tensor'} | {pct(before.accuracy)} | "
                         f"{pct(after.accuracy)} | {chosen} | {seconds:.1f} |")
    return lines


SECTIONS = {"cle": section_cle, "bias": section_bias, "smoothquant": section_smoothquant,
            "adaround": section_adaround, "export": section_export, "combos": section_combos,
            "ranges": section_ranges}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--minilm", action="store_true", help="also the conformance set's MiniLM (smoothquant, adaround)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cases = {name: Case(*demo(name)) for name in DEMOS}
    if args.minilm:
        cases["minilm"] = Case(*minilm())
    out: list = []
    lines = []
    for section in args.sections.split(","):
        lines += SECTIONS[section](cases, out) + [""]
        print("\n".join(lines), flush=True) if not args.json else None
        lines = []
    if args.json:
        for row in out:
            row.pop("report", None)
        json.dump(out, sys.stdout, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the lab on the real-model conformance set: speed and memory as ratios to plain onnxruntime.

    .venv/bin/python bench/bench_real_models.py [--models ocr_det,ocr_rec,...] [--demos] [--quick]
                                                [--rounds 3] [--sweep-layers N] [--json] [--profile]

For each model of the conformance set (docs/conformance.md; default: every one that is cached, see
`tests/real_models/fetch.py`) and, with --demos, the demo CNN and transformer, measures in one run and
prints as ratios to a plain FP32 onnxruntime forward of the same split (one intra-op thread, spinning
off, as the engine's sessions; the same batches as the engine):
1. a config seen for the first time (W{b}A8, per-channel: a new bit width each round), then a one-layer
   edit of it (one layer at int4): `Evaluator.evaluate_with_errors` (the Mixed precision page's and the
   command line's call: the result and every layer's isolated and accumulated error), the Evaluator's
   batches on its workers (--workers; default the cores, at most 2) — target <= 3x (also printed: the
   ratio to a plain forward on 2 intra-op threads, onnxruntime's use of both cores);
2. `calibrate` on the calibration split (2,048-bin histograms of every activation tensor, from which
   all four range methods come) vs a forward of that split at calibrate's batch size — target <= 2x;
3. a weights sweep (`run_sweep`, int8,int6,int4,int3,int2) of every layer (--sweep-layers N: N layers
   evenly spread) vs its floor: onnxruntime alone running each config from its layer on, weights
   quantized beforehand (bench_engine.py's `sweep_floor`, over the engine's batches) — target <= 1.5x;
4. the first view after an upload, in a fresh child process: load + prepare the model, load the .npz,
   split, calibrate, Evaluator, evaluate_with_errors of W8A8 (as the Mixed precision page) — target <= 10 s;
5. peak resident memory (VmHWM, in child processes) added by the lab holding the model + evaluator + one
   evaluate with layer errors, vs plain onnxruntime holding the model and one batch — target <= 2x; and
   the lab's again with every sample of the data file duplicated — target: flat (within 10 %).
Rounds are interleaved (each round times the baseline next to the engine); medians. The split is
`quant_core.model.data.split_dataset`'s default (256 calibration samples, at most half the data), as the
command line and the app use; the conformance files hold 24-202 samples, so they split in half.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.model.data import Dataset, load_npz, record_state, split_dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.engine.layer_errors import ErrorGraph  # noqa: E402
from quant_core.model.layout import feeder  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402
from quant_core.search.sensitivity import run_sweep  # noqa: E402
from quant_core.model.runtime import session_options  # noqa: E402
from tests.real_models import fetch  # noqa: E402

REAL_MODELS = ("ocr_det", "ocr_rec", "ocr_cls", "minilm", "yolo_det", "silero_vad")
DEMOS = ("cnn", "transformer")
SWEEP_FORMATS = ("int8", "int6", "int4", "int3", "int2")
NEW_CONFIG_BITS = (8, 7, 6, 5, 3)  # round r evaluates W{bits[r]}A8 for the first time
TARGETS = {"evaluate": 3.0, "edit": 3.0, "calibrate": 2.0, "sweep": 1.5, "first_view": 10.0, "memory": 2.0,
           "memory_doubled": 1.10}


# ---------------------------------------------------------------------------------------------
# models and data
# ---------------------------------------------------------------------------------------------

def model_files(name: str, directory: Path) -> tuple[Path, Path]:
    """(model .onnx, data .npz) of `name`: the conformance cache's, or a demo written out as an upload."""
    if name in DEMOS:
        model_bytes, held_out = load_demo(name)
        model, data = directory / f"{name}.onnx", directory / f"{name}.npz"
        model.write_bytes(model_bytes)
        np.savez(data, labels=held_out.labels, **held_out.inputs)
        return model, data
    model, data = fetch.model_path(name), fetch.data_path(name)
    if not (model.exists() and data.exists()):
        raise SystemExit(f"real model {name!r} is not cached: run .venv/bin/python tests/real_models/fetch.py")
    return model, data


def doubled(data: Path, directory: Path) -> Path:
    """A copy of the .npz with every sample twice (the whole file, then again): twice the samples."""
    target = directory / (data.stem + ".x2.npz")
    with np.load(data, allow_pickle=False) as arrays:
        np.savez(target, **{key: np.concatenate([arrays[key], arrays[key]]) for key in arrays.files})
    return target


def load_split(model: Path, data: Path, times: int = 1):
    """(prepared, calibration split, evaluation split), as the command line reads them; with `times`, every
    sample of a non-stream N times (a split as large as users bring, against the fixed costs)."""
    prepared = prepare_model(load_model(model))
    dataset = record_state(prepared, load_npz(data, prepared.info))
    if times > 1 and not dataset.streaming:
        dataset = dataset.subset(np.repeat(np.arange(dataset.num_samples), times))
    calibration_data, evaluation = split_dataset(dataset)
    return prepared, calibration_data, evaluation


# ---------------------------------------------------------------------------------------------
# the baseline: a plain FP32 onnxruntime forward of a split, in the engine's batches
# ---------------------------------------------------------------------------------------------

class PlainForward:
    """The prepared FP32 model in a plain InferenceSession (one intra-op thread), fed like the engine."""

    def __init__(self, prepared, threads: int = 1):
        self.info = prepared.info
        self.session = ort.InferenceSession(prepared.model.SerializeToString(), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def batches(self, data: Dataset, batch_size: int):
        return list(feeder(data, self.info, self.input_names, (), batch_size).batches())

    def __call__(self, batches) -> list:
        return [self.session.run(None, feed) for feed in batches]


def seconds(function) -> float:
    gc.collect()
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


class RunCounter:
    """Counts the batch runs of the simulation session and of the per-layer error sessions, and the seconds
    the passes made of them took (wall clock of each pass: with two workers, batches overlap)."""

    def __init__(self, evaluator: Evaluator):
        self.runs, self.error_runs, self.seconds = 0, 0, 0.0
        simulation_runner, error_runner = evaluator.session.runner, ErrorGraph.runner

        def counted(runner, field):
            def make(*args, **kwargs):
                run = runner(*args, **kwargs)

                def counted_run(batch):
                    setattr(self, field, getattr(self, field) + 1)
                    return run(batch)
                return counted_run
            return make

        evaluator.session.runner = counted(simulation_runner, "runs")
        ErrorGraph.runner = lambda graph, *a, **k: counted(error_runner, "error_runs")(graph, *a, **k)

    def reset(self) -> None:
        self.runs, self.error_runs = 0, 0


# ---------------------------------------------------------------------------------------------
# 1. a new config and a one-layer edit, with per-layer errors
# ---------------------------------------------------------------------------------------------

def new_config(bits: int) -> QuantConfig:
    w8a8 = PRESETS["W8A8"]
    return QuantConfig(LayerQuant(TensorQuant(f"int{bits}", granularity="per_channel"), w8a8.default.activations),
                       name=f"W{bits}A8")


def bench_evaluate(prepared, calibration, evaluation: Dataset, rounds: int, workers: int | None = None) -> dict:
    plain, plain2 = PlainForward(prepared), PlainForward(prepared, threads=2)
    evaluator = Evaluator(prepared, calibration, evaluation, workers=workers)  # one per model, as the app pins it
    batches = plain.batches(evaluation, evaluator.batch_size)
    plain(batches)  # warm-up: the first run of a session pays onnxruntime's allocations
    plain2(batches)
    counter = RunCounter(evaluator)
    weighted = [layer for layer in evaluator.layers if layer in evaluator.session.fp32_weights]
    rows = {key: [] for key in ("fp32", "fp32_2t", "new", "edit")}
    runs = {key: [] for key in ("new_runs", "new_error_runs", "edit_runs", "edit_error_runs")}

    def measure(config: QuantConfig, prefix: str) -> None:
        """A plain forward (1 and 2 threads), then `evaluate_with_errors(config)` (what the Mixed precision page
        and the command line do), with the batch runs it made of each session."""
        rows["fp32"].append(seconds(lambda: plain(batches)))
        rows["fp32_2t"].append(seconds(lambda: plain2(batches)))
        counter.reset()
        rows[prefix].append(seconds(lambda: evaluator.evaluate_with_errors(config)))
        runs[f"{prefix}_runs"].append(counter.runs)
        runs[f"{prefix}_error_runs"].append(counter.error_runs)

    for r in range(rounds):
        config = new_config(NEW_CONFIG_BITS[r % len(NEW_CONFIG_BITS)])
        measure(config, "new")
        layer = weighted[(r * 7919 + len(weighted) // 2) % len(weighted)]  # a different layer each round
        edit = QuantConfig(config.default, ((layer, LayerQuant(TensorQuant("int4", granularity="per_channel"),
                                                               config.default.activations)),), name="edit")
        measure(edit, "edit")
    found = {key: statistics.median(values) for key, values in {**rows, **runs}.items()}
    found["workers"] = evaluator.workers
    found["layers"], found["batches"] = len(evaluator.layers), len(batches)
    found["samples"] = evaluator.sample_count
    return found


# ---------------------------------------------------------------------------------------------
# 2. calibration
# ---------------------------------------------------------------------------------------------

def bench_calibrate(prepared, calibration_data: Dataset, rounds: int) -> dict:
    plain = PlainForward(prepared)
    batches = plain.batches(calibration_data, 64)  # calibrate's batch size
    plain(batches)
    fp32, engine, ranges = [], [], []
    for _ in range(rounds):
        fp32.append(seconds(lambda: plain(batches)))
        start = time.perf_counter()
        calibration = calibrate(prepared, calibration_data)
        engine.append(time.perf_counter() - start)
        ranges.append(seconds(lambda: all_ranges(calibration)))
    return {"fp32": statistics.median(fp32), "engine": statistics.median(engine), "ranges": statistics.median(ranges),
            "tensors": len(calibration.tensors), "samples": calibration_data.num_samples}


def all_ranges(calibration) -> None:
    """Every tensor's range by every method (the app computes them on demand, not in calibrate)."""
    from quant_core.numerics.formats import RangeMethod
    for method in RangeMethod:
        tq = TensorQuant("uint8", symmetric=False, range_method=method)
        for tensor in calibration.tensors:
            calibration.range_for(tensor, tq)


# ---------------------------------------------------------------------------------------------
# 3. weights sweep vs its floor
# ---------------------------------------------------------------------------------------------

def sweep_layers(evaluator: Evaluator, cap: int | None) -> list[str]:
    weighted = [layer for layer in evaluator.layers if layer in evaluator.session.fp32_weights]
    if cap is None or cap >= len(weighted):
        return weighted
    return [weighted[i] for i in np.linspace(0, len(weighted) - 1, cap).round().astype(int)]


def sweep_floor(evaluator: Evaluator, layers: list[str]) -> float:
    """Seconds per format of the least an exact sweep must run (bench_engine.py's `sweep_floor`, over the
    engine's batches): per layer, the faster of a whole simulation run and the model from that layer on
    (FP32 activations before it captured, the weight quantized beforehand, no Python). Medians of 3."""
    cuts = evaluator.suffix_runs.cut_values()
    batches = list(evaluator.feeder.batches())
    total = 0.0
    for layer in layers:
        weight = evaluator.quantized_weight(layer, TensorQuant("int4", granularity="per_channel"))
        full = statistics.median(seconds(lambda: [evaluator.session.run(b, weights={layer: weight}) for b in batches])
                                 for _ in range(3))
        suffix = evaluator.session.suffix(layer) if cuts else None
        if suffix is not None:
            suffix.run(cuts[0], weight)  # warm-up
            full = min(full, statistics.median(seconds(lambda: [suffix.run(v, weight) for v in cuts]) for _ in range(3)))
        total += full
    return total


def bench_sweep(prepared, evaluation: Dataset, cap: int | None, rounds: int) -> dict:
    engine, floors = [], []
    for _ in range(rounds):
        evaluator = Evaluator(prepared, None, evaluation)  # built untimed; new each round: nothing cached
        layers = sweep_layers(evaluator, cap)
        engine.append(seconds(lambda: run_sweep(evaluator, SWEEP_FORMATS, layers=layers)))
        floors.append(sweep_floor(evaluator, layers) * len(SWEEP_FORMATS))
    suffixes = sum(bool(evaluator.suffix_runs.ready(layer)) for layer in layers)
    return {"engine": statistics.median(engine), "floor": statistics.median(floors), "layers": len(layers),
            "weighted": len([l for l in evaluator.layers if l in evaluator.session.fp32_weights]),
            "suffixes": suffixes, "configs": len(layers) * len(SWEEP_FORMATS)}


# ---------------------------------------------------------------------------------------------
# 4 + 5. first view and peak memory, in child processes
# ---------------------------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current VmRSS


def lab_child(model: str, data: str) -> dict:
    """From nothing to what the Mixed precision page shows: seconds and peak extra RSS (bytes) per stage."""
    gc.collect()
    _reset_peak()
    base = _status_kib("VmRSS")
    stages, peaks, held = {}, {}, {}

    def stage(name, function):
        _reset_peak()
        start = time.perf_counter()
        value = function()
        stages[name] = time.perf_counter() - start
        peaks[name] = (_status_kib("VmHWM") - base) * 1024
        return value

    prepared = stage("load + prepare model", lambda: prepare_model(load_model(model)))
    dataset = stage("load .npz", lambda: record_state(prepared, load_npz(data, prepared.info)))
    calibration_data, evaluation = stage("split", lambda: split_dataset(dataset))
    calibration = stage("calibrate", lambda: calibrate(prepared, calibration_data))
    evaluator = stage("Evaluator", lambda: Evaluator(prepared, calibration, evaluation))
    held["result"] = stage("evaluate_with_errors W8A8", lambda: evaluator.evaluate_with_errors(PRESETS["W8A8"]))
    gc.collect()
    return {"seconds": stages, "peaks": peaks, "peak": max(peaks.values()),
            "held": (_status_kib("VmRSS") - base) * 1024, "samples": dataset.num_samples}


def plain_child(model: str, data: str) -> dict:
    """Plain onnxruntime holding the model and one batch of the evaluation split (the engine's first)."""
    prepared, _, evaluation = load_split(Path(model), Path(data))  # untimed, unmeasured: what is fed
    model_bytes = Path(model).read_bytes()
    batch = next(iter(feeder(evaluation, prepared.info, [i.name for i in prepared.info.inputs], (), 1024).batches()))
    batch = {name: np.array(value) for name, value in batch.items()}
    del prepared, evaluation
    gc.collect()
    _reset_peak()
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    session = ort.InferenceSession(model_bytes, session_options(1), providers=["CPUExecutionProvider"])
    outputs = session.run(None, batch)
    seconds_taken = time.perf_counter() - start
    peak = (_status_kib("VmHWM") - base) * 1024
    del outputs
    return {"peak": peak, "seconds": seconds_taken}


def child(which: str, model: Path, data: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", which, str(model), str(data)],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"child {which} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_children(model: Path, data: Path, directory: Path, rounds: int) -> dict:
    twice = doubled(data, directory)
    plain, lab, lab2 = [], [], []
    for _ in range(rounds):
        plain.append(child("plain", model, data))
        lab.append(child("lab", model, data))
        lab2.append(child("lab", model, twice))
    median_lab = sorted(lab, key=lambda c: sum(c["seconds"].values()))[len(lab) // 2]
    return {"plain_peak": statistics.median(c["peak"] for c in plain),
            "lab_peak": statistics.median(c["peak"] for c in lab),
            "lab2_peak": statistics.median(c["peak"] for c in lab2),
            "first_view": statistics.median(sum(c["seconds"].values()) for c in lab),
            "stages": median_lab["seconds"], "stage_peaks": median_lab["peaks"],
            "stage_peaks2": lab2[0]["peaks"], "samples": lab[0]["samples"], "samples2": lab2[0]["samples"]}


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def row(label: str, measured: float, baseline: float | None, ratio: float, target: float, unit: str) -> dict:
    return {"label": label, "measured": measured, "baseline": baseline, "ratio": ratio, "target": target,
            "unit": unit, "met": bool(ratio <= target)}


def bench_model(name: str, args, directory: Path) -> dict:
    model, data = model_files(name, directory)
    prepared, calibration_data, evaluation = load_split(model, data, args.times)
    calibration = calibrate(prepared, calibration_data)
    sections = set(args.sections.split(","))
    found = {"model": name, "layers": len(prepared.info.layers), "calibration_samples": calibration_data.num_samples,
             "evaluation_samples": evaluation.num_samples, "rows": [], "details": {}}
    rows, details = found["rows"], found["details"]
    if "evaluate" in sections:
        e = details["evaluate"] = bench_evaluate(prepared, calibration, evaluation, args.rounds, args.workers)
        rows.append(row("1. new config: evaluate_with_errors", e["new"], e["fp32"], e["new"] / e["fp32"],
                        TARGETS["evaluate"], "s"))
        rows.append(row("1. one-layer edit: evaluate_with_errors", e["edit"], e["fp32"], e["edit"] / e["fp32"],
                        TARGETS["edit"], "s"))
    if "calibrate" in sections:
        c = details["calibrate"] = bench_calibrate(prepared, calibration_data, args.rounds)
        rows.append(row("2. calibrate (histograms of every tensor)", c["engine"], c["fp32"], c["engine"] / c["fp32"],
                        TARGETS["calibrate"], "s"))
    if "sweep" in sections:
        s = details["sweep"] = bench_sweep(prepared, evaluation, args.sweep_layers, args.sweep_rounds)
        rows.append(row(f"3. weights sweep {s['layers']} layers x 5 vs floor", s["engine"], s["floor"],
                        s["engine"] / s["floor"], TARGETS["sweep"], "s"))
    if "children" in sections:
        m = details["children"] = bench_children(model, data, directory, args.child_rounds)
        rows.append(row("4. first view after upload (absolute)", m["first_view"], None, m["first_view"],
                        TARGETS["first_view"], "s"))
        rows.append(row("5. peak extra RSS: lab vs plain ort + 1 batch", m["lab_peak"], m["plain_peak"],
                        m["lab_peak"] / m["plain_peak"], TARGETS["memory"], "B"))
        rows.append(row(f"5. peak extra RSS, samples x2 ({m['samples2']}) vs x1", m["lab2_peak"], m["lab_peak"],
                        m["lab2_peak"] / m["lab_peak"], TARGETS["memory_doubled"], "B"))
    if args.profile:
        found["profile"] = profile(prepared, calibration_data, calibration, evaluation)
    return found


def profile(prepared, calibration_data, calibration, evaluation, top: int = 14) -> str:
    """cProfile of calibrate and of a first-time evaluate + layer_errors (cumulative time, top entries)."""
    out = io.StringIO()
    for label, function in (("calibrate", lambda: calibrate(prepared, calibration_data)),
                            ("Evaluator + evaluate_with_errors of W8A8", lambda: _first(prepared, calibration,
                                                                                            evaluation))):
        profiler = cProfile.Profile()
        profiler.enable()
        function()
        profiler.disable()
        out.write(f"--- {label}\n")
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def _first(prepared, calibration, evaluation) -> None:
    evaluator = Evaluator(prepared, calibration, evaluation)
    evaluator.evaluate_with_errors(PRESETS["W8A8"])


def _amount(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f} MiB" if unit == "B" else f"{value:.3f} s"


def print_model(found: dict) -> None:
    print(f"\n=== {found['model']}: {found['layers']} layers, {found['calibration_samples']} calibration / "
          f"{found['evaluation_samples']} evaluation samples; onnxruntime {ort.__version__}, 1 intra-op thread")
    print(f"   {'measure':48s} {'lab':>11s} {'baseline':>11s} {'ratio':>7s} {'target':>7s}  status")
    for r in found["rows"]:
        ratio = f"{r['ratio']:.2f} s" if r["baseline"] is None else f"{r['ratio']:.2f}x"
        target = f"{r['target']:.0f} s" if r["baseline"] is None else f"{r['target']:.2f}x"
        print(f"   {r['label']:48s} {_amount(r['measured'], r['unit']):>11s} {_amount(r['baseline'], r['unit']):>11s} "
              f"{ratio:>7s} {target:>7s}  {'met' if r['met'] else 'NOT MET'}")
    d = found["details"]
    if "evaluate" in d:
        e = d["evaluate"]
        print(f"   1. evaluate_with_errors on {e.get('workers', 1)} worker(s): new config {e['new']:.3f} s "
              f"({e['new_runs']:.0f} simulation + {e['new_error_runs']:.0f} error-session batch runs), edit "
              f"{e['edit']:.3f} s ({e['edit_runs']:.0f} + {e['edit_error_runs']:.0f}); {e['layers']} layers, "
              f"{e['batches']} evaluation batch(es); FP32 forward {e['fp32'] * 1e3:.1f} ms on 1 thread, "
              f"{e.get('fp32_2t', float('nan')) * 1e3:.1f} ms on 2 (ratio to it: new "
              f"{e['new'] / e.get('fp32_2t', float('nan')):.2f}x, edit {e['edit'] / e.get('fp32_2t', float('nan')):.2f}x)")
    if "calibrate" in d:
        c = d["calibrate"]
        print(f"   2. calibrate: {c['tensors']} tensors, {c['samples']} samples; all four ranges of every tensor "
              f"afterwards (on demand in the app) {c['ranges']:.3f} s")
    if "sweep" in d:
        s = d["sweep"]
        print(f"   3. sweep: {s['configs']} configs over {s['layers']} of {s['weighted']} weighted layers; "
              f"{s['suffixes']} ran from their layer on")
    if "children" in d:
        m = d["children"]
        print("   4. first view, per stage: " + ", ".join(f"{k} {v:.2f} s" for k, v in m["stages"].items()))
        print("   5. peak extra RSS per stage (x1): " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in
                                                          m["stage_peaks"].items()) + " MiB")
        print("      per stage, samples x2:      " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in
                                                          m["stage_peaks2"].items()) + " MiB")
    if "profile" in found:
        print(found["profile"])


def render(report: dict) -> None:
    """Print a --json report as the tables a run prints."""
    print(f"{report['started']}; load average before: {' '.join(f'{v:.2f}' for v in report['load_before'])}")
    print(f"command: {report['command']}")
    for found in report["models"]:
        print_model(found)
        print(f"   load average: {' '.join(f'{v:.2f}' for v in found['load'])}")
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in report['load_after'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated: {', '.join(REAL_MODELS)}, {', '.join(DEMOS)} "
                                         "(default: every cached real model)")
    parser.add_argument("--demos", action="store_true", help="add the demo CNN and transformer")
    parser.add_argument("--quick", action="store_true",
                        help="one round each, sweep of 4 layers: a few minutes for the whole set")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of evaluate and calibrate")
    parser.add_argument("--sweep-rounds", type=int, default=1, help="sweeps, each with a new Evaluator")
    parser.add_argument("--workers", type=int, default=None,
                        help="the Evaluator's workers (default: the cores, at most 2; 1: one batch at a time)")
    parser.add_argument("--child-rounds", type=int, default=2, help="first-view / memory child processes of each kind")
    parser.add_argument("--times", type=int, default=1,
                        help="every sample N times (not the stream; evaluate, calibrate and sweep sections)")
    parser.add_argument("--sweep-layers", type=int, help="sweep only N layers, evenly spread (default: all)")
    parser.add_argument("--sections", default="evaluate,calibrate,sweep,children",
                        help="comma-separated: evaluate, calibrate, sweep, children (first view + memory)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of calibrate and of the first view")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    parser.add_argument("--render", metavar="FILE", help="print the tables of a --json output saved in FILE")
    parser.add_argument("--child", nargs=3, metavar=("WHICH", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        which, model, data = args.child
        print(json.dumps((lab_child if which == "lab" else plain_child)(model, data)))
        return 0
    if args.render:
        render(json.loads(Path(args.render).read_text()))
        return 0
    if args.quick:
        args.rounds, args.child_rounds = 1, 1
        args.sweep_layers = args.sweep_layers or 4
    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = [n for n in REAL_MODELS if fetch.model_path(n).exists() and fetch.data_path(n).exists()]
    names += [n for n in DEMOS if args.demos and n not in names]
    unknown = [n for n in names if n not in REAL_MODELS + DEMOS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {', '.join(REAL_MODELS + DEMOS)}")
    report = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
              "load_before": os.getloadavg(), "onnxruntime": ort.__version__, "models": []}
    if not args.json:
        print(f"{report['started']}; load average before: {' '.join(f'{v:.2f}' for v in report['load_before'])}")
    with tempfile.TemporaryDirectory() as directory:
        for name in names:
            found = bench_model(name, args, Path(directory))
            found["load"] = os.getloadavg()
            report["models"].append(found)
            if not args.json:
                print_model(found)
                print(f"   load average: {' '.join(f'{v:.2f}' for v in found['load'])}", flush=True)
    report["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(report, indent=1, default=float))
    else:
        print(f"\nload average after: {' '.join(f'{v:.2f}' for v in report['load_after'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

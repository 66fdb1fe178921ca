"""Peak memory of the lab on real models, each case in a fresh process: vs plain onnxruntime, and as samples grow.

    .venv/bin/python bench/bench_memory.py [--models yolo_det,ocr_rec,minilm] [--times 1,2,4] [--rounds 1]
                                           [--sweep] [--code DIR]

Issue 12's memory target: the peak RSS of the app serving one user on a model is at most 2x what plain
onnxruntime needs to hold the model and one batch, and flat (within 10 %) when the number of samples
doubles. Each case runs in its own child process and reports its VmHWM (the process's peak resident set,
/proc/self/status; not ru_maxrss, which Linux carries from the parent across exec) and its resident set after the imports, so both the whole peak and
the peak above the imports are printed:

- plain: imports what the lab imports (numpy, onnx, onnxruntime, quant_core), then holds an
  `InferenceSession` of the model file and its outputs on one batch of the data (as many samples as the
  lab's evaluation batch, which the lab child reports; and, apart, the whole evaluation split);
- lab xN: what the Mixed precision page does after an upload (docs/benchmarks/real_models.md, section 4):
  load + prepare the model, load the .npz, split, calibrate, Evaluator, evaluate W8A8, layer_errors W8A8;
  on the data file as it is (x1) and with every sample repeated N times (xN: N times the samples in both
  splits). With --sweep also a weights sweep of 2 layers x int8/int4 (suffix runs capture activations).

Ratios are of the median over --rounds. `--code DIR` runs the children on another checkout (e.g. a
worktree of an older commit) to measure before / after side by side in one run.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MODELS = ("yolo_det", "ocr_rec", "minilm")
TARGET_PLAIN, TARGET_FLAT = 2.0, 1.10


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current VmRSS (per-stage peaks)


def _imports():
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    from quant_core.config import PRESETS
    from quant_core.engine.calibrate import calibrate
    from quant_core.engine.evaluate import Evaluator
    from quant_core.model.data import load_npz, record_state, split_dataset
    from quant_core.model.model_io import load_model, prepare_model
    from quant_core.search.sensitivity import run_sweep
    return PRESETS, calibrate, Evaluator, load_npz, record_state, split_dataset, load_model, prepare_model, run_sweep


def lab_child(model: str, data: str, sweep: bool) -> dict:
    """The first view of the Mixed precision page (and a small sweep): peak RSS, per-stage peaks, batches."""
    PRESETS, calibrate, Evaluator, load_npz, record_state, split_dataset, load_model, prepare_model, run_sweep = \
        _imports()
    gc.collect()
    after_imports = _rss_kib()
    # The compiled counting loop (numba + LLVM), which the first calibration of a server process loads once for
    # every user: loaded here first to know its share of the peak (it is in the lab's peak either way).
    from quant_core.numerics import histogram_kernel
    histogram_kernel.load()
    gc.collect()
    kernel_bytes = (_rss_kib() - after_imports) * 1024
    stages, peaks = {}, {}

    def stage(name, function):
        _reset_peak()
        started = time.perf_counter()
        value = function()
        stages[name] = time.perf_counter() - started
        peaks[name] = _rss_kib("VmHWM") * 1024
        return value

    prepared = stage("prepare", lambda: prepare_model(load_model(model)))
    dataset = stage("load .npz", lambda: record_state(prepared, load_npz(data, prepared.info)))
    calibration_data, evaluation = stage("split", lambda: split_dataset(dataset))
    calibration = stage("calibrate", lambda: calibrate(prepared, calibration_data))
    evaluator = stage("Evaluator", lambda: Evaluator(prepared, calibration, evaluation))
    held = [stage("evaluate", lambda: evaluator.evaluate(PRESETS["W8A8"])),
            stage("layer_errors", lambda: evaluator.layer_errors(PRESETS["W8A8"]))]
    if sweep:
        weighted = [layer for layer in evaluator.layers if evaluator.session.fp32_weights.get(layer) is not None]
        picked = [weighted[len(weighted) // 3], weighted[2 * len(weighted) // 3]]
        held.append(stage("sweep", lambda: run_sweep(evaluator, ["int8", "int4"], layers=picked)))
    rows = min(getattr(evaluator, "batch_size", evaluator.sample_count), evaluator.sample_count)
    # The user's data, held whole and as its two splits: it grows with the samples by nature.
    data_bytes = held_bytes(dataset, calibration_data, evaluation)
    # VmHWM is this process's high-water mark, which each stage's reset lowered: the peak is the largest stage's.
    # (Not ru_maxrss: Linux carries it across exec, so a child would report its parent's peak at the fork.)
    maxrss = max(peaks.values())
    return {"maxrss": maxrss, "imports": after_imports * 1024,
            "stages": stages, "peaks": peaks, "samples": dataset.num_samples,
            "evaluation_samples": evaluator.sample_count, "rows": rows, "data_bytes": data_bytes,
            # the FP32 model outputs on the evaluation split, which every config is scored against: they
            # grow with the samples by nature, and evaluate holds a config's outputs beside them
            "outputs_bytes": sum(output.nbytes for output in evaluator.fp32_outputs),
            "sample_bytes": getattr(calibration, "sample_bytes", None), "kernel_bytes": kernel_bytes}


def held_bytes(*datasets) -> int:
    """Bytes of the sample arrays the datasets hold, each buffer counted once (a view or a split that picks
    samples of another's arrays adds nothing), read without gathering any split's samples."""
    import numpy as np
    buffers = {}
    for part in datasets:
        inputs = part.inputs
        for array in getattr(inputs, "arrays", inputs).values():  # a Rows (a split): the arrays it picks from
            while isinstance(array.base, np.ndarray):
                array = array.base
            buffers[id(array)] = array
    return sum(array.nbytes for array in buffers.values())


def plain_child(model: str, data: str, rows: int, arena: bool = True) -> dict:
    """Plain onnxruntime holding the model and its outputs on `rows` samples (the first of the file); with
    `arena=False`, without memory arena nor memory pattern, as the engine's sessions run (the floor)."""
    _imports()
    import numpy as np
    import onnxruntime as ort

    from quant_core.model.runtime import session_options
    gc.collect()
    after_imports = _rss_kib()
    options = session_options(1)
    if not arena:  # what the lab's engine sessions do (`runtime.free_after_run`), written out for older checkouts
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    session = ort.InferenceSession(Path(model).read_bytes(), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    with np.load(data, allow_pickle=False) as arrays:
        batch = {name: np.array(arrays[name][:rows]) for name in names}
    started = time.perf_counter()
    outputs = session.run(None, batch)
    seconds = time.perf_counter() - started
    del outputs
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec (the parent's RSS at the fork), VmHWM is this
    # process's own (a parent holding a large repeated .npz made every plain child report its 297 MiB).
    return {"maxrss": _rss_kib("VmHWM") * 1024, "imports": after_imports * 1024, "rows": rows, "seconds": seconds}


def child(args: list[str], code: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code))
    done = subprocess.run([sys.executable, __file__, "--child", *args, "--code", str(code)], capture_output=True,
                          text=True, cwd=code, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def repeated(data: Path, times: int, directory: Path) -> Path:
    """A copy of the .npz with every sample `times` times (the whole file, again and again)."""
    import numpy as np
    if times == 1:
        return data
    target = directory / f"{data.stem}.x{times}.npz"
    with np.load(data, allow_pickle=False) as arrays:
        np.savez(target, **{key: np.concatenate([arrays[key]] * times) for key in arrays.files})
    return target


def _median(found: list[dict], key: str) -> float:
    return statistics.median(f[key] for f in found)


def bench_model(name: str, args, directory: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.real_models import fetch
    model, data = fetch.model_path(name), fetch.data_path(name)
    if not (model.exists() and data.exists()):
        raise SystemExit(f"real model {name!r} is not cached: run .venv/bin/python tests/real_models/fetch.py")
    report = {"model": name, "lab": {}}
    for times in args.times:
        file = repeated(data, times, directory)
        report["lab"][times] = [child(["lab", str(model), str(file), str(int(args.sweep))], args.code)
                                for _ in range(args.rounds)]
    first = report["lab"][args.times[0]][0]
    report["plain"] = [child(["plain", str(model), str(data), str(first["rows"])], args.code)
                       for _ in range(args.rounds)]
    report["plain_split"] = [child(["plain", str(model), str(data), str(first["evaluation_samples"])], args.code)
                             for _ in range(args.rounds)]
    report["plain_lean"] = [child(["plain-lean", str(model), str(data), str(first["rows"])], args.code)
                            for _ in range(args.rounds)]
    return report


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f}"


def print_model(found: dict, times: list[int]) -> None:
    plain, split = found["plain"], found["plain_split"]
    lab = found["lab"]
    base = lab[times[0]]
    print(f"\n=== {found['model']}: evaluation batch {base[0]['rows']} of {base[0]['evaluation_samples']} samples "
          f"(one sample's activations {mib(base[0]['sample_bytes'] or 0)} MiB)")
    print(f"   {'case':46}{'peak RSS':>10}{'above imports':>15}{'ratio':>8}{'target':>8}  status   (MiB)")
    plain_peak, plain_extra = _median(plain, "maxrss"), _median(plain, "maxrss") - _median(plain, "imports")
    print(f"   {'plain onnxruntime: model + one batch (%d)' % plain[0]['rows']:46}{mib(plain_peak):>10}"
          f"{mib(plain_extra):>15}")
    print(f"   {'plain onnxruntime: model + whole split (%d)' % split[0]['rows']:46}{mib(_median(split, 'maxrss')):>10}"
          f"{mib(_median(split, 'maxrss') - _median(split, 'imports')):>15}")
    lean = found["plain_lean"]
    print(f"   {'plain, no arena / memory pattern: one batch (%d)' % lean[0]['rows']:46}"
          f"{mib(_median(lean, 'maxrss')):>10}{mib(_median(lean, 'maxrss') - _median(lean, 'imports')):>15}")
    lab_peak = _median(base, "maxrss")
    for n in times:
        peak, extra = _median(lab[n], "maxrss"), _median(lab[n], "maxrss") - _median(lab[n], "imports")
        label = f"lab x{n} ({lab[n][0]['samples']} samples, batch {lab[n][0]['rows']})"
        if n == times[0]:
            ratio, target = peak / plain_peak, TARGET_PLAIN
            split_peak = _median(split, "maxrss")
            split_extra = split_peak - _median(split, "imports")
            print(f"   {label:46}{mib(peak):>10}{mib(extra):>15}{ratio:8.2f}{target:8.2f}  "
                  f"{'met' if ratio <= target else 'NOT MET'}  (vs plain + one batch; above imports "
                  f"{extra / plain_extra:.2f}x; vs plain + whole split {peak / split_peak:.2f}x, above imports "
                  f"{extra / split_extra:.2f}x)")
        else:
            ratio = peak / lab_peak
            target = TARGET_FLAT ** (1 if n == 2 else 2 if n == 4 else 1)
            print(f"   {label:46}{mib(peak):>10}{mib(extra):>15}{ratio:8.2f}{target:8.2f}  "
                  f"{'met' if ratio <= target else 'NOT MET'}  (vs lab x{times[0]})")
    kernel = _median(base, "kernel_bytes") if "kernel_bytes" in base[0] else 0
    if kernel:
        print(f"   of which the compiled counting loop (numba + LLVM, loaded once per server process for every user): "
              f"{mib(kernel)} MiB; without it x{times[0]} is {(lab_peak - kernel) / plain_peak:.2f}x plain + one batch, "
              f"{(lab_peak - kernel) / _median(split, 'maxrss'):.2f}x plain + whole split")
    engine = {n: _median(lab[n], "maxrss") - _median(lab[n], "imports") - lab[n][0].get("data_bytes", 0) for n in times}
    print("   above imports and the data held (the .npz and its two splits, each buffer once: "
          + ", ".join(f"x{n} {mib(lab[n][0].get('data_bytes', 0))}" for n in times) + " MiB): "
          + ", ".join(f"x{n} {mib(engine[n])} MiB ({engine[n] / engine[times[0]]:.2f}x)" for n in times))
    outputs = {n: 2 * lab[n][0].get("outputs_bytes", 0) for n in times}
    rest = {n: engine[n] - outputs[n] for n in times}
    print("   ... and the model outputs (the FP32 reference and a config's, each the evaluation split's: "
          + ", ".join(f"x{n} {mib(outputs[n])}" for n in times) + " MiB): "
          + ", ".join(f"x{n} {mib(rest[n])} MiB ({rest[n] / rest[times[0]]:.2f}x)" for n in times))
    for n in times:
        stage_peaks = lab[n][0]["peaks"]
        print(f"   x{n} peak RSS per stage: " + ", ".join(f"{k} {mib(v)}" for k, v in stage_peaks.items())
              + "; seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in lab[n][0]["stages"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--times", default="1,2", help="sample multiples of the data file (first: the reference)")
    parser.add_argument("--rounds", type=int, default=1, help="children of each kind (medians)")
    parser.add_argument("--sweep", action="store_true", help="the lab also sweeps 2 layers x int8/int4")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose quant_core the children run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(args.code))
        which, model, data, extra = args.child
        found = lab_child(model, data, bool(int(extra))) if which == "lab" else \
            plain_child(model, data, int(extra), arena=which == "plain")
        print(json.dumps(found))
        return 0
    args.code = args.code.resolve()
    args.times = [int(t) for t in args.times.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{started}; code {args.code}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{' '.join(sys.argv[1:])}")
    reports = []
    with tempfile.TemporaryDirectory() as directory:
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            found = bench_model(name, args, Path(directory))
            reports.append(found)
            if args.json:
                continue
            print_model(found, args.times)
            print(f"   load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    if args.json:
        print(json.dumps({"started": started, "code": str(args.code), "models": reports}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibrate vs a plain FP32 forward of the same batches: layer inputs first or every tensor, counting variants.

    .venv/bin/python bench/bench_calibrate_parallel.py [--models ocr_rec,yolo_det,minilm,ocr_det,ocr_cls,cnn,transformer]
                                                       [--rounds 3] [--variants] [--times N]

Issue 12's target: calibrate (all four range methods' histograms of every activation tensor) <= 2x a plain
FP32 forward of the calibration split. On the calibration split of each model (the real-model conformance
set, and the demos `cnn` / `transformer` as the app splits them), in calibrate's own batches
(`Feeder.within_budget`), measured side by side in one run, each round interleaving the variants (medians):

- forward: the plain FP32 session of the prepared model over those batches (the baseline);
- probe: calibrate's session (every calibrated tensor an output) over the batches, no counting: the ceiling
  of any calibrate that fetches these tensors;
- probe, layer inputs only: the same fetching only the tensors a quantizer reads (not the layer outputs
  the Activations page also shows), for scale;
- calibrate(), every tensor: the real function as the command line runs it (compiled counting overlapped
  with onnxruntime's next batch), session build included;
- calibrate(), layer inputs only: the app's first calibration of a model (`layer_input_tensors`), and
  extend_calibration(), the layer outputs: its second pass when a page asks for them; both session build
  included. Their histograms are checked equal to the single pass's, bit for bit;
- with --variants: calibrate() of every tensor with numpy counting inline (before the compiled loop),
  compiled counting inline, compiled overlapped.

Each is given as wall time and as CPU time (every thread of the process, `time.process_time`), both as
ratios to the forward's: on a loaded machine the CPU ratio is the steadier measure of the work, and only
the wall time shows what a second core gives. For the overlapped variant the calling thread's CPU time
(onnxruntime's runs, `time.thread_time`) and the other threads' (the counting) are printed: their maximum
is what its wall time could reach on an idle second core.

Every variant's histograms are checked equal (counts, edges, |x| counts and edges, min, max) to the
single pass's. The kernel's first-use cost is measured in fresh processes: compiling into an empty
numba cache, and loading from a warm one.
"""
from __future__ import annotations

import argparse
import os
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

from quant_core.engine import calibrate as calibrate_module  # noqa: E402
from quant_core.engine.calibrate import (CALIBRATION_BATCH_BYTES, _probe_model, _probe_session,  # noqa: E402
                                         calibrate, calibration_tensors, extend_calibration,
                                         layer_input_tensors)
from quant_core.model.data import load_npz, record_state, split_dataset  # noqa: E402
from quant_core.model.layout import feeder  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402
from quant_core.model.runtime import session_options  # noqa: E402
from quant_core.numerics import histogram, histogram_kernel  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_real_models import DEMOS, model_files  # noqa: E402

VARIANTS = {  # label: (compiled counting, overlapped with onnxruntime)
    "calibrate, numpy inline (before)": (False, False),
    "calibrate, compiled inline": (True, False),
    "calibrate, compiled overlapped": (True, True),
}


def kernel_first_use() -> tuple[float, float]:
    """(seconds to compile into an empty cache, seconds to load from the warm cache), each in a fresh process."""
    code = "from quant_core.numerics import histogram_kernel as k; assert k.load(); print(k.load_seconds)"
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        cold, warm = (float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                           check=True).stdout) for _ in range(2))
    return cold, warm


def clocked(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of work()."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def state(calibration) -> dict:
    return {name: (h.counts, h.edges, h.abs_counts, h.abs_edges, h.min, h.max)
            for name, h in calibration.histograms.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k]))


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])


def bench(name: str, rounds: int, directory: Path, variants: bool, times: int = 1) -> None:
    model_path, data_path = model_files(name, directory)
    prepared = prepare_model(load_model(model_path))
    dataset = record_state(prepared, load_npz(data_path, prepared.info))
    if times > 1 and not dataset.streaming:  # every sample `times` times: a split as large as users bring
        dataset = dataset.subset(np.repeat(np.arange(dataset.num_samples), times))
    calibration_data, _ = split_dataset(dataset)
    tensors, inputs_only = calibration_tensors(prepared), layer_input_tensors(prepared)
    probe, probe_inputs = session(_probe_model(prepared.model, tensors)), session(_probe_model(prepared.model, inputs_only))
    plain = session(prepared.model)
    names = [i.name for i in probe.get_inputs()]
    feeds = feeder(calibration_data, prepared.info, names, (), 64)
    streaming = feeds.layout.streaming
    if not streaming:
        feeds = feeds.within_budget(lambda feed: sum(v.nbytes for v in probe.run(list(tensors), feed)),
                                    CALIBRATION_BATCH_BYTES)

    def over_batches(run) -> None:  # a stream runs one sample at a time, each fed the state of the last
        list(feeds.stream(run)) if streaming else [run(feed) for feed in feeds.batches()]

    def timed(run) -> tuple[float, float]:
        return clocked(lambda: over_batches(run))

    def run_on(sess, fetched):
        outputs = [o.name for o in sess.get_outputs()]
        fetched = list(dict.fromkeys(list(fetched) + outputs))
        return lambda feed: dict(zip(fetched, sess.run(fetched, feed)))

    everything, first, second = ("calibrate(), every tensor (one pass)", "calibrate(), layer inputs only (app, 1st)",
                                 "extend_calibration(), layer outputs (2nd)")
    labels = ["forward", "probe (every calibrated tensor)", "probe graph, fetching layer inputs",
              "probe of the layer inputs only (other graph)", "probe session build (in calibrate)", everything, first,
              second, *(VARIANTS if variants else ())]
    times = {label: [] for label in labels}
    found, threads = {}, {label: [] for label in VARIANTS}
    for _ in range(rounds):
        times["forward"].append(timed(run_on(plain, ())))
        times["probe (every calibrated tensor)"].append(timed(run_on(probe, tensors)))
        times["probe graph, fetching layer inputs"].append(timed(run_on(probe, inputs_only)))
        times["probe of the layer inputs only (other graph)"].append(timed(run_on(probe_inputs, inputs_only)))
        times["probe session build (in calibrate)"].append(clocked(lambda: _probe_session(prepared)))
        made = []
        times[everything].append(clocked(lambda: made.append(calibrate(prepared, calibration_data))))
        times[first].append(clocked(lambda: made.append(calibrate(prepared, calibration_data, tensors=inputs_only))))
        times[second].append(clocked(lambda: made.append(extend_calibration(made[1], prepared, calibration_data,
                                                                            tensors))))
        found["one pass"], found["two passes"] = state(made[0]), state(made[2])
        for label, (compiled, overlap) in (VARIANTS.items() if variants else ()):
            histogram.USE_KERNEL, calibrate_module.OVERLAP = compiled, overlap
            calibrations = []
            main = time.thread_time()
            times[label].append(clocked(lambda: calibrations.append(calibrate(prepared, calibration_data))))
            threads[label].append(time.thread_time() - main)  # this thread's share: onnxruntime's runs
            found[label] = state(calibrations[0])
        histogram.USE_KERNEL, calibrate_module.OVERLAP = True, True
    reference = found["one pass"]
    assert all(same(reference, other) for other in found.values()), f"{name}: histograms differ between variants"
    forward = [statistics.median(t[i] for t in times["forward"]) for i in (0, 1)]
    batches = "one sample at a time (a stream)" if streaming else f"{len(list(feeds.bounds()))} batches of {feeds.batch_size}"
    print(f"\n=== {name}: {len(tensors)} tensors ({len(inputs_only)} layer inputs), {feeds.sample_count} samples "
          f"in {batches}; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"   {'':46}{'wall':>10}{'ratio':>9}{'cpu':>10}{'ratio':>9}   (cpu: every thread's, from process_time)")
    for label, values in times.items():
        wall, cpu = (statistics.median(t[i] for t in values) for i in (0, 1))
        print(f"   {label:46}{wall:8.3f} s{wall / forward[0]:8.2f}x{cpu:8.3f} s{cpu / forward[1]:8.2f}x")
    if variants:
        label = "calibrate, compiled overlapped"
        wall, cpu = (statistics.median(t[i] for t in times[label]) for i in (0, 1))
        main = statistics.median(threads[label])
        print(f"   overlapped: calling thread {main:.3f} s CPU, other threads (counting) {cpu - main:.3f} s CPU: on an "
              f"idle second core the wall time could reach max = {max(main, cpu - main) / forward[1]:.2f}x forward (CPU)")
    print("   histograms identical: one pass over every tensor = layer inputs, then the outputs added"
          + (" = every counting variant" if variants else "") + ": yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_rec,yolo_det,minilm,ocr_det,ocr_cls," + ",".join(DEMOS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="also numpy inline / compiled inline counting")
    parser.add_argument("--times", type=int, default=1,
                        help="every sample N times (not the stream): the fixed costs (session build) against more samples")
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    cold, warm = kernel_first_use()
    print(f"compiled counting, first use in a process: {cold:.2f} s compiling into an empty numba cache, "
          f"{warm:.2f} s loading it from the cache (numba import included)")
    histogram_kernel.load()  # loaded once here, as in the app's server process: the rounds time the calibration
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models.split(","):
            bench(name.strip(), args.rounds, Path(directory), args.variants, args.times)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where calibration's time goes, and whether a second core helps: forward vs histograms, threads over tensors.

    .venv/bin/python bench/bench_calibrate_parallel.py [--models ocr_rec,yolo_det,minilm] [--rounds 3]

Issue 12's target: calibrate (all four range methods' histograms of every activation tensor) <= 2x a plain
FP32 forward of the calibration split. On the calibration split of each real model, in calibrate's own
batches (`Feeder.within_budget`), measured side by side in one run (medians of --rounds):

- forward: the plain FP32 session of the prepared model over the split (the baseline);
- probe: calibrate's session (every calibrated tensor an output) over the split;
- histograms: `StreamingHistogram.update` of every tensor with those values, one thread (as calibrate);
- histograms, 2 threads: the tensors shared between two threads (numpy releases the GIL in its loops);
- pipelined: the probe run of batch k+1 in a thread while batch k is binned.

Each variant's histograms are checked equal (counts, edges, min, max) to the one-thread ones.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quant_core.engine.calibrate import CALIBRATION_BATCH_BYTES, _probe_model, calibration_tensors  # noqa: E402
from quant_core.engine.simulation_graph import session_options  # noqa: E402
from quant_core.model.data import load_npz, record_state, split_dataset  # noqa: E402
from quant_core.model.layout import feeder  # noqa: E402
from quant_core.model.model_io import load_model, prepare_model  # noqa: E402
from quant_core.numerics.histogram import StreamingHistogram  # noqa: E402
from tests.real_models import fetch  # noqa: E402


def histograms_of(tensors, steps, workers: int):
    found = {name: StreamingHistogram(2048, name=name) for name in tensors}
    groups = [tensors[i::workers] for i in range(workers)]

    def update(group, values):
        for name in group:
            found[name].update(values[name])

    with ThreadPoolExecutor(workers) as pool:
        for values in steps:
            list(pool.map(update, groups, [values] * workers)) if workers > 1 else update(tensors, values)
    return found


def same(a, b) -> bool:
    return all(np.array_equal(a[k].counts, b[k].counts) and np.array_equal(a[k].edges, b[k].edges)
               and np.array_equal(a[k].abs_counts, b[k].abs_counts) and a[k].min == b[k].min and a[k].max == b[k].max
               for k in a)


def bench(name: str, rounds: int) -> None:
    prepared = prepare_model(load_model(fetch.model_path(name)))
    calibration_data, _ = split_dataset(record_state(prepared, load_npz(fetch.data_path(name), prepared.info)))
    tensors = calibration_tensors(prepared)
    probe = ort.InferenceSession(_probe_model(prepared.model, tensors).SerializeToString(), session_options(1),
                                 providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(prepared.model.SerializeToString(), session_options(1),
                                 providers=["CPUExecutionProvider"])
    names = [i.name for i in probe.get_inputs()]
    feeds = feeder(calibration_data, prepared.info, names, (), 64)
    feeds = feeds.within_budget(lambda feed: sum(v.nbytes for v in probe.run(list(tensors), feed)), CALIBRATION_BATCH_BYTES)
    batches = list(feeds.batches())

    def run_probe(feed):
        return dict(zip(tensors, probe.run(list(tensors), feed)))

    times = {k: [] for k in ("forward", "probe", "histograms", "histograms, 2 threads", "probe + histograms",
                             "pipelined, 2 threads")}
    for _ in range(rounds):
        started = time.perf_counter()
        for feed in batches:
            plain.run(None, feed)
        times["forward"].append(time.perf_counter() - started)
        started = time.perf_counter()
        values = [run_probe(feed) for feed in batches]
        times["probe"].append(time.perf_counter() - started)
        started = time.perf_counter()
        one = histograms_of(tensors, values, 1)
        times["histograms"].append(time.perf_counter() - started)
        started = time.perf_counter()
        two = histograms_of(tensors, values, 2)
        times["histograms, 2 threads"].append(time.perf_counter() - started)
        del values
        started = time.perf_counter()
        histograms_of(tensors, (run_probe(feed) for feed in batches), 1)
        times["probe + histograms"].append(time.perf_counter() - started)
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(run_probe, batches[0])

            def steps():
                nonlocal pending
                for k in range(len(batches)):
                    values = pending.result()
                    if k + 1 < len(batches):
                        pending = ahead.submit(run_probe, batches[k + 1])
                    yield values
            piped = histograms_of(tensors, steps(), 1)
        times["pipelined, 2 threads"].append(time.perf_counter() - started)
        assert same(one, two) and same(one, piped), "histograms differ"
    forward = statistics.median(times["forward"])
    print(f"\n=== {name}: {len(tensors)} tensors, {feeds.sample_count} samples in {len(batches)} batches of "
          f"{feeds.batch_size}; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for label, values in times.items():
        print(f"   {label:28}{statistics.median(values):8.3f} s{statistics.median(values) / forward:8.2f}x forward")
    print("   histograms identical in every variant: yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ocr_rec,yolo_det,minilm")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    for name in args.models.split(","):
        bench(name.strip(), args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

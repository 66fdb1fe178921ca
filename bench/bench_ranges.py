"""Benchmark: range estimators on one 2,048-bin histogram, against onnxruntime's calibrator code in the same run.

    /work/venv/bin/python bench/bench_ranges.py [--samples 1000000] [--repeats 20] [--ort-repeats 3]

Targets (from the issue):
  * all four ranges (minmax, percentile, MSE int8, entropy) of one tensor in < 10 ms in total;
  * our entropy search >= 10x faster than onnxruntime's HistogramCollector.get_entropy_threshold
    run on a collector holding the very same histogram (and giving the same threshold).
Also reported: streaming the samples into the histogram vs onnxruntime's collect, and weight_ranges
on a 1M-parameter weight. Times are the best of `repeats` runs after one warm-up.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.config import TensorQuant  # noqa: E402
from quant_core.numerics.formats import INT4, INT8, Granularity, RangeMethod  # noqa: E402
from quant_core.numerics.histogram import StreamingHistogram  # noqa: E402
from quant_core.numerics.ranges import range_entropy, range_minmax, range_mse, range_percentile, weight_ranges  # noqa: E402

BINS = 2048


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def activation(samples: int, seed: int = 0) -> np.ndarray:
    """A skewed, heavy-tailed activation: Laplace around 0.3 plus a Student-t(2) tail."""
    rng = np.random.default_rng(seed)
    return (rng.laplace(0.3, 1.0, samples) + 0.1 * rng.standard_t(2, samples)).astype(np.float32)


def ort_collector(method: str, symmetric: bool):
    from onnxruntime.quantization.calibrate import HistogramCollector

    return HistogramCollector(method=method, symmetric=symmetric, num_bins=BINS, num_quantized_bins=128,
                              percentile=99.99, scenario="same")


def quiet(fn):
    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ort-repeats", type=int, default=3)
    args = parser.parse_args()

    x = activation(args.samples)
    hist = StreamingHistogram.from_array(x, BINS, name="act")
    print(f"histogram: {args.samples:,} samples, {hist.counts.size} bins, range [{hist.min:.3f}, {hist.max:.3f}]")

    estimators = {
        "minmax": lambda: range_minmax(hist),
        "percentile 99.99 (symmetric)": lambda: range_percentile(hist, 99.99, symmetric=True),
        "mse int8 (symmetric)": lambda: range_mse(hist, INT8, symmetric=True),
        "entropy (128 quantized bins)": lambda: range_entropy(hist, 128),
    }
    total = 0.0
    print("\nour estimators on the 2,048-bin histogram (best of %d):" % args.repeats)
    for label, fn in estimators.items():
        seconds = best_time(fn, args.repeats)
        total += seconds
        result = fn()
        print(f"  {label:32s} {seconds * 1e3:8.3f} ms   range [{result.lo:.4f}, {result.hi:.4f}]")
    all_four = best_time(lambda: [fn() for fn in estimators.values()], args.repeats)
    print(f"  {'all four, one call after another':32s} {all_four * 1e3:8.3f} ms   "
          f"(target < 10 ms: {'PASS' if all_four < 0.010 else 'FAIL'})")

    # onnxruntime's own code on a collector holding the very same histogram.
    collector = ort_collector("entropy", False)
    entry = (hist.counts.copy(), hist.edges.copy(), hist.min, hist.max, hist.threshold)
    collector.histogram_dict = {"act": entry}
    ort_entropy = best_time(quiet(lambda: collector.get_entropy_threshold(entry, 128)), args.ort_repeats)
    ours_entropy = best_time(estimators["entropy (128 quantized bins)"], args.repeats)
    expected = collector.get_entropy_threshold(entry, 128)
    ours = range_entropy(hist, 128)
    same = (ours.lo, ours.hi) == (float(expected[0]), float(expected[1]))
    print("\nentropy search, same histogram:")
    print(f"  onnxruntime get_entropy_threshold {ort_entropy * 1e3:8.1f} ms   range [{float(expected[0]):.4f}, "
          f"{float(expected[1]):.4f}]")
    print(f"  quant_core range_entropy          {ours_entropy * 1e3:8.3f} ms   same threshold: {same}")
    ratio = ort_entropy / ours_entropy
    print(f"  speed-up {ratio:.0f}x (target >= 10x: {'PASS' if ratio >= 10 else 'FAIL'})")

    percentile_collector = ort_collector("percentile", True)
    percentile_collector.histogram_dict = {"act": (hist.abs_counts.copy(), hist.abs_edges.copy(), hist.min, hist.max)}
    ort_percentile = best_time(quiet(percentile_collector.compute_percentile), args.repeats)
    ours_percentile = best_time(estimators["percentile 99.99 (symmetric)"], args.repeats)
    print(f"\npercentile, same histogram: onnxruntime compute_percentile {ort_percentile * 1e3:.3f} ms, "
          f"ours {ours_percentile * 1e3:.3f} ms ({ort_percentile / ours_percentile:.1f}x)")

    # Streaming: 10 batches into our histogram (signed and |x| both) vs onnxruntime's collect (one kind each).
    batches = np.array_split(x, 10)

    def ours_stream():
        h = StreamingHistogram(BINS)
        for b in batches:
            h.update(b)

    def ort_stream():
        signed, absolute = ort_collector("entropy", False), ort_collector("percentile", True)
        for b in batches:
            signed.collect_value({"act": b})
            absolute.collect_absolute_value({"act": b})

    ours_s = best_time(ours_stream, max(3, args.repeats // 4))
    ort_s = best_time(quiet(ort_stream), max(3, args.repeats // 4))
    print(f"\nstreaming {args.samples:,} samples in 10 batches into both histograms: ours {ours_s * 1e3:.1f} ms, "
          f"onnxruntime collect_value + collect_absolute_value {ort_s * 1e3:.1f} ms ({ort_s / ours_s:.2f}x)")

    weight = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)
    print("\nweight_ranges on a 1024 x 1024 weight (1M parameters), int4:")
    for granularity in (Granularity.PER_TENSOR, Granularity.PER_CHANNEL, Granularity.PER_GROUP):
        for method in RangeMethod:
            if granularity == Granularity.PER_GROUP and method == RangeMethod.ENTROPY:
                continue
            tq = TensorQuant(INT4, granularity=granularity, range_method=method, block_size=32, axis=0)
            seconds = best_time(lambda: weight_ranges(weight, tq, name="w"), 3)
            print(f"  {granularity.value:12s} {method.value:10s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()

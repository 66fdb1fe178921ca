"""Benchmark: fake-quantizing 50M float32 values, against this machine's copy bandwidth in the same run.

    /work/venv/bin/python bench/bench_fake_quant.py [--elements 50000000] [--repeats 7]

Every variant reads the input once and writes a float32 output of the same size, so each is
reported as (bytes read + bytes written) / best time, and as a ratio to np.copyto of the same array.
Target: quant_core.numerics.quantize.fake_quantize at >= 50% of copy bandwidth, per-tensor and per-channel.
fake_quantize runs large int8/uint8/int16/uint16 tensors through a cached onnxruntime Q->DQ session
and everything else (int4, narrow range, channels on the last axis, ...) through chunked numpy
ufuncs on two threads; both paths are timed. Every result is checked bit for bit against the
reference definition (the naive expression).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core import quantize as quantize_module  # noqa: E402
from quant_core.numerics.formats import INT4, INT8, UINT8  # noqa: E402
from quant_core.numerics.qparams import qparams_from_range  # noqa: E402
from quant_core.numerics.quantize import fake_quantize, tensor_range  # noqa: E402


def naive(x, scale, zero_point, qmin, qmax, axis=None):
    if axis is not None:
        scale = scale.reshape((-1,) + (1,) * (x.ndim - axis - 1))
        zero_point = zero_point.reshape((-1,) + (1,) * (x.ndim - axis - 1))
    q = np.clip(np.rint(x / scale) + zero_point, qmin, qmax)
    return ((q - zero_point) * scale).astype(np.float32)


def ort_qdq_session(axis, dtype):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    elem = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}[dtype]
    kwargs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **kwargs),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **kwargs)]
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("zero_point", elem, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    rows = 5_000
    cols = args.elements // rows
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    x *= rng.uniform(0.1, 4.0, size=(rows, 1)).astype(np.float32)  # channels of different ranges
    nbytes = 2 * x.nbytes
    destination = np.empty_like(x)

    lo, hi = tensor_range(x, granularity="per_tensor")
    scale_t, zero_t = qparams_from_range(lo, hi, UINT8, symmetric=False)
    lo, hi = tensor_range(x, granularity="per_channel", axis=0)
    scale_c, zero_c = qparams_from_range(lo, hi, INT8, symmetric=True)
    lo, hi = tensor_range(x, granularity="per_channel", axis=1)
    scale_l, zero_l = qparams_from_range(lo, hi, UINT8, symmetric=False)
    ref_t = naive(x, scale_t, zero_t.astype(np.float32), 0, 255)
    ref_c = naive(x, scale_c, zero_c.astype(np.float32), -128, 127, axis=0)

    lo, hi = tensor_range(x, granularity="per_tensor")
    scale_4, zero_4 = qparams_from_range(lo, hi, INT4, symmetric=True)
    ref_4 = naive(x, scale_4, zero_4.astype(np.float32), -8, 7)

    def numpy_path(fn):
        """Run fn with the onnxruntime dispatch off, to time the chunked-ufunc path on int8 too."""
        def run():
            saved, quantize_module._ORT_MIN = quantize_module._ORT_MIN, 1 << 62
            try:
                return fn()
            finally:
                quantize_module._ORT_MIN = saved
        return run

    out = np.empty_like(x)
    variants = [  # label, function, reference result for the bit-exactness check
        ("np.copyto (baseline)", lambda: np.copyto(destination, x), None),
        ("fake_quantize uint8 per-tensor", lambda: fake_quantize(x, scale_t, zero_t, UINT8), ref_t),
        ("fake_quantize uint8 per-tensor, out=", lambda: fake_quantize(x, scale_t, zero_t, UINT8, out=out), ref_t),
        ("fake_quantize int8 per-channel (axis 0)", lambda: fake_quantize(x, scale_c, zero_c, INT8, axis=0), ref_c),
        ("fake_quantize int8 per-channel (axis 0), out=",
         lambda: fake_quantize(x, scale_c, zero_c, INT8, axis=0, out=out), ref_c),
        ("fake_quantize uint8 per-channel (last axis)*, out=",
         lambda: fake_quantize(x, scale_l, zero_l, UINT8, axis=1, out=out),
         naive(x, scale_l, zero_l.astype(np.float32), 0, 255, axis=1)),
        ("fake_quantize int4 per-tensor*, out=", lambda: fake_quantize(x, scale_4, zero_4, INT4, out=out), ref_4),
        ("fake_quantize uint8 per-tensor, numpy path*, out=",
         numpy_path(lambda: fake_quantize(x, scale_t, zero_t, UINT8, out=out)), ref_t),
        ("fake_quantize int8 per-channel, numpy path*, out=",
         numpy_path(lambda: fake_quantize(x, scale_c, zero_c, INT8, axis=0, out=out)), ref_c),
        ("naive numpy expression, per-tensor", lambda: naive(x, scale_t, zero_t.astype(np.float32), 0, 255), None),
        ("naive numpy expression, per-channel",
         lambda: naive(x, scale_c, zero_c.astype(np.float32), -128, 127, axis=0), None),
    ]
    session_t, session_c = ort_qdq_session(None, np.uint8), ort_qdq_session(0, np.int8)
    feeds_t = {"x": x, "scale": scale_t, "zero_point": zero_t.astype(np.uint8)}
    feeds_c = {"x": x, "scale": scale_c, "zero_point": zero_c.astype(np.int8)}
    variants += [("onnxruntime Q->DQ uint8 per-tensor", lambda: session_t.run(None, feeds_t)[0], ref_t),
                 ("onnxruntime Q->DQ int8 per-channel", lambda: session_c.run(None, feeds_c)[0], ref_c)]

    load_before = os.getloadavg()[0]
    exact = {}
    for label, fn, reference in variants:  # warm-up (page faults, thread start, session), then check
        result = fn()
        if reference is not None:
            same = np.array_equal(result.view(np.uint32), reference.view(np.uint32))
            exact[label] = "bit-exact" if same else "MISMATCH"
        del result
    # Interleaved rounds, best of each: a burst of load from other processes hits all variants alike.
    best = {label: float("inf") for label, _, _ in variants}
    for _ in range(args.repeats):
        for label, fn, _ in variants:
            start = time.perf_counter()
            fn()
            best[label] = min(best[label], time.perf_counter() - start)

    copy_gbs = nbytes / best["np.copyto (baseline)"] / 1e9
    print(f"{x.size:,} float32 values ({x.nbytes / 1e6:.0f} MB), best of {args.repeats} interleaved rounds; "
          f"GB/s = (bytes read + written) / time; ratio to np.copyto")
    print(f"{os.cpu_count()} CPUs, load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
          "(other processes slow the compute-bound variants more than the copy)")
    print("* = chunked numpy ufuncs on two threads; the others run onnxruntime's fused kernel inside "
          "fake_quantize. out= writes into a reused array (like the copy); without it, a new array")
    for label, _, _ in variants:
        gbs = nbytes / best[label] / 1e9
        print(f"{label:52s} {best[label] * 1e3:8.1f} ms {gbs:7.2f} GB/s {gbs / copy_gbs * 100:5.0f}%  "
              f"{exact.get(label, '')}")


if __name__ == "__main__":
    main()

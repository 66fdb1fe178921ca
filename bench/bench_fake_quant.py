"""Benchmark: fake-quantizing 50M float32 values, against this machine's copy bandwidth in the same run.

    /work/venv/bin/python bench/bench_fake_quant.py [--elements 50000000] [--repeats 5]

Every variant reads the input once and writes a float32 output of the same size, so each is
reported as (bytes read + bytes written) / best time, and as a ratio to np.copyto of the same array.
Target: quant_core.quantize.fake_quantize at >= 50% of copy bandwidth, per-tensor and per-channel.
The result of every fast variant is checked bit for bit against the reference definition.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.formats import INT8, UINT8  # noqa: E402
from quant_core.qparams import qparams_from_range  # noqa: E402
from quant_core.quantize import fake_quantize, tensor_range  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: page faults of the output, thread start, session creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rows = 5_000
    cols = args.elements // rows
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, cols), dtype=np.float32)
    x *= rng.uniform(0.1, 4.0, size=(rows, 1)).astype(np.float32)  # channels of different ranges
    nbytes = 2 * x.nbytes
    destination = np.empty_like(x)

    cases = []
    lo, hi = tensor_range(x, granularity="per_tensor")
    scale_t, zero_t = qparams_from_range(lo, hi, UINT8, symmetric=False)
    lo, hi = tensor_range(x, granularity="per_channel", axis=0)
    scale_c, zero_c = qparams_from_range(lo, hi, INT8, symmetric=True)

    copy_time = best_time(lambda: np.copyto(destination, x), args.repeats)
    copy_gbs = nbytes / copy_time / 1e9

    def run_variant(label, fn, reference=None):
        seconds = best_time(fn, args.repeats)
        gbs = nbytes / seconds / 1e9
        exact = ""
        if reference is not None:
            exact = "bit-exact" if np.array_equal(fn().view(np.uint32), reference.view(np.uint32)) else "MISMATCH"
        cases.append((label, seconds, gbs, gbs / copy_gbs, exact))

    ref_t = naive(x, scale_t, zero_t.astype(np.float32), 0, 255)
    ref_c = naive(x, scale_c, zero_c.astype(np.float32), -128, 127, axis=0)
    run_variant("fake_quantize uint8 per-tensor",
                lambda: fake_quantize(x, scale_t, zero_t, UINT8), ref_t)
    run_variant("fake_quantize int8 per-channel (axis 0)",
                lambda: fake_quantize(x, scale_c, zero_c, INT8, axis=0), ref_c)
    run_variant("naive numpy expression, per-tensor",
                lambda: naive(x, scale_t, zero_t.astype(np.float32), 0, 255))
    run_variant("naive numpy expression, per-channel",
                lambda: naive(x, scale_c, zero_c.astype(np.float32), -128, 127, axis=0))
    try:
        session_t = ort_qdq_session(None, np.uint8)
        feeds_t = {"x": x, "scale": scale_t, "zero_point": zero_t.astype(np.uint8)}
        run_variant("onnxruntime Q->DQ uint8 per-tensor", lambda: session_t.run(None, feeds_t)[0], ref_t)
        session_c = ort_qdq_session(0, np.int8)
        feeds_c = {"x": x, "scale": scale_c, "zero_point": zero_c.astype(np.int8)}
        run_variant("onnxruntime Q->DQ int8 per-channel", lambda: session_c.run(None, feeds_c)[0], ref_c)
    except ImportError as err:
        print(f"(onnxruntime comparison skipped: {err})")

    print(f"{x.size:,} float32 values ({x.nbytes / 1e6:.0f} MB), best of {args.repeats}; "
          f"GB/s = (bytes read + written) / time")
    print(f"{'np.copyto (baseline)':44s} {copy_time * 1e3:8.1f} ms {copy_gbs:7.2f} GB/s  100%")
    for label, seconds, gbs, ratio, exact in cases:
        print(f"{label:44s} {seconds * 1e3:8.1f} ms {gbs:7.2f} GB/s {ratio * 100:4.0f}%  {exact}")


if __name__ == "__main__":
    main()

"""`python -m quant_core bench MODEL.onnx [--data DATA.npz] [--batch N] [--threads T] [--json]`.

Measures onnxruntime latency of the model file as it is (an exported quantized model is timed with
its integer kernels): warm-up, then repeats; prints median and spread. --json keys: median_ms, p10_ms,
p90_ms, mean_ms, std_ms, repeats, batch_size, threads, size_bytes, providers, kernels, int8_kernels
(this machine's CPU target: {"target", "saturates", "cpu", "summary"}).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnx

from quant_core.errors import DataError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file")
    parser.add_argument("--data", help=".npz with one array per model input; without it, random inputs are used")
    parser.add_argument("--batch", type=int, default=1, help="samples per run (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


_NUMPY_OF = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
             onnx.TensorProto.INT64: np.int64, onnx.TensorProto.INT32: np.int32}


def random_inputs(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """One batch of standard-normal inputs (fixed seed); dynamic dimensions become `batch` (first) or 1."""
    initializers = {init.name for init in model.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _NUMPY_OF.get(tensor.elem_type)
        if dtype is None:
            raise DataError(f"input {value.name!r} has a type random inputs cannot fill; give --data DATA.npz")
        shape = [dim.dim_value if dim.dim_value > 0 else (batch if i == 0 else 1)
                 for i, dim in enumerate(tensor.shape.dim)]
        feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run(args: argparse.Namespace) -> int:
    from quant_core.numerics import cpu_target
    from quant_core.model.data import load_npz
    from quant_core.export.latency import measure_latency
    from quant_core.model.model_io import inspect_model, load_model
    model = load_model(args.model)
    feeds = load_npz(args.data, inspect_model(model)) if args.data else random_inputs(model, args.batch)
    result = measure_latency(model.SerializeToString(), feeds, batch_size=args.batch, threads=args.threads,
                             warmup=args.warmup, repeats=args.repeats)
    probe = cpu_target.probe_int8_kernels()
    if args.json:
        json.dump({**result.to_dict(), "int8_kernels": {"target": probe.target.value, "saturates": probe.saturates,
                                                        "cpu": probe.cpu, "summary": probe.summary()}},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"median {result.median_ms:.4f} ms (p10 {result.p10_ms:.4f}, p90 {result.p90_ms:.4f}) over "
          f"{result.repeats} runs; batch {result.batch_size}, {result.threads} thread(s), "
          f"{result.per_sample_ms * 1000:.1f} us per sample")
    print(f"size {result.size_bytes:,} bytes; providers {', '.join(result.providers)}")
    print(f"kernels: {', '.join(result.kernels)}")
    print(f"int8 kernels: {probe.target.value} ({probe.cpu}): {probe.summary()}")
    return 0

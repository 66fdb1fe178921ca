"""Benchmark: open a 100M-parameter ONNX model and list its layers (quant_core.model.model_io).

Generates a model of stacked MatMul layers with random FP32 initializers in a temporary directory, then
measures each step in a fresh subprocess (time, and peak resident memory above the process's baseline after
imports), side by side with two baselines measured in the same run: reading the file's bytes, and
`onnx.load`. Targets: load_model + inspect_model under 10 s and under 2x the model's size in extra memory.

    /work/venv/bin/python bench/bench_open_model.py            # 100M parameters (~400 MB file)
    /work/venv/bin/python bench/bench_open_model.py --params 10e6
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "read bytes (baseline)": "read",
    "onnx.load (baseline)": "onnx_load",
    "load_model + inspect_model": "open_inspect",
    "load_model + prepare_model": "open_prepare",
}
TARGET_SECONDS = 10.0
TARGET_MEMORY_RATIO = 2.0


def make_model(path: Path, params: float, dim: int) -> tuple[int, int]:
    """Write a chain of `params / dim**2` MatMul layers of (dim, dim) random FP32 weights; return (layers, params)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    layers = max(1, round(params / dim**2))
    rng = np.random.default_rng(0)
    nodes, initializers, x = [], [], "x"
    for index in range(layers):
        weight = TensorProto(name=f"layer{index}.weight", data_type=TensorProto.FLOAT, dims=[dim, dim])
        weight.raw_data = rng.standard_normal((dim, dim), dtype=np.float32).tobytes()
        initializers.append(weight)
        nodes.append(helper.make_node("MatMul", [x, weight.name], [f"h{index}"], name=f"/layer{index}/MatMul"))
        x = f"h{index}"
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", dim])],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return layers, layers * dim * dim


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Make VmHWM restart from the current RSS (Linux >= 4.0), so imports do not count in the peak.

    getrusage's ru_maxrss cannot be used: a child forked from the (large) parent starts with its maximum.
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(mode: str, path: str) -> dict:
    """Run one mode in this fresh process: seconds and peak RSS above the RSS after imports."""
    import onnx

    from quant_core.model.model_io import inspect_model, load_model, prepare_model

    limit = os.path.getsize(path) + 1
    reset_peak()
    baseline = status_bytes("VmRSS")
    start = time.perf_counter()
    layers = None
    if mode == "read":
        data = Path(path).read_bytes()
        del data
    elif mode == "onnx_load":
        onnx.load(path)
    elif mode == "open_inspect":
        layers = len(inspect_model(load_model(path, max_bytes=limit)).layers)
    elif mode == "open_prepare":
        layers = len(prepare_model(load_model(path, max_bytes=limit)).info.layers)
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    return {"seconds": seconds, "peak_extra_bytes": peak - baseline, "layers": layers}


def run_mode(mode: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", mode, str(path)], capture_output=True,
                            text=True, check=True, cwd=ROOT)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=100e6, help="number of parameters (default 100e6)")
    parser.add_argument("--dim", type=int, default=2048, help="each layer's weight is (dim, dim)")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure(*args.measure)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_open_model_") as tmp:
        path = Path(tmp) / "big.onnx"
        start = time.perf_counter()
        layers, params = make_model(path, args.params, args.dim)
        size = path.stat().st_size
        print(f"model: {layers} MatMul layers of ({args.dim}, {args.dim}), {params / 1e6:.1f}M parameters, "
              f"{size / 2**20:.0f} MiB (generated in {time.perf_counter() - start:.1f} s)")
        results = {label: run_mode(mode, path) for label, mode in MODES.items()}
    onnx_load = results["onnx.load (baseline)"]
    print(f"\n{'step':<28} {'seconds':>8} {'vs onnx.load':>13} {'extra peak MiB':>15} {'x model size':>13}")
    for label, result in results.items():
        print(f"{label:<28} {result['seconds']:>8.2f} {result['seconds'] / onnx_load['seconds']:>12.2f}x "
              f"{result['peak_extra_bytes'] / 2**20:>15.0f} {result['peak_extra_bytes'] / size:>12.2f}x")
    main_result = results["load_model + inspect_model"]
    assert main_result["layers"] == layers, main_result
    ok_time = main_result["seconds"] < TARGET_SECONDS
    ok_memory = main_result["peak_extra_bytes"] < TARGET_MEMORY_RATIO * size
    print(f"\nload_model + inspect_model: {main_result['seconds']:.2f} s (target < {TARGET_SECONDS:.0f} s: "
          f"{'PASS' if ok_time else 'FAIL'}), extra peak {main_result['peak_extra_bytes'] / size:.2f}x the model "
          f"size (target < {TARGET_MEMORY_RATIO:.0f}x: {'PASS' if ok_memory else 'FAIL'})")
    return 0 if ok_time and ok_memory else 1


if __name__ == "__main__":
    sys.exit(main())

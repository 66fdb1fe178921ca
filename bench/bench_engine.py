"""Benchmark the what-if engine against the obvious onnxruntime paths, side by side in one run.

    /work/venv/bin/python bench/bench_engine.py [--repeats 4] [--sweep-repeats 3] [--edits 30]
                                                [--models cnn,cnn28,transformer,deep] [--no-calibration]
                                                [--sections evaluate,sweep,calibration,edits,wa-sweep,suggest]

Prints ratios measured in this run (nothing hard-coded), for the demo CNN and transformer (797
held-out digits) and a generated, larger CNN on 28x28 inputs (random He-initialised weights, fixed
seed; see `generated_cnn28`); `--models deep` adds a generated deep, narrow MLP whose session build
costs many forwards (`generated_deep_mlp`):
1. evaluating a new config vs a plain FP32 onnxruntime forward pass of the same split, and vs the
   naive path (rewrite weights + insert Q/DQ, serialize, new InferenceSession, run): interleaved
   rounds, medians;
2. a sweep of every layer x {int8, int6, int4, int3, int2} weights vs the same sweep done with
   onnxruntime.quantization.quantize_static + a new InferenceSession per config: rounds
   alternating engine and onnxruntime, medians (each engine round starts from a new Evaluator,
   so nothing is cached from the previous round; weights only, so the engine does not calibrate,
   while quantize_static calibrates for every config);
3. (demo CNN and generated 28x28 CNN) calibration with 1,024 samples (2,048-bin histograms, all
   four range methods) vs onnxruntime's EntropyCalibrater(num_bins=2048), and (demo CNN) the peak
   extra resident memory (VmHWM, measured in a child process) when the sample count grows fourfold;
4. one-cell edits of the Mixed precision table: a seeded walk changing one layer's weight format at
   a time from W8A8; per edit, `Evaluator.evaluate` + `Evaluator.layer_errors` of the new config
   (what the page computes), against a plain FP32 forward of the split, and the layer_errors of a
   config seen for the first time by an Evaluator (every layer alone: one run per quantized layer);
5. a sweep of weights + input activations with and without the suffix runs for activation configs;
6. a mixed-precision suggestion with and without anchors (candidates run from their layer on).
Every session, ours and the baselines', uses one intra-op thread with spinning off (the machine is shared).
"""
from __future__ import annotations

import argparse
import logging
import contextlib
import gc
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant_core.numerics.axes import resolve, weight_axes  # noqa: E402
from quant_core.engine.calibrate import calibrate  # noqa: E402
from quant_core.config import LayerQuant, QuantConfig, TensorQuant  # noqa: E402
from quant_core.model.data import Dataset  # noqa: E402
from quant_core.model.demo import load_demo  # noqa: E402
from quant_core.engine.evaluate import Evaluator  # noqa: E402
from quant_core.numerics.formats import RangeMethod  # noqa: E402
from quant_core.model.model_io import prepare_model  # noqa: E402
from quant_core.numerics.tensor import quantize_tensor  # noqa: E402
from quant_core.search.sensitivity import run_sweep  # noqa: E402
from quant_core.engine.simulate import ActivationQuant  # noqa: E402
from quant_core.model.runtime import session_options  # noqa: E402

SWEEP_FORMATS = ("int8", "int6", "int4", "int3", "int2")


def timed(function, repeats: int) -> float:
    """Median wall time of `function()` over `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def new_session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])


def w_a8_config(bits: int) -> QuantConfig:
    return QuantConfig(LayerQuant(TensorQuant(f"int{bits}", granularity="per_channel"),
                                  TensorQuant("uint8", symmetric=False)), name=f"W{bits}A8")


# ---------------------------------------------------------------------------------------------
# 1. evaluating one new config
# ---------------------------------------------------------------------------------------------

def naive_model(prepared, calibration, config: QuantConfig) -> onnx.ModelProto:
    """The config written into a copy of the model: fake-quantized initializers and Q/DQ before each layer."""
    model = onnx.ModelProto()
    model.CopyFrom(prepared.model)
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        layer = next((l for l in prepared.info.layers if l.name == node.name), None)
        if layer is not None:
            choice = config.for_layer(layer.name)
            if choice.weights is not None and layer.weight is not None:
                init = initializers[layer.weight.name]
                layout = resolve(choice.weights, weight_axes(layer, prepared))
                x = numpy_helper.to_array(init)
                values = quantize_tensor(x.reshape(layout.shape), layout.tq).values.reshape(x.shape)
                init.CopyFrom(numpy_helper.from_array(values.astype(np.float32), init.name))
            if choice.activations is not None and layer.activation_input:
                found = calibration.range_for(layer.activation_input, choice.activations)
                params = ActivationQuant.from_range(float(found.lo), float(found.hi), choice.activations)
                p = f"naive.{len(nodes)}"
                model.graph.initializer.extend([numpy_helper.from_array(np.float32(params.scale), p + ".s"),
                                                numpy_helper.from_array(np.uint8(params.zero_point), p + ".z")])
                nodes += [helper.make_node("QuantizeLinear", [layer.activation_input, p + ".s", p + ".z"], [p + ".q"]),
                          helper.make_node("DequantizeLinear", [p + ".q", p + ".s", p + ".z"], [p + ".dq"])]
                node.input[list(node.input).index(layer.activation_input)] = p + ".dq"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def fresh_configs(count: int):
    """`count` configs whose weights were never quantized before (nothing comes from a cache)."""
    choices = [(bits, symmetric, granularity) for granularity in ("per_channel", "per_tensor")
               for symmetric in (True, False) for bits in range(8, 1, -1)]
    if count > len(choices):
        raise SystemExit(f"at most {len(choices)} fresh configs; lower --repeats")
    return iter([QuantConfig(LayerQuant(TensorQuant(f"int{bits}", symmetric=symmetric, granularity=granularity),
                                        TensorQuant("uint8", symmetric=False)), name=f"fresh {i}")
                 for i, (bits, symmetric, granularity) in enumerate(choices[:count])])


def bench_evaluate(prepared, calibration, evaluation: Dataset, repeats: int) -> dict:
    plain = new_session(prepared.model)
    evaluator = Evaluator(prepared, calibration, evaluation)
    engine_configs, naive_configs = fresh_configs(repeats * 6), fresh_configs(repeats * 6)
    evaluator.evaluate(w_a8_config(8))  # warm-up: the first run of a session pays onnxruntime's allocations
    plain.run(None, evaluation.inputs)

    def naive():
        session = new_session(naive_model(prepared, calibration, next(naive_configs)))
        session.run(None, evaluation.inputs)

    # Interleaved, so that load from other processes on the shared machine hits all three alike.
    weights, activations = evaluator._feeds(w_a8_config(8))
    fp32_times, run_times, engine_times, naive_times = [], [], [], []
    for _ in range(repeats * 6):
        fp32_times.append(timed(lambda: plain.run(None, evaluation.inputs), 1))
        run_times.append(timed(lambda: evaluator.session.run(evaluation.inputs, weights=weights,
                                                             activations=activations), 1))
        engine_times.append(timed(lambda: evaluator.evaluate(next(engine_configs)), 1))
        naive_times.append(timed(naive, 1))
    fp32_time, run_time, engine_time, naive_time = (statistics.median(t) for t in
                                                    (fp32_times, run_times, engine_times, naive_times))
    # onnxruntime's graph optimizations rewrite Q/DQ around the layers of the naive model; with
    # them disabled it computes what the config means, which the engine must match.
    options = session_options(1)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    check = naive_model(prepared, calibration, w_a8_config(8)).SerializeToString()
    naive_logits = ort.InferenceSession(check, options, providers=["CPUExecutionProvider"]).run(None, evaluation.inputs)[0]
    engine_logits = evaluator.outputs(w_a8_config(8))[0]
    return {"fp32": fp32_time, "run": run_time, "engine": engine_time, "naive": naive_time,
            "agree": float(np.mean(naive_logits.argmax(1) == engine_logits.argmax(1))),
            "reordered": evaluator.session.reordered}


# ---------------------------------------------------------------------------------------------
# 2. sweep
# ---------------------------------------------------------------------------------------------

class _Reader:
    """onnxruntime CalibrationDataReader over one array, in batches."""

    def __init__(self, x: np.ndarray, name: str = "image", batch_size: int = 64):
        self.batches = iter([{name: x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self):
        return next(self.batches, None)


def bench_sweep(prepared, calibration_data: Dataset, evaluation: Dataset, repeats: int) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # onnxruntime has int8 and int4 weights only: for int6/int3/int2 the same per-config work is done with int8.
    weight_types = {"int8": QuantType.QInt8, "int4": QuantType.QInt4}
    input_name = prepared.model.graph.input[0].name
    x = calibration_data.inputs[input_name]
    layers = [layer.name for layer in prepared.info.layers if layer.weight is not None]

    def with_setup():
        # A weights-only sweep needs no activation ranges: no calibration pass (`Evaluator(..., None, ...)`,
        # as `python -m quant_core sensitivity` without --activations). onnxruntime's path has to calibrate.
        evaluator = Evaluator(prepared, None, evaluation)
        return run_sweep(evaluator, SWEEP_FORMATS)

    def onnxruntime_sweep(directory):
        source, target = os.path.join(directory, "model.onnx"), os.path.join(directory, "quantized.onnx")
        onnx.save(prepared.model, source)
        for layer in layers:
            for fmt in SWEEP_FORMATS:
                quantize_static(source, target, _Reader(x, input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=weight_types.get(fmt, QuantType.QInt8),
                                nodes_to_quantize=[layer])
                new_session(onnx.load(target)).run(None, evaluation.inputs)

    setup_times, sweep_times, ort_times = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            rows = with_setup()
            setup_times.append(time.perf_counter() - start)
            evaluator = Evaluator(prepared, None, evaluation)  # built untimed
            gc.collect()
            start = time.perf_counter()
            run_sweep(evaluator, SWEEP_FORMATS)
            sweep_times.append(time.perf_counter() - start)
            gc.collect()
            start = time.perf_counter()
            onnxruntime_sweep(directory)
            ort_times.append(time.perf_counter() - start)
    suffixes = sum(evaluator.suffix_runs.ready(layer) for layer in evaluator.layers)
    floor = sweep_floor(evaluator, layers, evaluation) * len(SWEEP_FORMATS)
    return {"engine": statistics.median(setup_times), "sweep_only": statistics.median(sweep_times), "floor": floor,
            "ort": statistics.median(ort_times), "configs": len(layers) * len(SWEEP_FORMATS), "rows": len(rows),
            "suffixes": suffixes, "layers": len(layers),
            "ratios": [o / e for o, e in zip(ort_times, setup_times)],
            "ratios_alone": [o / e for o, e in zip(ort_times, sweep_times)]}


def sweep_floor(evaluator, layers, evaluation: Dataset) -> float:
    """Seconds per format of the least any exact sweep must run: for each layer, the faster of a whole
    simulation run and a run of the model from that layer on (FP32 activations before it captured,
    weights quantized beforehand, no Python around it). Medians of 5 runs each."""
    cuts = evaluator.suffix_runs.cut_values()
    total = 0.0
    for layer in layers:
        weight = evaluator.quantized_weight(layer, TensorQuant("int4", granularity="per_channel"))
        full = timed(lambda: evaluator.session.run(evaluation.inputs, weights={layer: weight}), 5)
        suffix = evaluator.session.suffix(layer) if cuts else None
        if suffix is not None:
            suffix.run(cuts[0], weight)  # warm-up
            full = min(full, timed(lambda: [suffix.run(values, weight) for values in cuts], 5))
        total += full
    return total


def bench_activation_sweep(prepared, calibration, evaluation: Dataset, repeats: int) -> dict:
    """A sweep of weights + input activations, alternating: suffix runs for the activation configs on
    (the engine) and off (every such config runs the whole model, as before they existed)."""
    def sweep(with_activation_suffixes: bool) -> tuple[float, int]:
        evaluator = Evaluator(prepared, calibration, evaluation)
        if not with_activation_suffixes:  # as before: a sweep with activations prepared nothing
            evaluator.suffix_runs.prepare = lambda layer, configs, activation=False: False
        gc.collect()
        start = time.perf_counter()
        run_sweep(evaluator, SWEEP_FORMATS, activations=True)
        return time.perf_counter() - start, sum(evaluator.suffix_runs.ready(l, True) for l in evaluator.layers)

    on, off = [], []
    for _ in range(repeats):
        on.append(sweep(True))
        off.append(sweep(False))
    return {"on": statistics.median(t for t, _ in on), "off": statistics.median(t for t, _ in off),
            "suffixes": on[-1][1], "layers": len(prepared.info.layers)}


def bench_suggest(prepared, evaluation: Dataset, repeats: int) -> dict:
    """suggest_config(min_accuracy = FP32 - 2 pp, or 98 % top-1 agreement without labels) alternating: anchors on (the engine) and off (every
    candidate runs the whole model, as before anchors existed); the two suggestions must be equal."""
    from quant_core.search.suggest import suggest_config

    def suggest(anchors: bool):
        evaluator = Evaluator(prepared, None, evaluation)
        if not anchors:
            evaluator.anchor = lambda config: False
        target = 0.98 if evaluator.fp32_accuracy is None else evaluator.fp32_accuracy - 0.02  # agreement w/o labels
        gc.collect()
        start = time.perf_counter()
        found = suggest_config(evaluator, min_accuracy=target)
        return time.perf_counter() - start, found

    on, off = [], []
    for _ in range(repeats):
        on.append(suggest(True))
        off.append(suggest(False))
    return {"on": statistics.median(t for t, _ in on), "off": statistics.median(t for t, _ in off),
            "steps": len(on[0][1].steps), "same": all(a[1] == b[1] for a, b in zip(on, off))}


# ---------------------------------------------------------------------------------------------
# 3. calibration
# ---------------------------------------------------------------------------------------------

def jittered(x: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` samples: x tiled, with small noise so no two copies are identical; clipped to [0, 1]."""
    tiled = np.concatenate([x] * (-(-count // len(x))))[:count]
    noise = np.random.default_rng(seed).normal(scale=0.02, size=tiled.shape).astype(np.float32)
    return np.clip(tiled + noise, 0.0, 1.0).astype(np.float32)


def engine_calibration(prepared, x: np.ndarray) -> None:
    calibration = calibrate(prepared, Dataset({"image": x}), bins=2048, batch_size=64)
    for method in RangeMethod:
        tq = TensorQuant("uint8", symmetric=False, range_method=method)
        for tensor in calibration.tensors:
            calibration.range_for(tensor, tq)


def ort_entropy_calibration(prepared, x: np.ndarray) -> None:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "model.onnx")
        onnx.save(prepared.model, source)
        calibrator = create_calibrator(source, ["Conv", "Gemm", "MatMul"], os.path.join(directory, "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": 2048})
        with contextlib.redirect_stdout(io.StringIO()):  # it prints progress
            calibrator.collect_data(_Reader(x))
            calibrator.compute_data()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(which: str, count: int) -> None:
    """In a fresh process: print the peak resident memory (bytes) added by one calibration."""
    model_bytes, held_out = load_demo("cnn")
    prepared = prepare_model(onnx.load_from_string(model_bytes))
    x = jittered(held_out.inputs["image"], count)
    function = engine_calibration if which == "engine" else ort_entropy_calibration
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    function(prepared, x)
    print((_status_kib("VmHWM") - before) * 1024)


def peak_memory(which: str, count: int) -> int:
    """Peak extra resident memory of one calibration of `count` samples, measured in a child process."""
    done = subprocess.run([sys.executable, __file__, "--memory-child", which, str(count)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def bench_edits(prepared, calibration, evaluation: Dataset, edits: int) -> dict:
    import random
    from quant_core.config import PRESETS
    plain = new_session(prepared.model)
    plain.run(None, evaluation.inputs)
    w8a8 = PRESETS["W8A8"]
    first_times = []
    for bits in (8, 6, 4):  # a fresh Evaluator per config: every layer's isolated run is new
        evaluator = Evaluator(prepared, calibration, evaluation)
        config = QuantConfig(LayerQuant(TensorQuant(f"int{bits}", granularity="per_channel"), w8a8.default.activations))
        first_times.append(timed(lambda: evaluator.layer_errors(config), 1))
    evaluator = Evaluator(prepared, calibration, evaluation)
    evaluator.evaluate(w8a8)
    evaluator.layer_errors(w8a8)
    runs, run = [], evaluator.session.run

    def counted(*args, **kwargs):
        runs.append(1)
        return run(*args, **kwargs)

    evaluator.session.run = counted
    rng, overrides = random.Random(0), {}
    formats = ("int8", "int6", "int5", "int4", "int3", "fp16", "ternary", "binary")
    fp32_times, evaluate_times, errors_times, edit_runs = [], [], [], []
    for _ in range(edits):
        layer = rng.choice(evaluator.layers)
        overrides[layer] = LayerQuant(TensorQuant(rng.choice(formats), granularity="per_channel"),
                                      w8a8.default.activations)
        config = QuantConfig(w8a8.default, tuple(overrides.items()))
        fp32_times.append(timed(lambda: plain.run(None, evaluation.inputs), 1))
        runs.clear()
        evaluate_times.append(timed(lambda: evaluator.evaluate(config), 1))
        errors_times.append(timed(lambda: evaluator.layer_errors(config), 1))
        edit_runs.append(len(runs))
    both = sorted(e + l for e, l in zip(evaluate_times, errors_times))
    return {"fp32": statistics.median(fp32_times), "evaluate": statistics.median(evaluate_times),
            "errors": statistics.median(errors_times), "both": statistics.median(both),
            "both_p95": both[max(0, int(round(0.95 * len(both))) - 1)], "runs": statistics.median(edit_runs),
            "first": statistics.median(first_times), "layers": len(evaluator.layers),
            "batches": -(-evaluation.num_samples // evaluator.batch_size)}


def bench_calibration(prepared, x: np.ndarray, memory: bool = True) -> dict:
    small = jittered(x, 1024)
    start = time.perf_counter()
    engine_calibration(prepared, small)
    engine_time = time.perf_counter() - start
    start = time.perf_counter()
    ort_entropy_calibration(prepared, small)
    ort_time = time.perf_counter() - start
    if not memory:
        return {"engine": engine_time, "ort": ort_time}
    return {"engine": engine_time, "ort": ort_time,
            "engine_mem": (peak_memory("engine", 1024), peak_memory("engine", 4096)),
            "ort_mem": (peak_memory("ort", 1024), peak_memory("ort", 4096))}


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

def generated_cnn28(seed: int = 0) -> onnx.ModelProto:
    """A larger CNN than the demo: 1x28x28 -> Conv 16 -> ReLU -> MaxPool -> Conv 32 -> ReLU -> MaxPool
    -> Conv 64 (valid) -> ReLU -> Flatten -> Gemm 10. He-initialised random weights (fixed seed)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(name, x, c_in, c_out, pad):
        w = rng.normal(scale=np.sqrt(2.0 / (c_in * 9)), size=(c_out, c_in, 3, 3)).astype(np.float32)
        b = rng.normal(scale=0.01, size=c_out).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                      kernel_shape=[3, 3], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"{name}.out"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    x = conv("conv1", "image", 1, 16, 1)
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv("conv2", "pool1", 16, 32, 1)
    nodes.append(helper.make_node("MaxPool", [x], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv("conv3", "pool2", 32, 64, 0)
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
    w = rng.normal(scale=np.sqrt(1.0 / 1600), size=(10, 1600)).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, "fc.weight"), numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "cnn28", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def generated_deep_mlp(blocks: int = 24, width: int = 64, seed: int = 0) -> onnx.ModelProto:
    """A deep, narrow model where building a session costs many forwards: image (N, 1, 8, 8) -> Flatten
    -> Gemm 64 -> ReLU -> `blocks` x (Gemm width -> ReLU -> + residual) -> Gemm 10. He-initialised random
    weights (fixed seed): its accuracy means nothing; only the timings are of interest."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def dense(name, x, n_in, n_out):
        w = rng.normal(scale=np.sqrt(2.0 / n_in), size=(n_out, n_in)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"),
                      numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}.bias")])
        nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.out"], name=name,
                                      transB=1))
        return f"{name}.out"

    nodes.append(helper.make_node("Flatten", ["image"], ["flat"], name="flatten"))
    x = dense("stem", "flat", 64, width)
    nodes.append(helper.make_node("Relu", [x], ["h0"], name="stem.relu"))
    x = "h0"
    for i in range(blocks):
        y = dense(f"block{i}", x, width, width)
        nodes.append(helper.make_node("Relu", [y], [f"block{i}.relu"], name=f"block{i}.relu"))
        nodes.append(helper.make_node("Add", [x, f"block{i}.relu"], [f"h{i + 1}"], name=f"block{i}.residual"))
        x = f"h{i + 1}"
    dense("head", x, width, 10)
    graph = helper.make_graph(nodes, "deep_mlp", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("head.out", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def load_bench_model(name: str):
    """(prepared, calibration split, evaluation split, description) of a benchmark model."""
    if name == "cnn":
        model_bytes, held_out = load_demo("cnn")
        return (prepare_model(onnx.load_from_string(model_bytes)), held_out.subset(np.arange(256)), held_out,
                f"demo CNN, its {held_out.num_samples} held-out digits (1x8x8)")
    if name == "transformer":
        model_bytes, held_out = load_demo("transformer")
        return (prepare_model(onnx.load_from_string(model_bytes)), held_out.subset(np.arange(256)), held_out,
                f"demo transformer (13 MatMul + 1 Gemm layers), its {held_out.num_samples} held-out digits")
    if name == "cnn28":
        x = np.random.default_rng(1).random((256 + 512, 1, 28, 28), dtype=np.float32)
        return (prepare_model(generated_cnn28()), Dataset({"image": x[:256]}), Dataset({"image": x[256:]}),
                "generated CNN on 28x28 (conv 16/32/64 + gemm, ~1.5 M multiply-adds a sample), 512 uniform samples")
    if name == "deep":
        _, held_out = load_demo("cnn")
        return (prepare_model(generated_deep_mlp()), held_out.subset(np.arange(256)), held_out,
                f"generated deep narrow MLP (26 Gemm layers, width 64, residual; random weights), "
                f"the {held_out.num_samples} held-out digits")
    raise SystemExit(f"unknown model {name!r}: cnn, cnn28, transformer or deep")


def report_model(name: str, args) -> None:
    prepared, calibration_data, evaluation, description = load_bench_model(name)
    calibration = calibrate(prepared, calibration_data)
    print(f"\n=== {description}; onnxruntime {ort.__version__}, 1 intra-op thread")
    sections = set(args.sections.split(","))
    if "evaluate" in sections:
        report_evaluate(prepared, calibration, evaluation, args)
    if "sweep" in sections:
        report_sweep(prepared, calibration_data, evaluation, args)
    if "calibration" in sections and name in ("cnn", "cnn28") and not args.no_calibration:
        report_calibration(prepared, evaluation, memory=name == "cnn")
    if "edits" in sections:
        report_edits(prepared, calibration, evaluation, args)
    if "suggest" in sections:
        g = bench_suggest(prepared, evaluation, args.sweep_repeats)
        print(f"6. suggest (min accuracy = FP32 - 2 pp or 98 % agreement, weights int8..int2; {g['steps']} steps; medians of "
              f"{args.sweep_repeats} alternating rounds)")
        print(f"   every candidate run whole (before)         {g['off']:8.3f} s")
        print(f"   candidates from their layer on (anchors)   {g['on']:8.3f} s   {g['off'] / g['on']:.2f} x faster; "
              f"same suggestion: {g['same']}")
    if "wa-sweep" in sections:
        w = bench_activation_sweep(prepared, calibration, evaluation, args.sweep_repeats)
        print(f"5. sweep of weights + input activations (every layer x {','.join(SWEEP_FORMATS)}; medians of "
              f"{args.sweep_repeats} alternating rounds; {w['suffixes']} of {w['layers']} layers ran from that layer on)")
        print(f"   activation configs whole (before)             {w['off']:8.3f} s")
        print(f"   from the layer on, input fake-quantized in numpy {w['on']:8.3f} s   {w['off'] / w['on']:.2f} x faster")


def report_evaluate(prepared, calibration, evaluation: Dataset, args) -> None:
    e = bench_evaluate(prepared, calibration, evaluation, args.repeats)
    print(f"1. evaluate one new config (W{{b}}A8, {evaluation.num_samples} samples; medians of {args.repeats * 6} "
          "interleaved rounds)")
    print(f"   plain FP32 forward        {e['fp32'] * 1e3:8.2f} ms")
    print(f"   engine evaluate()         {e['engine'] * 1e3:8.2f} ms   = {e['engine'] / e['fp32']:.2f} x FP32 forward "
          f"(weights fed in NCHWc layout: {e['reordered']})")
    print(f"   simulation session run    {e['run'] * 1e3:8.2f} ms   = {e['run'] / e['fp32']:.2f} x FP32 forward "
          "(W8A8 feeds ready: the part of evaluate() spent in onnxruntime)")
    print(f"   naive rewrite+new session {e['naive'] * 1e3:8.2f} ms   engine is {e['naive'] / e['engine']:.1f} x faster "
          f"(an evaluate() costing one FP32 forward would be {e['naive'] / e['fp32']:.1f} x)")
    print(f"   top-1 agreement engine vs naive W8A8 (graph optimizations off): {e['agree']:.4f}")


def report_sweep(prepared, calibration_data: Dataset, evaluation: Dataset, args) -> None:
    s = bench_sweep(prepared, calibration_data, evaluation, args.sweep_repeats)
    print(f"2. sweep {s['configs']} configs (every layer x {','.join(SWEEP_FORMATS)} weights; medians of "
          f"{args.sweep_repeats} rounds; {s['suffixes']} of {s['layers']} layers ran only the model from that layer on)")
    print(f"   engine (Evaluator + run_sweep; weights only: no calibration) {s['engine']:8.3f} s")
    print(f"   engine run_sweep alone (Evaluator built)   {s['sweep_only']:8.3f} s")
    print(f"   quantize_static + new session per config   {s['ort']:8.3f} s   engine is {s['ort'] / s['engine']:.1f} x "
          f"faster with its one-off setup, {s['ort'] / s['sweep_only']:.1f} x without")
    print("   per-round ratios with setup: " + ", ".join(f"{r:.1f}" for r in s["ratios"])
          + "; without: " + ", ".join(f"{r:.1f}" for r in s["ratios_alone"]))
    print(f"   floor: onnxruntime runs alone, each config from its layer on   {s['floor']:8.3f} s   "
          f"the most any exact sweep could reach: {s['ort'] / s['floor']:.1f} x")


def report_calibration(prepared, evaluation: Dataset, *, memory: bool) -> None:
    c = bench_calibration(prepared, evaluation.inputs["image"], memory=memory)
    print("3. calibration, 1,024 samples, 2,048 bins")
    print(f"   engine (one pass + minmax/percentile/mse/entropy)  {c['engine']:8.3f} s")
    print(f"   onnxruntime EntropyCalibrater(num_bins=2048)        {c['ort']:8.3f} s   engine is "
          f"{c['ort'] / c['engine']:.1f} x faster")
    if memory:
        for which in ("engine", "ort"):
            small, large = c[f"{which}_mem"]
            print(f"   peak extra RSS {which:>6}: {small / 2**20:7.2f} MiB at 1,024 samples, "
                  f"{large / 2**20:7.2f} MiB at 4,096 (x{large / small:.2f})")


def report_edits(prepared, calibration, evaluation: Dataset, args) -> None:
    d = bench_edits(prepared, calibration, evaluation, args.edits)
    print(f"4. one-cell edits of the Mixed precision table ({args.edits} edits from W8A8, one layer's weight "
          f"format each; {d['layers']} layers, {d['batches']} batch(es) a run; medians)")
    print(f"   plain FP32 forward                         {d['fp32'] * 1e3:8.2f} ms")
    print(f"   evaluate() of the edited config            {d['evaluate'] * 1e3:8.2f} ms   = "
          f"{d['evaluate'] / d['fp32']:.2f} x FP32 forward")
    print(f"   layer_errors() of the edited config        {d['errors'] * 1e3:8.2f} ms   = {d['errors'] / d['fp32']:.2f} x "
          f"FP32 forward; {d['runs']:.0f} simulation runs per edit, evaluate included")
    print(f"   both (what the page computes)              {d['both'] * 1e3:8.2f} ms   p95 {d['both_p95'] * 1e3:.2f} ms")
    print(f"   layer_errors() of a config new to an Evaluator {d['first'] * 1e3:8.2f} ms   "
          f"= {d['first'] / d['fp32']:.2f} x FP32 forward (every layer alone: {d['layers'] + 1} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="evaluate: 6 x this many interleaved runs (at most 4)")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="sweep: rounds of engine and onnxruntime")
    parser.add_argument("--models", default="cnn,cnn28,transformer",
                        help="comma-separated: cnn, transformer (demos), cnn28, deep (generated)")
    parser.add_argument("--no-calibration", action="store_true", help="skip the calibration section")
    parser.add_argument("--sections", default="evaluate,sweep,calibration,edits,wa-sweep,suggest",
                        help="comma-separated: evaluate, sweep, calibration (cnn, cnn28), edits, wa-sweep, suggest")
    parser.add_argument("--edits", type=int, default=30, help="edits: one-cell edits timed per model")
    parser.add_argument("--memory-child", nargs=2, metavar=("WHICH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    logging.disable(logging.WARNING)  # onnxruntime.quantization logs advice on the root logger for every config
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name in args.models.split(","):
        report_model(name.strip(), args)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

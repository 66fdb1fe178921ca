"""Several users at once: 8 concurrent app sessions on different models and configs, each checking its own results.

Each session is a Streamlit AppTest (the app's scripts run in this process, as on the server, sharing
its caches) driven from its own thread through the same walk: open the Model page, pick its model and
preset, then `--rounds` times visit Weights (moving the bit-width slider), Activations, Mixed precision
and the Model page. After every run the session checks that it shows no exception and no error, its own
model, its own preset, its own layer table and the same metrics a session alone computes for its
(model, preset): a difference is counted as cross-talk.

Baseline, measured in the same run: every session's walk alone, one after the other. Caches are cleared
before each solo walk and before the concurrent phase, so both start cold (calibration included) and the
concurrent phase also tests that sessions asking for the same calibration at once share it.

    /work/venv/bin/python bench/bench_load.py [--sessions 8] [--rounds 3] [--all-upload] [--max-heavy-jobs N]
    /work/venv/bin/python bench/bench_load.py --real [--rounds 1]   # users upload the real models (issue 12)

`--real`: every user uploads a model of the real-model conformance set with its data (tests/real_models/
fetch.py caches them: YOLO detector, text recogniser, MiniLM, text detector, ...), as a new user would;
the peak resident memory of each phase (solo, concurrent) and the machine's memory are printed.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import random
import resource
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import MagicMock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

TIMEOUT_S = 600
MIXED = "pages/3_Mixed_precision.py"
SENSITIVITY = "pages/5_Sensitivity.py"  # a first visit runs the default sweep: a heavy job
WALK = ["pages/1_Weights.py", "pages/2_Activations.py", MIXED, "pages/0_Model.py"]  # the landing page (st.navigation)
UPLOAD = "upload"  # a user who brings their own model and data instead of a demo
REAL = "real:"  # a user who uploads a model of the real-model conformance set ("real:yolo_det") and its data

# (model, preset): three demo models, several presets, and two users with their own uploaded model.
ASSIGNMENTS = [("mlp", "W8A8"), ("cnn", "W4A8"), ("transformer", "W8A8"), ("mlp", "FP16"),
               ("cnn", "W8 weight-only"), ("transformer", "W4A8"), (UPLOAD, "W8A8"), (UPLOAD, "FP32"),
               ("cnn", "FP32"), ("mlp", "W4A8"), ("transformer", "FP16"), ("cnn", "W8A8")]
# --real: the real models users brought in issue 12 (detector, recogniser, sentence encoder first).
REAL_ASSIGNMENTS = [(REAL + "yolo_det", "W8A8"), (REAL + "ocr_rec", "W8A8"), (REAL + "minilm", "W8A8"),
                    (REAL + "ocr_det", "W4A8"), (REAL + "ocr_cls", "W8A8"), (REAL + "silero_vad", "W8A8"),
                    (REAL + "yolo_det", "W8 weight-only"), (REAL + "ocr_rec", "W4A8")]


def real_files(name: str) -> tuple[bytes, bytes]:
    """A real model of the conformance set and its data, as cached by tests/real_models/fetch.py."""
    from tests.real_models import fetch
    model, data = fetch.model_path(name), fetch.data_path(name)
    if not (model.exists() and data.exists()):
        raise SystemExit(f"real model {name!r} is not cached: run .venv/bin/python tests/real_models/fetch.py")
    return model.read_bytes(), data.read_bytes()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current VmRSS: the next phase's own peak


def upload_files(seed: int) -> tuple[bytes, bytes]:
    """A user's own model (x (batch, 16) -> Gemm -> Relu -> Gemm -> 4 classes) and 400 samples, from `seed`."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(size=(32, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(4, 32)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"], name="hidden", transB=1),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2"], ["y"], name="head", transB=1)],
        "user", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_load")
    model.ir_version = 8
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(400, 16)).astype(np.float32),
             labels=rng.integers(0, 4, size=400).astype(np.int64))
    return model.SerializeToString(), buffer.getvalue()


@dataclass
class Outcome:
    """What one session's walk measured and found."""

    name: str
    first_run_s: float = 0.0
    rerun_s: list[float] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)  # what each rerun_s entry was
    errors: list[str] = field(default_factory=list)
    crosstalk: list[str] = field(default_factory=list)
    metrics: dict | None = None


def share_apptest_globals() -> None:
    """Let AppTest runs overlap in threads, as script runs do in one server process.

    AppTest assumes one run at a time: each run installs a fresh mock `Runtime._instance` and
    `PagesManager.uses_pages_directory`, patches a global config option, and resets all three when it
    ends, which breaks a run going on in another thread; it also compiles every page on every run
    with a new ScriptCache (concurrent `ast.parse` in CPython 3.11 then fails with "AST constructor
    recursion depth mismatch"). Here they are installed once for the whole process (one runtime and
    one script cache, as in the server) and AppTest's per-run swaps land on harmless subclasses
    instead. Nothing of the app is changed.
    """
    from streamlit import config
    from streamlit.runtime import Runtime
    from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
    from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    shared = MagicMock(spec=Runtime)
    shared.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    shared.dataframe_source_mgr = DataframeSourceManager()
    shared.cache_storage_manager = MemoryCacheStorageManager()
    Runtime._instance = shared
    PagesManager.uses_pages_directory = (ROOT / "pages").is_dir()
    config.set_option("global.appTest", True)

    class RuntimeSwaps(Runtime):  # AppTest's `Runtime._instance = ...` lands here
        pass

    class PagesManagerSwaps(PagesManager):  # and its `uses_pages_directory = None` here
        pass

    shared_scripts = ScriptCache()  # the server compiles each page once for every session
    app_test.ScriptCache = lambda: shared_scripts
    local_script_runner.ScriptCache = lambda: shared_scripts
    app_test.Runtime = RuntimeSwaps
    app_test.PagesManager = PagesManagerSwaps
    app_test.patch_config_options = lambda options: contextlib.nullcontext()


CALLS: dict[str, int] = {}  # how often each expensive core step ran (bench bookkeeping, not app state)


def count_core_calls() -> None:
    """Count calibrations and model preparations: more than one per model means a cache evicted it."""
    import quant_core.engine.calibrate
    import quant_core.model.model_io

    for module, name in ((quant_core.engine.calibrate, "calibrate"), (quant_core.model.model_io, "prepare_model")):
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            CALLS[_name] = CALLS.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(module, name, counted)


def _metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def walk(index: int, model: str, preset: str, rounds: int, reference: dict | None,
         start: threading.Barrier | None = None, sweep: bool = False) -> Outcome:
    """One user's session: pick model and preset, then `rounds` walks over the pages, checking every run."""
    outcome = Outcome(f"{index}:{model}/{preset}")
    preset_picked = False
    rng = random.Random(index)
    real = model[len(REAL):] if model.startswith(REAL) else None
    model_name = f"user{index}.onnx" if model == UPLOAD else f"{real}.onnx" if real else model
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    if start is not None:
        start.wait()

    def timed_run(where: str) -> None:
        began = time.perf_counter()
        at.run()
        outcome.rerun_s.append(time.perf_counter() - began)
        outcome.steps.append(where)
        check(where)

    def check(where: str) -> None:
        if at.exception:
            outcome.errors.append(f"{where}: exception {at.exception[0].message[:200]}")
        for error in at.error:
            outcome.errors.append(f"{where}: error {str(error.value)[:200]}")
        box = at.selectbox(key="model_choice")
        shown = box.format_func(box.value) if box.value == "uploaded" else box.value
        if shown not in (model_name, f"Uploaded: {model_name}"):
            outcome.crosstalk.append(f"{where}: the sidebar does not show this session's model {model_name}")
        if preset_picked and at.selectbox(key="config_preset").value != preset:
            outcome.crosstalk.append(f"{where}: preset {at.selectbox(key='config_preset').value} instead of {preset}")

    began = time.perf_counter()
    at.run()
    outcome.first_run_s = time.perf_counter() - began
    if model == UPLOAD or real:
        model_bytes, data_bytes = real_files(real) if real else upload_files(index)
        at.file_uploader(key="model_upload").set_value((model_name, model_bytes, "application/octet-stream"))
        at.run()
        at.file_uploader(key="data_upload").set_value((f"user{index}.npz", data_bytes, "application/octet-stream"))
    else:
        at.selectbox(key="model_choice").set_value(model)
    timed_run("pick model")
    at.selectbox(key="config_preset").set_value(preset)
    preset_picked = True
    timed_run("pick preset")
    if sweep:  # this user also runs the Sensitivity page's default sweep (a heavy job) once
        at.switch_page(SENSITIVITY)
        timed_run("Sensitivity (sweep)")
    for _ in range(rounds):
        for page in WALK:
            at.switch_page(page)
            timed_run(page)
            if page == "pages/1_Weights.py":
                at.slider(key="weights_bits").set_value(rng.randint(2, 8))
                timed_run("Weights bits")
            if page == MIXED:
                metrics = _metrics(at)
                if outcome.metrics is None:
                    outcome.metrics = metrics
                if reference is not None and metrics != reference:
                    outcome.crosstalk.append(f"Mixed precision metrics {metrics} differ from a solo session's "
                                             f"{reference}")
    return outcome


def _meminfo_mib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _clear_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--all-upload", action="store_true",
                        help="every user uploads their own model and data (more models than the caches hold)")
    parser.add_argument("--sweepers", type=int, default=0,
                        help="the first N users also open the Sensitivity page once (its default sweep: a heavy job)")
    parser.add_argument("--real", action="store_true",
                        help="every user uploads a model of the real-model conformance set and its data")
    parser.add_argument("--max-heavy-jobs", type=int, default=None,
                        help="heavy jobs (calibrations here) at once; default ui.jobs.MAX_HEAVY_JOBS")
    args = parser.parse_args()
    from ui import jobs

    if args.max_heavy_jobs is not None:
        jobs.HEAVY_JOBS = jobs.JobLimiter(args.max_heavy_jobs)
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("streamlit")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # "No runtime found" on every cache clear
    assignments = [ASSIGNMENTS[i % len(ASSIGNMENTS)] for i in range(args.sessions)]
    if args.all_upload:
        assignments = [(UPLOAD, preset) for _, preset in assignments]
    if args.real:
        assignments = [REAL_ASSIGNMENTS[i % len(REAL_ASSIGNMENTS)] for i in range(args.sessions)]
    share_apptest_globals()
    count_core_calls()

    solo: list[Outcome] = []
    began = time.perf_counter()
    for index, (model, preset) in enumerate(assignments):
        _clear_caches()
        solo.append(walk(index, model, preset, args.rounds, None, sweep=index < args.sweepers))
    solo_wall = time.perf_counter() - began
    solo_peak = _status_kib("VmHWM")

    solo_calls = dict(CALLS)
    CALLS.clear()
    _clear_caches()
    gc.collect()
    before_concurrent = _status_kib("VmRSS")
    _reset_peak()
    start = threading.Barrier(args.sessions)
    results: list[Outcome | None] = [None] * args.sessions

    def user(index: int) -> None:
        model, preset = assignments[index]
        try:
            results[index] = walk(index, model, preset, args.rounds, solo[index].metrics, start,
                                  sweep=index < args.sweepers)
        except Exception as err:  # noqa: BLE001 - counted as an error of that session
            results[index] = Outcome(f"{index}:{model}/{preset}", errors=[f"walk failed: {type(err).__name__}: {err}"])

    threads = [threading.Thread(target=user, args=(i,), name=f"user{i}") for i in range(args.sessions)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load_wall = time.perf_counter() - began
    concurrent_peak = _status_kib("VmHWM")
    concurrent = [r for r in results if r is not None]

    solo_times = [t for o in solo for t in o.rerun_s]
    load_times = [t for o in concurrent for t in o.rerun_s]
    errors = [e for o in (*solo, *concurrent) for e in o.errors]
    crosstalk = [c for o in concurrent for c in o.crosstalk] + [c for o in solo for c in o.crosstalk]
    runs = sum(len(o.rerun_s) for o in concurrent)

    print(f"{args.sessions} sessions x {args.rounds} rounds ({runs} timed reruns under load), "
          f"assignments: {', '.join(o.name for o in concurrent)}")
    print(f"{'':28}{'median ms':>10}{'p95 ms':>10}{'max ms':>10}{'wall s':>9}")
    for label, times, wall in (("solo (one session at a time)", solo_times, solo_wall),
                               (f"{args.sessions} concurrent sessions", load_times, load_wall)):
        print(f"{label:28}{1000 * statistics.median(times):10.0f}{1000 * percentile(times, 95):10.0f}"
              f"{1000 * max(times):10.0f}{wall:9.1f}")
    print(f"ratio load/solo: median x{statistics.median(load_times) / statistics.median(solo_times):.2f}, "
          f"p95 x{percentile(load_times, 95) / percentile(solo_times, 95):.2f}, "
          f"wall x{load_wall / solo_wall:.2f}")
    print(f"\n{'step':28}{'solo median':>12}{'load median':>12}{'load p95':>10}  (ms)")
    for step in dict.fromkeys(step for o in concurrent for step in o.steps):
        solo_step = [t for o in solo for w, t in zip(o.steps, o.rerun_s) if w == step]
        load_step = [t for o in concurrent for w, t in zip(o.steps, o.rerun_s) if w == step]
        print(f"{step:28}{1000 * statistics.median(solo_step):12.0f}{1000 * statistics.median(load_step):12.0f}"
              f"{1000 * percentile(load_step, 95):10.0f}")
    print(f"\nfirst page load under load: median {statistics.median([o.first_run_s for o in concurrent]):.2f} s, "
          f"solo {statistics.median([o.first_run_s for o in solo]):.2f} s")
    print(f"peak resident memory of the process (server + all sessions): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; solo phase {solo_peak / 1024:.0f} "
          f"MiB, concurrent phase {concurrent_peak / 1024:.0f} MiB (from {before_concurrent / 1024:.0f} MiB at its "
          f"start); machine: {_meminfo_mib('MemTotal')} MiB total, {_meminfo_mib('MemAvailable')} MiB available now")
    models = len({m for m, _ in assignments if m != UPLOAD}) + sum(m == UPLOAD for m, _ in assignments)
    print(f"{models} distinct models; calibrations / model preparations: solo {solo_calls.get('calibrate', 0)} / "
          f"{solo_calls.get('prepare_model', 0)}, concurrent {CALLS.get('calibrate', 0)} / "
          f"{CALLS.get('prepare_model', 0)}")
    print(f"heavy jobs at once: {jobs.HEAVY_JOBS.slots}")
    print(f"errors: {len(errors)}; cross-talk: {len(crosstalk)}")
    for line in (errors + crosstalk)[:20]:
        print(f"  {line}")
    return 1 if errors or crosstalk else 0


if __name__ == "__main__":
    sys.exit(main())

"""The few onnxruntime helpers every part shares: session options, an error's first line, a model's opset, and
memory given back (`free_after_run`, `release_free_memory`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import onnx
import onnxruntime as ort


def session_options(threads: int = 1, *, optimized_path: str | None = None, arena: bool = True) -> ort.SessionOptions:
    """Session options that share 2 cores politely: `threads` intra-op threads, sequential, no spinning, quiet.

    `optimized_path` asks onnxruntime to write the model it optimized there (what actually runs);
    `arena=False`: `free_after_run`.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return options if arena else free_after_run(options)


def free_after_run(options: ort.SessionOptions) -> ort.SessionOptions:
    """No memory arena and no memory pattern (in place): a run's tensors are allocated as computed and freed
    when read, and nothing stays allocated between runs.

    onnxruntime's defaults suit one session run again and again: the arena keeps the largest run's tensors
    for the session's life, and the memory pattern allocates one block for all the tensors it planned.
    A process holding several sessions (the engine's) then holds several largest runs, and the pattern's
    block can exceed what the tensors need at once (on the per-layer error session of a text recognizer,
    by 93 MiB for one sample). The kernels, and so the numbers, are the same.
    """
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return options


def first_line(err: BaseException) -> str:
    """The first line of an error's message (onnxruntime's run on for pages), or its type when it has none."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def model_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (1 when it imports none)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim(0)`; elsewhere nothing).

    Building a session leaves its garbage in the heap (the graph rewritten, serialized, parsed: tens of
    MB for a 10 MB model), and glibc keeps freed pages that lie between live blocks: the process's
    resident set then stays at its peak although nothing uses them. Called after each engine session is
    built (a few times per page), never per run.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

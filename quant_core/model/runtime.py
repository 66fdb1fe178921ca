"""The few onnxruntime helpers every part shares: session options, an error's first line, a model's opset."""
from __future__ import annotations

import onnx
import onnxruntime as ort


def session_options(threads: int = 1, *, optimized_path: str | None = None) -> ort.SessionOptions:
    """Session options that share 2 cores politely: `threads` intra-op threads, sequential, no spinning, quiet.

    `optimized_path` asks onnxruntime to write the model it optimized there (what actually runs).
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

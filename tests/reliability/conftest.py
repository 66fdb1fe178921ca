"""Fixtures of the reliability suite: the command line run in-process, a lab session (AppTest), demo data files."""
from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from quant_core.cli.main import main
from tests.app.conftest import downloads  # noqa: F401  (a fixture, shared with the page tests)
from tests.app.conftest import model_page_tables
from tests.app.conftest import texts as page_text
from quant_core.model.demo import load_demo

ROOT = Path(__file__).resolve().parents[2]
_REAL_OS_OPEN = os.open
TIMEOUT_S = 120
CNN_LAYERS = ["/conv1/Conv", "/conv2/Conv", "/fc/Gemm"]


@dataclass(frozen=True)
class CliResult:
    status: int
    out: str
    err: str


def run_cli(*args: str | os.PathLike) -> CliResult:
    """`python -m quant_core ARGS` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([os.fspath(arg) for arg in args])
    return CliResult(status, out.getvalue(), err.getvalue())


def assert_one_line_error(result: CliResult, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, exactly one `error: ...` line on stderr holding every fragment."""
    assert result.status == 2, (result.status, result.err)
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    """The demo models' 797 held-out digits as an .npz file (image, labels), as a user would pass it."""
    _, data = load_demo("cnn")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, image=data.inputs["image"], labels=data.labels)
    return path


# --- the app ------------------------------------------------------------------------------------

def new_session(page: str = "app.py") -> AppTest:
    """A fresh user session on `page`, run once; fails on any exception shown."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def upload(at: AppTest, key: str, name: str, content: bytes) -> AppTest:
    """Put a file into the sidebar uploader `key` and rerun, as a user dropping a file does."""
    at.file_uploader(key=key).set_value((name, content, "application/octet-stream"))
    return at.run()


def layer_names(at: AppTest) -> list[str]:
    """The layers listed on the Model page (the table with a 'layer' column)."""
    for value in model_page_tables(at):
        if "layer" in getattr(value, "columns", ()):
            return list(value["layer"])
    raise AssertionError("the Model page shows no layer table")


def current_model(at: AppTest) -> str:
    """The model in use as the sidebar shows it: a demo name, or "Uploaded: <file name>"."""
    box = at.selectbox(key="model_choice")
    return box.value if box.value != "uploaded" else box.format_func(box.value)




def assert_no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert "Traceback" not in page_text(at)


def error_texts(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error]


# --- files that must never be opened --------------------------------------------------------------

class OpenRecorder:
    """Records every path opened through builtins.open / io.open / os.open while installed."""

    def __init__(self):
        self.paths: list[str] = []

    def install(self, monkeypatch) -> OpenRecorder:
        import builtins

        real_open, real_os_open = builtins.open, os.open

        def recording_open(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):
                self.paths.append(os.fsdecode(file))
            return real_open(file, *args, **kwargs)

        def recording_os_open(path, *args, **kwargs):
            self.paths.append(os.fsdecode(path))
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", recording_open)
        monkeypatch.setattr(io, "open", recording_open)
        monkeypatch.setattr(os, "open", recording_os_open)
        return self

    def opened(self, target: Path) -> bool:
        resolved = os.path.realpath(target)
        return any(os.path.realpath(path) == resolved for path in self.paths)


def fifo_was_opened(fifo: Path, action, *, timeout_s: float = 120.0):
    """Run `action()` in a thread while watching whether anything opens the FIFO `fifo` for reading.

    Returns (opened, result or exception). Opening a FIFO for reading blocks until a writer comes,
    whether the open comes from Python or from C++ (onnx, onnxruntime). While the action runs, a
    non-blocking open for writing succeeds only if a reader has the FIFO open: that is the signal (and
    it releases the reader). A slow action is not mistaken for a blocked one.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = action()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            outcome["value"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    opened = False
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.2)
        try:
            os.close(_REAL_OS_OPEN(fifo, os.O_WRONLY | os.O_NONBLOCK))  # not seen by an OpenRecorder
            opened = True  # a reader is there
        except OSError:  # ENXIO: nobody has the FIFO open for reading
            pass
    thread.join(5)
    assert not thread.is_alive(), f"the action did not finish within {timeout_s} s"
    return opened, outcome.get("value")

"""The command line's last resort: an error nobody foresaw is still one line and exit status 2, never a traceback."""
from __future__ import annotations

import pytest

from quant_core.errors import ModelError
from tests.reliability import hostile
from tests.reliability.conftest import assert_one_line_error, run_cli, write


def _failing_run(error: BaseException):
    def run(args):
        raise error
    return run


@pytest.mark.parametrize(("error", "line"), [
    (RuntimeError("boom\n  at line 2"), "error: unexpected RuntimeError: boom at line 2"),
    (KeyError("w"), "error: unexpected KeyError: 'w'"),
    (RecursionError("maximum recursion depth exceeded"), "error: unexpected RecursionError: maximum recursion depth"),
    (AssertionError(), "error: unexpected AssertionError: (no message)"),
])
def test_an_unexpected_error_is_one_line_naming_its_type(tmp_path, monkeypatch, error, line):
    import quant_core.cli.commands.inspect as command

    monkeypatch.setattr(command, "run", _failing_run(error))
    message = assert_one_line_error(run_cli("inspect", write(tmp_path / "m.onnx", hostile.good_model())))
    assert message.startswith(line)


def test_a_lab_error_keeps_its_own_message(tmp_path, monkeypatch):
    import quant_core.cli.commands.inspect as command

    monkeypatch.setattr(command, "run", _failing_run(ModelError("tensor 'w' is corrupt: see its header")))
    message = assert_one_line_error(run_cli("inspect", write(tmp_path / "m.onnx", hostile.good_model())))
    assert message == "error: tensor 'w' is corrupt: see its header"

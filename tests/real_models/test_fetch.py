"""fetch.py's promises: pinned checksums are checked, a mismatch is one clear line, the cache is keyed by them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.real_models import fetch

pytestmark = pytest.mark.real_models


def test_a_differing_checksum_stops_with_one_line(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not the pinned model")
    with pytest.raises(fetch.ChecksumError) as caught:
        fetch._check(path, "0" * 64, "model.onnx")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("checksum mismatch for model.onnx: sha256 ")
    assert "0" * 64 in message


def test_every_cached_file_is_keyed_by_its_pinned_checksum():
    for name, spec in fetch.MANIFEST["models"].items():
        assert spec["sha256"][:16] in fetch.model_path(name).name
        assert spec["sha256"][:16] in fetch.data_path(name).name
        assert spec["wheel"] in fetch.MANIFEST["wheels"]
        assert spec["covers"] and spec["data"]
    for spec in fetch.MANIFEST["wheels"].values():
        assert len(spec["sha256"]) == 64 and spec["licence"]


def test_a_second_fetch_downloads_nothing():
    """Run after fetch.py (as .ci/run does): every model and data file is already cached."""
    done = subprocess.run([sys.executable, str(Path(fetch.__file__))], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "this run: everything was cached, nothing downloaded or built" in done.stdout.splitlines()

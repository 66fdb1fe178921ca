"""AppTest helpers: run the lab's pages from the repository root, on the shipped demo models."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60


def app_test(page: str = "app.py") -> AppTest:
    """An AppTest of `page` (relative to the repository root), not yet run."""
    return AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT_S)


def run_page(page: str = "app.py") -> AppTest:
    """Run `page` once and fail on any exception it shows."""
    at = app_test(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def tiny_model_bytes() -> bytes:
    """A two-layer MatMul model built with onnx.helper: x (batch, 4) -> /first/MatMul -> Relu -> /second/MatMul."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/first/MatMul"),
         helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="/second/MatMul")],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    return model.SerializeToString()


def tiny_data_bytes(samples: int = 300) -> bytes:
    """An .npz for `tiny_model_bytes`: input x and integer labels."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(samples, 4)).astype(np.float32),
             labels=rng.integers(0, 3, size=samples).astype(np.int64))
    return buffer.getvalue()


@pytest.fixture
def tiny_model() -> bytes:
    return tiny_model_bytes()


def texts(at: AppTest) -> str:
    """Every markdown, caption, header, metric and alert text the page shows, joined (for `in` checks)."""
    parts = [e.value for e in (*at.markdown, *at.caption, *at.header, *at.subheader, *at.title)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [str(e.value) for e in (*at.error, *at.warning, *at.info, *at.success)]
    return "\n".join(parts)


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """What each st.download_button serves, by file name (recorded as Streamlit stores it)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def record(self, path_or_data, mimetype, kind, filename=None):
        if isinstance(path_or_data, bytes):
            served[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    return served


def model_page_tables(at: AppTest) -> list:
    """The Model page's tables in page order (inputs, outputs, layers, sizes) as DataFrames.

    Small tables are static (st.table, first column as index), long ones the data grid: both read alike.
    """
    return [t.value.reset_index() for t in at.table] + [d.value for d in at.dataframe]

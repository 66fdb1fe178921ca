import functools

import onnx
import pytest

from quant_core.model.demo import load_demo
from quant_core.model.model_io import prepare_model


@functools.lru_cache(maxsize=None)
def _prepared(name):
    model_bytes, _ = load_demo(name)
    return prepare_model(onnx.load_from_string(model_bytes))


@pytest.fixture(scope="session")
def demo_prepared():
    return _prepared

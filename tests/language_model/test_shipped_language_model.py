"""The shipped language model: its files, its data's provenance, its documented FP32 perplexity, and the
weight-only methods on it (GPTQ / AWQ against RTN at 4 bits; the MatMulNBits export equal to the
simulation within 1 %). docs/language_models.md records the numbers."""
import json
import subprocess
import sys

import numpy as np
import pytest

from quant_core.model.data import split_dataset
from quant_core.model.demo import LANGUAGE_MODELS, load_demo
from quant_core.engine.language_model import (WeightOnlySpec, collect_layer_inputs, decode, encode, greedy_continuation,
                                       inference_session, measure_weight_only, model_perplexity, quantize_weights)
from quant_core.model.model_io import load_model, prepare_model
from quant_core.export.nbits import export_matmul_nbits
from quant_core.engine.tasks import TaskKind, infer_task

pytestmark = pytest.mark.slow  # a 3.3 M-parameter model: about a minute on an idle 2-core machine

DEMO = LANGUAGE_MODELS["shakespeare_lm"]
TEXT = DEMO.path.parent / "shakespeare.txt"


@pytest.fixture(scope="module")
def shipped():
    model_bytes, data = load_demo(DEMO.name)
    calibration, evaluation = split_dataset(data)
    return load_model(model_bytes), calibration, evaluation


@pytest.fixture(scope="module")
def layer_inputs(shipped):
    model, calibration, _ = shipped
    return collect_layer_inputs(model, calibration.inputs["tokens"][:64])


def test_files_are_small_and_the_model_has_a_fixed_context():
    assert DEMO.path.stat().st_size < 14 * 2**20 and DEMO.data_path.stat().st_size < 2**20
    assert TEXT.stat().st_size < 1.1 * 2**20
    info = prepare_model(load_model(DEMO.path)).info
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("tokens", ("batch", 128), "int64")]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [("logits", ("batch", 128, 128), "float32")]
    assert info.opset == 17 and infer_task(info).kind == TaskKind.LANGUAGE_MODEL
    matmuls = [layer for layer in info.layers if layer.op_type == "MatMul"]
    assert len(matmuls) == 4 * 6 + 1 and info.layers[0].op_type == "Gather"       # embedding, blocks, head
    assert 3_000_000 < info.total_params < 3_500_000


def test_the_windows_are_held_out_text_with_next_token_labels():
    # training/train_language_model.py: the last 10 % of the text, 256 windows at a fixed stride.
    text = np.frombuffer(TEXT.read_bytes(), dtype=np.uint8).astype(np.int64)
    heldout = text[int(len(text) * 0.9):]
    with np.load(DEMO.data_path, allow_pickle=False) as data:
        tokens, labels = data["tokens"], data["labels"]
    assert tokens.shape == labels.shape == (256, 128) and tokens.dtype == labels.dtype == np.int64
    stride = (len(heldout) - 129) // 256
    for i in (0, 100, 255):
        np.testing.assert_array_equal(tokens[i], heldout[i * stride:i * stride + 128])
        np.testing.assert_array_equal(labels[i], heldout[i * stride + 1:i * stride + 129])
    assert text.max() < 128                                       # ASCII: the model's byte vocabulary


def test_fp32_perplexity_is_the_documented_one(shipped):
    model, _, evaluation = shipped
    assert evaluation.num_samples == 128
    perplexity = model_perplexity(model, evaluation.inputs["tokens"], evaluation.labels)
    assert perplexity == pytest.approx(DEMO.fp32_perplexity, rel=1e-3)
    assert perplexity < 6.5                                       # it learned English, not just letter counts


def test_greedy_generation_writes_shakespeare_like_text(shipped):
    model, _, _ = shipped
    continuation = decode(greedy_continuation(inference_session(model), encode("ROMEO:\n"), 60, context=128))
    assert len(continuation) == 60 and any(word in continuation.split() for word in ("the", "and", "I", "to"))


@pytest.mark.parametrize("block_size", [32, 128])
def test_gptq_and_awq_beat_rtn_at_4_bits(shipped, layer_inputs, block_size):
    model, _, evaluation = shipped
    tokens, labels = evaluation.inputs["tokens"], evaluation.labels
    perplexity = {}
    for method in ("rtn", "gptq", "awq"):
        result, _ = measure_weight_only(model, WeightOnlySpec(method, 4, block_size), tokens, labels,
                                        inputs=layer_inputs, fp32_perplexity=DEMO.fp32_perplexity)
        perplexity[method] = result.perplexity
    assert perplexity["gptq"] < perplexity["rtn"] and perplexity["awq"] < perplexity["rtn"], perplexity


@pytest.mark.parametrize("method, bits, symmetric", [("gptq", 4, True), ("awq", 4, True), ("hqq", 4, False),
                                                     ("rtn", 8, True)])
def test_exported_matmul_nbits_perplexity_equals_the_simulation_within_1_percent(shipped, layer_inputs, method,
                                                                                  bits, symmetric):
    model, _, evaluation = shipped
    tokens, labels = evaluation.inputs["tokens"][:32], evaluation.labels[:32]
    quantized = quantize_weights(model, WeightOnlySpec(method, bits, 32, symmetric), layer_inputs)
    from quant_core.engine.language_model import simulated_model

    simulated = model_perplexity(simulated_model(model, quantized), tokens, labels)
    exported_model = export_matmul_nbits(model, quantized.layers)
    assert sum(node.op_type == "MatMulNBits" for node in exported_model.graph.node) == 25
    assert model_perplexity(exported_model, tokens, labels) == pytest.approx(simulated, rel=0.01)


def test_the_command_line_evaluates_it_with_perplexity():
    done = subprocess.run([sys.executable, "-m", "quant_core", "evaluate", str(DEMO.path), "--data",
                           str(DEMO.data_path), "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["task"]["kind"] == "language_model"
    metrics = report["score"]["metrics"]
    assert report["score"]["headline"] == "FP32 perplexity / perplexity"
    assert metrics["perplexity"] == pytest.approx(DEMO.fp32_perplexity + metrics["perplexity increase"], rel=1e-4)

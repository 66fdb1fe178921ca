"""Perplexity vs size vs latency of the exported LM variants: every exported variant is timed with
onnxruntime at the context length for each batch size; a 3-bit variant (no kernel) is simulated only."""
import pytest

from quant_core.engine.language_model import WeightOnlySpec
from quant_core.export.lm_variants import exported_variants, measure_variants
from quant_core.model.data import split_dataset
from quant_core.model.demo import load_demo
from quant_core.model.model_io import load_model

pytestmark = pytest.mark.slow


def test_exported_variants_are_timed_per_batch_and_smaller_than_fp32():
    model_bytes, data = load_demo("shakespeare_lm")
    _, evaluation = split_dataset(data)
    variants = exported_variants(load_model(model_bytes), {"int4": WeightOnlySpec("rtn", 4, 32),
                                                           "int3": WeightOnlySpec("rtn", 3, 128)})
    tokens, labels = evaluation.inputs["tokens"][:8], evaluation.labels[:8]
    measured = {m.label: m for m in measure_variants(variants, tokens, labels, batches=(1, 2), rounds=1, repeats=3)}
    fp32, int4, int3 = measured["FP32"], measured["int4"], measured["int3"]
    assert set(fp32.latency_ms) == set(int4.latency_ms) == {1, 2}
    for median, p10, p90 in (*fp32.latency_ms.values(), *int4.latency_ms.values()):
        assert 0 < p10 <= median <= p90
    assert int3.latency_ms == {} and not int3.exported and int3.file_bytes is None
    assert int4.file_bytes < fp32.file_bytes / 4 and int4.weight_bytes < fp32.weight_bytes / 5
    assert int4.perplexity == pytest.approx(fp32.perplexity, rel=0.02) and int3.perplexity > max(fp32.perplexity, int4.perplexity)

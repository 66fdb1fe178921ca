"""Measured latency: the numbers are real timings of onnxruntime runs, with the kernels that ran."""
from __future__ import annotations

import numpy as np
import pytest

from quant_core.config import PRESETS
from quant_core.errors import DataError, ModelError
from quant_core.export.ort_export import export_model
from quant_core.export.latency import measure_latency, model_size_bytes, standard_variants, static_int8_config
from tests.engine.test_export import IMAGES, calibrated, tiny_cnn, tiny_mlp


@pytest.fixture(scope="module")
def cnn():
    return calibrated(tiny_cnn())


def test_latency_result_fields_are_consistent_with_what_was_asked(cnn):
    prepared, _ = cnn
    model = prepared.model.SerializeToString()
    result = measure_latency(model, IMAGES, batch_size=4, threads=1, warmup=2, repeats=12)
    assert result.repeats == 12 and result.batch_size == 4 and result.threads == 1
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.std_ms >= 0 and result.mean_ms > 0
    assert result.size_bytes == len(model) == model_size_bytes(model)
    assert result.providers == ("CPUExecutionProvider",)
    assert "Conv" in result.kernels or "FusedConv" in result.kernels
    assert set(result.to_dict()) >= {"median_ms", "p10_ms", "p90_ms", "repeats", "batch_size", "threads",
                                      "size_bytes"}


def test_static_int8_export_reports_integer_kernels(cnn):
    prepared, calibration = cnn
    exported = export_model(prepared, static_int8_config(prepared, per_channel=True), calibration).model
    kernels = measure_latency(exported, {"image": IMAGES}, repeats=3, warmup=1).kernels
    assert "QLinearConv" in kernels and "QGemm" in kernels


def test_a_time_budget_stops_after_three_runs_at_least(cnn):
    prepared, _ = cnn
    result = measure_latency(prepared.model.SerializeToString(), IMAGES, repeats=1000, warmup=0, time_budget_s=0.0)
    assert result.repeats == 3


def test_a_batch_larger_than_the_data_repeats_the_samples(cnn):
    prepared, _ = cnn
    result = measure_latency(prepared.model.SerializeToString(), IMAGES[:5], batch_size=64, repeats=2, warmup=0)
    assert result.batch_size == 64 and result.per_sample_ms == pytest.approx(result.median_ms / 64)


def test_feeds_missing_a_model_input_are_refused_naming_it(cnn):
    prepared, _ = cnn
    with pytest.raises(DataError, match=r"model input\(s\) \['image'\]"):
        measure_latency(prepared.model.SerializeToString(), {"pixels": IMAGES}, repeats=1)


def test_bytes_that_are_not_a_model_give_one_line_model_error():
    with pytest.raises(ModelError, match="onnxruntime cannot load the model") as caught:
        measure_latency(b"not an onnx model", IMAGES, repeats=1)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"threads": 0}, {"repeats": 0}])
def test_invalid_measurement_settings_are_refused(cnn, kwargs):
    prepared, _ = cnn
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        measure_latency(prepared.model.SerializeToString(), IMAGES, **kwargs)


def test_standard_variants_cover_the_usual_kinds_and_every_built_model_runs(cnn):
    prepared, calibration = cnn
    variants = standard_variants(prepared, calibration, PRESETS["W4A8"])
    names = [v.name for v in variants]
    assert names == ["FP32", "FP16", "Dynamic INT8", "Static INT8 per-tensor", "Static INT8 per-channel",
                     "4-bit weight-only (MatMulNBits)", "Current config (W4A8)"]
    current = variants[-1]
    assert current.simulated and "simulated only" in current.note  # int4 weights have no onnxruntime kernel
    for variant in variants:
        assert variant.model is not None, variant.note
        assert measure_latency(variant.model, IMAGES, repeats=1, warmup=0).median_ms > 0


def test_standard_variants_skip_4_bit_when_there_is_no_matmul_or_gemm():
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(np.ones((10, 1, 8, 8), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["image", "w"], ["c"], name="conv"),
                               helper.make_node("Flatten", ["c"], ["logits"], name="flatten")], "conv",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    prepared, calibration = calibrated(model)
    names = [v.name for v in standard_variants(prepared, calibration, PRESETS["FP32"])]
    assert "4-bit weight-only (MatMulNBits)" not in names and len(names) == 6


def test_mlp_variants_include_4_bit_matmul_nbits():
    prepared, calibration = calibrated(tiny_mlp())
    variants = standard_variants(prepared, calibration, PRESETS["FP32"])
    nbits = next(v for v in variants if v.name.startswith("4-bit"))
    assert nbits.model is not None and "MatMulNBits" in measure_latency(nbits.model, IMAGES, repeats=1).kernels


# --- command line -----------------------------------------------------------------------------------------------


def test_cli_bench_json_has_the_documented_keys(tmp_path, capsys):
    import json

    import onnx

    from quant_core.cli.main import main
    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), str(path))
    assert main(["bench", str(path), "--batch", "8", "--threads", "1", "--repeats", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p10_ms", "p90_ms", "repeats", "batch_size", "threads", "size_bytes"} <= set(report)
    assert report["repeats"] == 5 and report["batch_size"] == 8 and report["size_bytes"] == path.stat().st_size
    from quant_core.numerics.cpu_target import probe_int8_kernels
    assert report["int8_kernels"]["saturates"] == probe_int8_kernels().saturates
    assert report["int8_kernels"]["target"] in ("no-saturation", "saturating-x86")


def test_cli_bench_of_a_missing_file_exits_2_with_one_line(tmp_path, capsys):
    from quant_core.cli.main import main
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def demo_cnn_bytes():
    from quant_core.model.demo import load_demo
    return load_demo("cnn")


def test_model_accuracy_is_the_share_of_samples_whose_top1_is_the_label(demo_cnn_bytes):
    import onnxruntime as ort
    from quant_core.export.latency import model_accuracy
    model, data = demo_cnn_bytes
    logits = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, data.inputs)[0]
    expected = float(np.mean(logits.argmax(axis=1) == data.labels))
    assert model_accuracy(model, data) == pytest.approx(expected, abs=1e-12)
    assert model_accuracy(model, data, batch_size=100) == model_accuracy(model, data)  # a last partial batch counts
    assert 0.9 < expected <= 1.0


def test_model_accuracy_without_labels_is_none(demo_cnn_bytes):
    from quant_core.model.data import Dataset
    from quant_core.export.latency import model_accuracy
    model, data = demo_cnn_bytes
    assert model_accuracy(model, Dataset(inputs=data.inputs)) is None


def test_model_accuracy_runs_a_fixed_batch_model_whole_batches_only():
    import onnxruntime as ort
    from quant_core.model.data import Dataset
    from quant_core.export.latency import model_accuracy
    from tests.engine.conftest import chain_model
    model = chain_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 7  # exactly 7 samples a run
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    labels = np.zeros(20, dtype=np.int64)
    labels[:7] = session.run(None, {"x": x[:7]})[0].argmax(axis=1)  # first batch: all right
    labels[7:14] = (session.run(None, {"x": x[7:14]})[0].argmax(axis=1) + 1) % 3  # second batch: all wrong
    # samples 14..19 make a partial batch the model cannot run: not counted
    assert model_accuracy(model, Dataset(inputs={"x": x}, labels=labels)) == 0.5


def test_model_accuracy_names_what_is_wrong_with_the_data_in_one_line(demo_cnn_bytes):
    from quant_core.model.data import Dataset
    from quant_core.export.latency import model_accuracy
    model, data = demo_cnn_bytes
    with pytest.raises(DataError, match=r"no array for model input\(s\) \['image'\]"):
        model_accuracy(model, Dataset(inputs={"pixels": data.inputs["image"]}, labels=data.labels))
    with pytest.raises(DataError, match="onnxruntime cannot run the model on this data") as error:
        model_accuracy(model, Dataset(inputs={"image": data.inputs["image"][:, :, :4]}, labels=data.labels))
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="onnxruntime cannot load the model"):
        model_accuracy(b"not a model", data)

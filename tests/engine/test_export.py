"""Real quantized export: onnxruntime runs it with integer kernels, with our scales, and only what the config says."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.engine.calibrate import calibrate
from quant_core.config import LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.cpu_target import CpuTarget
from quant_core.export.ort_export import (export_dynamic_int8, export_fp16, export_matmul_nbits, export_model, overrides_path,
                               save_export)
from quant_core.numerics.formats import Granularity, parse_format
from quant_core.export.latency import create_session, static_int8_config
from quant_core.model.model_io import prepare_model
from quant_core.export.overrides import ort_overrides, overrides_from_json, overrides_to_json, tensor_quant_overrides
from quant_core.numerics.qparams import qparams_from_range
from quant_core.engine.simulate import ActivationQuant

# --- tiny models -----------------------------------------------------------------------------------------------


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inits):
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tiny_cnn(seed=0) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    f32 = np.float32
    inits = [_init("w1", r.normal(0, .5, (4, 1, 3, 3)).astype(f32)), _init("b1", r.normal(0, .1, 4).astype(f32)),
             _init("w2", r.normal(0, .3, (8, 4, 3, 3)).astype(f32)), _init("b2", r.normal(0, .1, 8).astype(f32)),
             _init("w3", r.normal(0, .2, (10, 32)).astype(f32)), _init("b3", r.normal(0, .1, 10).astype(f32))]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1)]
    return _model(nodes, inits)


def tiny_mlp(seed=0) -> onnx.ModelProto:
    r = np.random.default_rng(seed)
    f32 = np.float32
    inits = [_init("shape", np.array([-1, 64], np.int64)),
             _init("w1", r.normal(0, .3, (64, 32)).astype(f32)), _init("b1", r.normal(0, .1, 32).astype(f32)),
             _init("w2", r.normal(0, .3, (32, 10)).astype(f32)), _init("b2", r.normal(0, .1, 10).astype(f32))]
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["x"], name="reshape"),
             helper.make_node("MatMul", ["x", "w1"], ["m1"], name="fc1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="fc1_bias"),
             helper.make_node("Relu", ["a1"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w2"], ["m2"], name="fc2"),
             helper.make_node("Add", ["m2", "b2"], ["logits"], name="fc2_bias")]
    return _model(nodes, inits)


def prepare(model: onnx.ModelProto):
    return prepare_model(model)


def calibrated(model: onnx.ModelProto):
    prepared = prepare(model)
    return prepared, calibrate(prepared, {"image": IMAGES})


IMAGES = np.random.default_rng(1).random((64, 1, 8, 8)).astype(np.float32)


def run(model_bytes: bytes, x=IMAGES) -> np.ndarray:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]


def optimized_ops(model_bytes: bytes) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def node(model_bytes: bytes, name: str) -> onnx.NodeProto:
    return next(n for n in onnx.load_from_string(model_bytes).graph.node if n.name == name)


PRESETS_W8A8 = static_int8_config(None, per_channel=True)
W8A8_PER_TENSOR = QuantConfig(LayerQuant(TensorQuant(parse_format("int8")),
                                         TensorQuant(parse_format("uint8"), symmetric=False)), name="w8a8")


@pytest.fixture(scope="module")
def cnn():
    return calibrated(tiny_cnn())


@pytest.fixture(scope="module")
def mlp():
    return calibrated(tiny_mlp())


# --- static QDQ ------------------------------------------------------------------------------------------------


def test_w8a8_cnn_export_is_qdq_and_runs_integer_kernels_only(cnn):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration, calibration_data=IMAGES)
    ops = {n.op_type for n in onnx.load_from_string(result.model).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    optimized = optimized_ops(result.model)
    assert optimized.count("QLinearConv") == 2 and "QGemm" in optimized
    assert not {"Conv", "FusedConv", "Gemm", "FusedGemm"} & set(optimized)
    assert result.kind == "static_qdq" and result.simulated_only == ()


def test_w8a8_mlp_export_runs_qgemm_for_both_matmul_layers(mlp):
    prepared, calibration = mlp
    result = export_model(prepared, static_int8_config(prepared, per_channel=True), calibration)
    optimized = optimized_ops(result.model)
    assert optimized.count("QGemm") == 2
    assert not {"MatMul", "Gemm", "FusedGemm"} & set(optimized)
    # 2-D MatMul + Add(bias) becomes one Gemm first; otherwise the last layer would stay a float Gemm.
    assert any(note.startswith("fc2: MatMul + Add(bias) exported as one Gemm") for note in result.notes)


def test_exported_activation_scale_and_zero_point_are_ours_bit_for_bit(cnn):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration)
    model = onnx.load_from_string(result.model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize_input = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    tq = W8A8_PER_TENSOR.default.activations
    found = calibration.range_for("image", tq)
    scale, zero_point = qparams_from_range(found.lo, found.hi, tq.format, symmetric=False)
    assert inits[quantize_input.input[1]].tobytes() == scale.astype(np.float32).tobytes()
    assert int(inits[quantize_input.input[2]]) == int(zero_point)
    assert inits[quantize_input.input[2]].dtype == np.uint8


def test_calibration_data_changes_nothing_since_every_range_is_ours_but_must_name_the_inputs(cnn):
    from quant_core.errors import ModelError
    prepared, calibration = cnn
    as_float64 = export_model(prepared, W8A8_PER_TENSOR, calibration, calibration_data=IMAGES.astype(np.float64))
    assert as_float64.model == export_model(prepared, W8A8_PER_TENSOR, calibration).model
    with pytest.raises(ModelError, match=r"no array for model input\(s\) \['image'\]"):
        export_model(prepared, W8A8_PER_TENSOR, calibration, calibration_data={"pixels": IMAGES})


@pytest.mark.parametrize("target, quant_type, zero_point", [(CpuTarget.NO_SATURATION, "QInt8", 0),
                                                           (CpuTarget.SATURATING_X86, "QUInt8", 128)])
def test_per_channel_weights_get_one_scale_per_output_channel_stored_for_the_target(cnn, target, quant_type,
                                                                                    zero_point):
    prepared, calibration = cnn
    config = replace(static_int8_config(prepared, per_channel=True), target=target)
    overrides = tensor_quant_overrides(prepared, config, calibration)
    assert len(overrides["w2"]) == 8 and {entry["axis"] for entry in overrides["w2"]} == {0}
    w2 = numpy_helper.to_array(next(i for i in prepared.model.graph.initializer if i.name == "w2"))
    expected, _ = qparams_from_range(w2.reshape(8, -1).min(1), w2.reshape(8, -1).max(1), parse_format("int8"),
                                     symmetric=True)
    assert [entry["scale"] for entry in overrides["w2"]] == [float(s) for s in expected]  # the same grid
    assert {entry["zero_point"] for entry in overrides["w2"]} == {zero_point}
    assert {entry["quant_type"] for entry in overrides["w2"]} == {quant_type}


def test_fp32_fallback_layer_stays_float_and_the_others_integer(cnn):
    prepared, calibration = cnn
    config = W8A8_PER_TENSOR.with_layer("conv2", LayerQuant())
    result = export_model(prepared, config, calibration)
    conv2 = node(result.model, "conv2")
    assert conv2.input[1] == "w2"  # the original float initializer
    optimized = optimized_ops(result.model)
    assert optimized.count("QLinearConv") == 1 and ({"Conv", "FusedConv"} & set(optimized))
    assert "w2" not in tensor_quant_overrides(prepared, config, calibration)


def test_formats_without_onnxruntime_kernel_stay_fp32_and_are_listed_as_simulated_only(cnn):
    prepared, calibration = cnn
    int4 = LayerQuant(TensorQuant(parse_format("int4")), TensorQuant(parse_format("uint8"), symmetric=False))
    ternary = LayerQuant(TensorQuant(parse_format("ternary")))
    config = W8A8_PER_TENSOR.with_layer("conv1", int4).with_layer("fc", ternary)
    result = export_model(prepared, config, calibration)
    assert result.simulated_only == ("conv1", "fc")
    assert node(result.model, "conv1").input[1] == "w1" and node(result.model, "fc").input[1] == "w3"
    assert any("conv1: simulated only" in note and "int4" in note for note in result.notes)


def test_per_channel_on_an_input_axis_is_simulated_only_with_the_reason(mlp):
    prepared, calibration = mlp
    axis0 = LayerQuant(TensorQuant(parse_format("int8"), granularity=Granularity.PER_CHANNEL, axis=0),
                       TensorQuant(parse_format("uint8"), symmetric=False))
    result = export_model(prepared, QuantConfig(axis0), calibration)
    assert result.simulated_only == ("fc1", "fc2")
    assert any("output-channel axis 1" in note for note in result.notes)


def residual_block(seed=0) -> onnx.ModelProto:
    """x (batch, 16) -> MatMul(w) -> h; y = h + x: the residual Add reads the MatMul's input too (as in BERT)."""
    w = np.random.default_rng(seed).normal(0, 0.3, (16, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"), helper.make_node("Add", ["h", "x"], ["y"], name="residual")],
        "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])], [_init("w", w)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_residual_reader_of_a_quantized_layer_input_reads_the_float_tensor_as_in_the_simulation():
    from quant_core.engine.evaluate import Evaluator
    x = {"x": np.random.default_rng(2).normal(size=(64, 16)).astype(np.float32)}
    prepared = prepare(residual_block())
    calibration = calibrate(prepared, x)
    config = PRESETS_W8A8
    result = export_model(prepared, config, calibration)
    add = node(result.model, "residual")
    assert "x" in add.input  # not the DequantizeLinear output onnxruntime's quantizer wires to every reader
    exported = create_session(result.model).run(None, x)[0]
    simulated = Evaluator(prepared, calibration, x).outputs(config)[0]
    fp32 = create_session(prepared.model.SerializeToString()).run(None, x)[0]
    # Only integer accumulation and the float output scale differ from the simulation, not a quantized residual.
    assert np.abs(exported - simulated).max() < 0.05 * np.abs(simulated - fp32).max()


def test_weight_only_int8_layers_store_int8_weights_behind_dequantize_linear(cnn):
    prepared, calibration = cnn
    config = QuantConfig(LayerQuant(TensorQuant(parse_format("int8"), granularity=Granularity.PER_CHANNEL)))
    result = export_model(prepared, config, calibration)
    model = onnx.load_from_string(result.model)
    inits = {i.name: i for i in model.graph.initializer}
    assert inits["conv1.weight_quantized"].data_type == TensorProto.INT8
    assert "w1" not in inits
    assert np.abs(run(result.model) - run(prepared.model.SerializeToString())).max() < 0.05


def test_export_agrees_with_the_simulation_session(cnn):
    from quant_core.engine.evaluate import Evaluator

    prepared, calibration = cnn
    config = static_int8_config(prepared, per_channel=True)  # target auto: this machine's kernels
    evaluator = Evaluator(prepared, calibration, {"image": IMAGES})
    simulated = evaluator.outputs(config)[0]
    exported = run(export_model(prepared, config, calibration).model)
    fp32 = run(prepared.model.SerializeToString())
    # Integer accumulation and the int32 bias differ from float32 maths by at most a rounding step here and there.
    assert np.abs(exported - simulated).max() < 0.25 * np.abs(simulated - fp32).max()
    assert (exported.argmax(1) == simulated.argmax(1)).mean() >= 0.98


# --- overrides JSON -----------------------------------------------------------------------------------------


def test_overrides_json_round_trips(cnn):
    prepared, calibration = cnn
    overrides = tensor_quant_overrides(prepared, static_int8_config(prepared, per_channel=True), calibration)
    text = overrides_to_json(overrides)
    assert overrides_from_json(text) == overrides
    assert json.loads(text)["image"][0]["quant_type"] == "QUInt8"


def test_overrides_fed_to_quantize_static_reproduce_the_export(cnn, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    prepared, calibration = cnn
    config = static_int8_config(prepared, per_channel=True)
    result = export_model(prepared, config, calibration)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": IMAGES[:8]}])

        def get_next(self):
            return next(self.batches, None)

    overrides = overrides_from_json(overrides_to_json(result.overrides))
    out = tmp_path / "user.onnx"
    quantize_static(tiny_cnn(), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv", "Gemm", "Relu"], nodes_to_quantize=["conv1", "relu1", "conv2",
                                                                                       "relu2", "fc"],
                    extra_options={"TensorQuantOverrides": ort_overrides(overrides), "ActivationSymmetric": False,
                                   "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                                   "QDQDisableWeightAdjustForInt32Bias": True})
    theirs = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    ours = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(result.model).graph.initializer}
    assert theirs.keys() == ours.keys()
    for name in ours:
        assert theirs[name].tobytes() == ours[name].tobytes(), name
    assert np.array_equal(run(out.read_bytes()), run(result.model))


def test_overrides_with_an_unknown_quant_type_are_refused():
    with pytest.raises(ValueError, match="quant_type 'QInt3'"):
        overrides_from_json('{"x": [{"quant_type": "QInt3", "scale": 1.0, "zero_point": 0}]}')


# --- standard kinds -------------------------------------------------------------------------------------------


def test_dynamic_int8_export_runs_integer_matmuls_close_to_fp32(mlp):
    prepared, _ = mlp
    result = export_dynamic_int8(prepared)
    fp32 = run(prepared.model.SerializeToString())
    assert result.kind == "dynamic_int8"
    assert "DynamicQuantizeMatMul" in optimized_ops(result.model)
    assert np.abs(run(result.model) - fp32).max() < 0.05 * np.abs(fp32).max()


def test_dynamic_int8_for_the_saturating_target_stores_uint8_weights_on_the_same_grid(mlp):
    from quant_core.numerics.cpu_target import probe_int8_kernels
    prepared, _ = mlp
    signed = export_dynamic_int8(prepared, target=CpuTarget.NO_SATURATION)
    unsigned = export_dynamic_int8(prepared, target=CpuTarget.SATURATING_X86)
    inits = {i.name: i for i in onnx.load_from_string(unsigned.model).graph.initializer}
    zero_points = [onnx.numpy_helper.to_array(i) for name, i in inits.items() if name.endswith("_zero_point")]
    assert zero_points and all(z.dtype == np.uint8 and set(z.reshape(-1)) == {128} for z in zero_points)
    assert any("stored as uint8" in note for note in unsigned.notes)
    fp32 = run(prepared.model.SerializeToString())
    if probe_int8_kernels().saturates:  # u8 x s8 pairs overflow here: the uint8 export is the closer one
        assert np.abs(run(unsigned.model) - fp32).max() <= np.abs(run(signed.model) - fp32).max()
    else:  # exact kernels: the same grid gives the same outputs
        np.testing.assert_allclose(run(unsigned.model), run(signed.model), rtol=1e-6, atol=1e-6)


def test_fp16_export_keeps_float32_io_and_is_close_to_fp32(cnn):
    prepared, _ = cnn
    result = export_fp16(prepared)
    model = onnx.load_from_string(result.model)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {i.data_type for i in model.graph.initializer if i.name.startswith("w")} == {TensorProto.FLOAT16}
    fp32 = run(prepared.model.SerializeToString())
    assert np.abs(run(result.model) - fp32).max() < 0.01 * np.abs(fp32).max()


def test_matmul_nbits_export_converts_gemm_and_matmul_layers(cnn, mlp):
    for prepared, count in ((cnn[0], 1), (mlp[0], 2)):
        result = export_matmul_nbits(prepared, bits=4, block_size=32)
        ops = [n.op_type for n in onnx.load_from_string(result.model).graph.node]
        assert ops.count("MatMulNBits") == count
        fp32 = run(prepared.model.SerializeToString())
        assert np.abs(run(result.model) - fp32).max() < 0.2 * np.abs(fp32).max()


def test_matmul_nbits_refuses_a_model_without_matmul_layers():
    inits = [_init("w", np.ones((10, 1, 8, 8), np.float32))]
    model = _model([helper.make_node("Conv", ["image", "w"], ["c"], name="conv"),
                    helper.make_node("Flatten", ["c"], ["logits"], name="flatten")], inits)
    with pytest.raises(ValueError, match="no MatMul or Gemm layer"):
        export_matmul_nbits(prepare(model))


# --- saving -----------------------------------------------------------------------------------------------------


def test_save_export_writes_the_model_and_the_overrides_beside_it(cnn, tmp_path):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration)
    model_path, json_path = save_export(result, tmp_path / "out.onnx")
    assert json_path == str(tmp_path / "out.overrides.json") == overrides_path(model_path)
    assert (tmp_path / "out.onnx").read_bytes() == result.model
    assert json.loads((tmp_path / "out.overrides.json").read_text()) == result.overrides


def test_save_export_leaves_no_partial_file_when_writing_fails(cnn, tmp_path, monkeypatch):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration)
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_export(result, target)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


@pytest.mark.parametrize("failing", ["model-write", "json-write", "model-replace"])
def test_a_failed_save_never_leaves_a_new_overrides_json_beside_an_old_model(cnn, tmp_path, monkeypatch, failing):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration)
    target, json_target = tmp_path / "out.onnx", tmp_path / "out.overrides.json"
    target.write_bytes(b"previous model")
    json_target.write_text("{}")
    real_fsync, real_replace, fsyncs = os.fsync, os.replace, []

    def fsync(handle):  # the first flush is the model's, the second the JSON's
        fsyncs.append(handle)
        if (failing, len(fsyncs)) in (("model-write", 1), ("json-write", 2)):
            raise OSError(28, "No space left on device")
        real_fsync(handle)

    def replace(src, dst):
        if failing == "model-replace" and os.fspath(dst).endswith(".onnx"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        save_export(result, target)
    assert target.read_bytes() == b"previous model" and json_target.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.overrides.json"]  # no temporary left


def test_save_export_replaces_the_model_before_its_overrides(cnn, tmp_path, monkeypatch):
    prepared, calibration = cnn
    result = export_model(prepared, W8A8_PER_TENSOR, calibration)
    real_replace, order = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst: (order.append(os.path.basename(dst)), real_replace(src, dst)))
    save_export(result, tmp_path / "out.onnx")
    assert order == ["out.onnx", "out.overrides.json"]


# --- command line -----------------------------------------------------------------------------------------------


@pytest.fixture()
def files(tmp_path):
    model = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), str(model))
    data = tmp_path / "data.npz"
    np.savez(data, image=IMAGES)
    return model, data


def test_cli_export_writes_model_and_overrides_and_lists_simulated_only_layers(files, tmp_path, capsys):
    from quant_core.cli.main import main
    model, data = files
    config = tmp_path / "config.json"
    config.write_text(W8A8_PER_TENSOR.with_layer("fc", LayerQuant(TensorQuant(parse_format("int3")))).to_json())
    out = tmp_path / "out.onnx"
    assert main(["export", str(model), "--data", str(data), "--config", str(config), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "simulated only, kept FP32 in the export: fc" in printed
    assert "integer kernels (int8 weights, 8-bit activations): 2 of 3 layer(s)" in printed
    assert "QLinearConv" in optimized_ops(out.read_bytes())
    assert "w1" in json.loads((tmp_path / "out.overrides.json").read_text())


def test_cli_export_for_the_saturating_target_stores_uint8_weights_and_says_so(files, tmp_path, capsys):
    from quant_core.cli.main import main
    model, data = files
    out = tmp_path / "out.onnx"
    assert main(["export", str(model), "--data", str(data), "--config", "W8A8", "--target", "saturating-x86",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "target saturating-x86: int8 weights of integer-kernel layers stored as uint8" in printed
    assert "store their int8 weights as uint8 (zero point + 128, the same grid)" in printed
    inits = {i.name: i for i in onnx.load(str(out)).graph.initializer}
    codes = onnx.numpy_helper.to_array(inits["w2_quantized"])
    assert codes.dtype == np.uint8 and set(onnx.numpy_helper.to_array(inits["w2_zero_point"]).reshape(-1)) == {128}
    assert "QLinearConv" in optimized_ops(out.read_bytes())


@pytest.mark.parametrize("argv, message", [
    (["--config", "W8A8"], "--kind static needs --data"),
    (["--data", "MODEL", "--config", "W8A8"], "not a readable .npz file"),
    (["--data", "DATA", "--config", "nope.json"], "neither a config file nor a preset"),
])
def test_cli_export_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, message):
    from quant_core.cli.main import main
    model, data = files
    argv = [{"MODEL": str(model), "DATA": str(data)}.get(a, a) for a in argv]
    assert main(["export", str(model), *argv, "-o", str(tmp_path / "out.onnx")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out.onnx").exists()

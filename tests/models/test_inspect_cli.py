"""`python -m quant_core inspect MODEL.onnx [--json]`."""
import json
import subprocess
import sys

from quant_core.cli.main import main
from quant_core.model.demo import DEMO_MODELS
from tests.models import graphs


def test_json_lists_inputs_outputs_and_layers_with_stable_keys(capsys):
    assert main(["inspect", str(DEMO_MODELS["cnn"].path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"inputs", "outputs", "opset", "ir_version", "producer", "already_quantized",
                           "quantized_ops", "total_params", "layers", "notes"}
    assert report["inputs"] == [{"name": "image", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert report["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    assert (report["opset"], report["already_quantized"], report["total_params"]) == (17, False, 7690)
    conv1 = report["layers"][0]
    assert conv1 == {"layer": "/conv1/Conv", "op_type": "Conv",
                     "weights": [{"name": "conv1.weight", "shape": [16, 1, 3, 3], "dtype": "float32"}],
                     "bias": {"name": "conv1.bias", "shape": [16]}, "params": 160, "input": "image", "note": ""}


def test_json_reports_an_already_quantized_model(tmp_path, capsys):
    path = tmp_path / "qdq.onnx"
    path.write_bytes(graphs.qdq_model().SerializeToString())
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["already_quantized"] is True
    assert report["quantized_ops"] == ["DequantizeLinear", "QuantizeLinear"]
    assert report["layers"][0]["weights"] == []


def test_text_output_has_one_row_per_layer(capsys):
    assert main(["inspect", str(DEMO_MODELS["mlp"].path)]) == 0
    out = capsys.readouterr().out
    assert "image  (batch, 1, 8, 8)  float32" in out
    assert "already quantized: no" in out
    rows = [line for line in out.splitlines() if line.startswith("/fc")]
    assert [row.split()[0] for row in rows] == ["/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"]


def test_bad_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"definitely not onnx")
    result = subprocess.run([sys.executable, "-m", "quant_core", "inspect", str(path), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: 'broken.onnx' is not a valid ONNX model")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_json_writes_unknown_dims_as_null_and_lists_runtime_weight_layers(tmp_path, capsys):
    model = graphs.constant_of_shape_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # batch dim: neither a size nor a name
    path = tmp_path / "runtime.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["shape"] == [None, 4]
    assert report["layers"] == [{"layer": "matmul", "op_type": "MatMul", "weights": [], "bias": None, "params": 0,
                                 "input": "x", "note": "no static weights (computed at run time)"}]

"""MatMulNBits with our integers, scales and zero points (quant_core/nbits_export.py): onnxruntime's
kernel computes x @ effective_weight() for every method, on tiny onnx.helper graphs."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quant_core.errors import ModelError
from quant_core.export.nbits import export_matmul_nbits, pack_bits
from quant_core.numerics.weight_only import WeightOnlyMethod, quantize_weight

K, N = 256, 24


def matmul_model(w: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, N])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_pack_bits_is_low_first():
    np.testing.assert_array_equal(pack_bits(np.array([1, 2, 3, 15]), 4), [0x21, 0xF3])
    np.testing.assert_array_equal(pack_bits(np.array([1, 2, 3]), 4), [0x21, 0x03])     # padded with 0
    np.testing.assert_array_equal(pack_bits(np.array([1, 2, 3, 0]), 2), [0b00111001])
    np.testing.assert_array_equal(pack_bits(np.array([7, 200]), 8), [7, 200])


@pytest.mark.parametrize("method", list(WeightOnlyMethod))
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("block_size", [32, 128])
def test_exported_layer_computes_the_simulated_weight(method, bits, symmetric, block_size):
    rng = np.random.default_rng(bits * block_size)
    w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    x = rng.normal(size=(4, 3, K)).astype(np.float32) * np.linspace(0.2, 5.0, K, dtype=np.float32)
    quantized = quantize_weight(w, method, bits=bits, block_size=block_size, symmetric=symmetric,
                                inputs=x.reshape(-1, K))
    exported = export_matmul_nbits(matmul_model(w), {"fc": quantized})
    assert [node.op_type for node in exported.graph.node][-1] == "MatMulNBits"
    assert "w" not in {init.name for init in exported.graph.initializer}            # the FP32 weight is gone
    expected = x @ quantized.effective_weight()
    np.testing.assert_allclose(run(exported, x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_awq_exports_a_mul_by_the_inverse_factors_before_the_matmul_nbits():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(K, N)) * 0.05).astype(np.float32)
    x = rng.normal(size=(512, K)).astype(np.float32)
    x[:, :3] *= 30
    quantized = quantize_weight(w, "awq", bits=4, inputs=x)
    assert quantized.input_scale is not None
    exported = export_matmul_nbits(matmul_model(w), {"fc": quantized})
    assert [node.op_type for node in exported.graph.node] == ["Mul", "MatMulNBits"]


def test_three_bits_is_refused_for_export_in_one_line():
    w = np.ones((K, N), dtype=np.float32)
    with pytest.raises(ModelError, match="3-bit weights have no MatMulNBits kernel in onnxruntime"):
        export_matmul_nbits(matmul_model(w), {"fc": quantize_weight(w, "rtn", bits=3)})


def test_the_largest_matmul_or_gemm_weight_is_found_inputs_first():
    from quant_core.engine.language_model import largest_matmul_weight

    w = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)                       # Gemm transB: [N, K]
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
                              [numpy_helper.from_array(w, "w")])
    name, weight = largest_matmul_weight(helper.make_model(graph))
    assert name == "fc" and weight.shape == (4, 6)
    np.testing.assert_array_equal(weight, w.T)

"""Export weight-only quantized MatMul layers as onnxruntime's MatMulNBits with our own integers.

onnxruntime's quantizer (`matmul_nbits_quantizer`) computes its own integers; GPTQ, AWQ and HQQ choose
theirs, so the node is built here from a `GroupQuantized` (com.microsoft MatMulNBits, opset 1):

- B: uint8 [N, k_blocks, block_size * bits / 8], each output column's integers along K, packed
  low-first (4-bit: element 2i in the low nibble of byte i, 2i+1 in the high nibble);
- scales: float32 [N * k_blocks] (column-major over blocks, like B);
- zero_points: omitted when every group uses the default 2**(bits-1) (symmetric); uint8 packed like B
  per column ([N * ceil(k_blocks * bits / 8)]); float32 [N * k_blocks] when they are real (HQQ);
- attributes K, N, bits, block_size.

AWQ's per-input-channel factors become a Mul by 1 / s on the layer's input, before the MatMulNBits.
The dequantized weight is then exactly `GroupQuantized.effective_weight()`, the simulation's.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quant_core.engine.plan import MATMUL_NBITS_BITS  # noqa: F401  (re-exported: the bit widths it runs)
from quant_core.errors import ModelError
from quant_core.numerics.weight_only import GroupQuantized, WeightOnlyMethod

MS_DOMAIN = "com.microsoft"


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned integers along the last axis, low-first, 8 / bits per byte (the last axis padded with 0)."""
    per_byte = 8 // bits
    q = np.asarray(q, dtype=np.uint8)
    pad = (-q.shape[-1]) % per_byte
    if pad:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (pad,), dtype=np.uint8)], axis=-1)
    q = q.reshape(q.shape[:-1] + (-1, per_byte))
    packed = np.zeros(q.shape[:-1], dtype=np.uint8)
    for i in range(per_byte):
        packed |= (q[..., i] << (bits * i)).astype(np.uint8)
    return packed


def nbits_initializers(quantized: GroupQuantized, prefix: str) -> tuple[list[onnx.TensorProto], list[str]]:
    """Return MatMulNBits' initializers (B, scales, optional zero points) and its input names after A."""
    if quantized.bits not in MATMUL_NBITS_BITS:
        raise ModelError(f"{quantized.bits}-bit weights have no MatMulNBits kernel in onnxruntime "
                         f"(it runs {', '.join(map(str, MATMUL_NBITS_BITS))} bits): they are simulated only")
    k, n = quantized.shape
    block = quantized.block_size
    groups = quantized.scale.shape[0]
    q = np.zeros((groups * block, n), dtype=np.uint8)
    q[:k] = quantized.q
    # Padding rows of the last block: integer = zero point, so they dequantize to 0 whatever A holds there.
    if groups * block > k:
        q[k:] = np.round(quantized.zero_point[-1]).astype(np.uint8)
    columns = q.T.reshape(n, groups, block)
    tensors = [numpy_helper.from_array(pack_bits(columns, quantized.bits), f"{prefix}_Q{quantized.bits}"),
               numpy_helper.from_array(np.ascontiguousarray(quantized.scale.T).reshape(-1), f"{prefix}_scales")]
    zero_point = quantized.zero_point.T                      # [N, groups]
    default = 2 ** (quantized.bits - 1)
    if zero_point.dtype == np.float32 and not np.all(zero_point == np.round(zero_point)):
        tensors.append(numpy_helper.from_array(np.ascontiguousarray(zero_point).reshape(-1), f"{prefix}_zero_points"))
    elif not np.all(zero_point == default):
        packed = pack_bits(np.round(zero_point).astype(np.uint8), quantized.bits)
        tensors.append(numpy_helper.from_array(packed.reshape(-1), f"{prefix}_zero_points"))
    return tensors, [t.name for t in tensors]


def export_matmul_nbits(model: onnx.ModelProto, quantized: dict[str, GroupQuantized]) -> onnx.ModelProto:
    """Return a copy of `model` whose MatMul layers named in `quantized` (node name → its weight's
    GroupQuantized) run as MatMulNBits with exactly those integers, scales and zero points."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = []
    replaced_weights = set()
    for node in graph.node:
        found = quantized.get(node.name)
        if found is None:
            nodes.append(node)
            continue
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            raise ModelError(f"layer {node.name!r} is a {node.op_type} without an initializer weight: only MatMul "
                             "layers with a static [K, N] weight export as MatMulNBits")
        weight = initializers[node.input[1]]
        if tuple(weight.dims) != found.shape:
            raise ModelError(f"layer {node.name!r}: weight {weight.name!r} has shape {tuple(weight.dims)}, the "
                             f"quantized weight {found.shape}")
        prefix = weight.name
        tensors, names = nbits_initializers(found, prefix)
        graph.initializer.extend(tensors)
        activation = node.input[0]
        if found.input_scale is not None:
            inverse = numpy_helper.from_array((1.0 / found.input_scale).astype(np.float32), f"{prefix}_awq_inverse")
            graph.initializer.append(inverse)
            scaled = f"{node.output[0]}_awq_input"
            nodes.append(helper.make_node("Mul", [activation, inverse.name], [scaled], name=f"{node.name}_awq_scale"))
            activation = scaled
        k, n = found.shape
        nodes.append(helper.make_node("MatMulNBits", [activation, *names], list(node.output), name=node.name,
                                      domain=MS_DOMAIN, K=k, N=n, bits=found.bits, block_size=found.block_size))
        replaced_weights.add(weight.name)
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name not in replaced_weights or init.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(opset.domain == MS_DOMAIN for opset in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out


def config_group_quantized(w: np.ndarray, tq) -> GroupQuantized:
    """A MatMul weight [K, N] quantized as a config's per-group integer `tq` (groups along K), as a GroupQuantized.

    The lab's signed codes c in [qmin, qmax] become MatMulNBits' unsigned q = c - qmin and zero point
    zero_point - qmin (int4 symmetric: zero point 8, MatMulNBits' default); scales are the config's.
    So (q - zero point) * scale is exactly the simulation's weight.
    """
    from quant_core.numerics.tensor import quantize_tensor

    qmin, _ = tq.format.limits
    quantized = quantize_tensor(w, tq, name="weight")
    return GroupQuantized((quantized.codes - qmin).astype(np.uint8), quantized.scale.astype(np.float32),
                          (quantized.zero_point - qmin).astype(np.uint8), tq.format.bits, tq.block_size,
                          tq.symmetric, WeightOnlyMethod.RTN)


def export_config_nbits(model: onnx.ModelProto, config, layers) -> onnx.ModelProto:
    """Return a copy of `model` whose MatMul `layers` run as MatMulNBits with the config's per-group grid
    (each layer's weight quantized by `quantize_tensor` as the simulation does; `plan` picks the layers)."""
    from quant_core.numerics.axes import natural_axes, resolve

    nodes = {node.name: node for node in model.graph.node}
    arrays = {init.name: init for init in model.graph.initializer}
    quantized = {}
    for layer in layers:
        node = nodes[layer]
        weight = arrays[node.input[1]]
        w = numpy_helper.to_array(weight).astype(np.float32)
        tq = resolve(config.for_layer(layer).weights, natural_axes("MatMul", node, rank=2, shape=w.shape)).tq
        quantized[layer] = config_group_quantized(w, tq)
    return export_matmul_nbits(model, quantized)


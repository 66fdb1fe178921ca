"""Integer quantize / dequantize / fake-quantize (the one entry for any format: `tensor.quantize_tensor`).

The integer maths is onnxruntime's QuantizeLinear / DequantizeLinear, bit for bit:
    q = clip(rint(x / scale) + zero_point, qmin, qmax)        (float32 division, round half to even)
    x' = float32(q - zero_point) * scale
and `fake_quantize(x) == dequantize(quantize(x))` exactly, including the sign of zero (+0.0).

Granularity is given by `axis` and `block_size`, as in ONNX (opset 21):
    axis=None                  per-tensor: scale and zero_point are scalars
    axis=a                     per-channel: 1-D scale of length x.shape[a]
    axis=a, block_size=B       per-group: scale has x's rank with shape[a] = ceil(x.shape[a] / B);
                               element i along `a` uses block i // B (the last block may be partial)
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from quant_core.config import TensorQuant
from quant_core.errors import ConfigError, QuantLabError
from quant_core.numerics.axes import shape_axes
from quant_core.numerics.formats import Granularity, NumberFormat

# Elements per chunk: 256 Ki float32 = 1 MiB, so the output chunk stays in the L2 cache (2 MiB here)
# across the passes and only the first read of x and the last write of the result go to memory.
# Smaller chunks cost more in per-call overhead than they gain in locality (bench_fake_quant.py).
_CHUNK = 1 << 18
# Below this many elements a second thread costs more than it saves.
_THREAD_MIN = 1 << 21
_THREADS = 2


# ---------------------------------------------------------------------------------------------
# Validation and layout
# ---------------------------------------------------------------------------------------------

def as_float32(x, name: str) -> np.ndarray:
    """`x` as a contiguous float32 array; a QuantLabError naming the tensor if it is not numeric or is empty."""
    try:
        array = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise QuantLabError(f"tensor {name!r} is not numeric: {err}") from None
    if array.size == 0:
        raise QuantLabError(f"tensor {name!r} is empty (shape {array.shape}); there is nothing to quantize")
    return np.ascontiguousarray(array)


def refuse_non_finite(x: np.ndarray, name: str) -> None:
    """Raise a QuantLabError naming the tensor and counting its NaN / Inf values, if it has any."""
    bad = ~np.isfinite(x)
    if bad.any():
        count = int(bad.sum())
        kinds = " and ".join(k for k, present in (("NaN", np.isnan(x).any()), ("Inf", np.isinf(x).any())) if present)
        raise QuantLabError(
            f"tensor {name!r} contains {count} {kinds} value(s) out of {x.size}; "
            "quantization needs finite values (check the model or the data that produced it)")


def _normalize_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ConfigError(f"axis {axis} is out of range for tensor {name!r} with {ndim} dimension(s)")
    return axis % ndim


def _num_blocks(length: int, block_size: int) -> int:
    return -(-length // block_size)


def _param_arrays(x: np.ndarray, scale, zero_point, axis, block_size, name: str):
    """Check the parameter shapes against x; return (scale float32, zero_point int32, axis, block_size)."""
    scale = np.asarray(scale, dtype=np.float32)
    zero_point = np.asarray(zero_point if zero_point is not None else 0).astype(np.int32)
    if zero_point.shape != scale.shape and zero_point.size != 1:
        raise QuantLabError(f"tensor {name!r}: zero_point shape {zero_point.shape} differs from "
                            f"scale shape {scale.shape}")
    zero_point = np.broadcast_to(zero_point, scale.shape)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise QuantLabError(f"tensor {name!r}: every scale must be finite and > 0")
    if axis is None:
        if block_size is not None:
            raise QuantLabError(f"tensor {name!r}: block_size needs an axis")
        if scale.size != 1:
            raise QuantLabError(f"tensor {name!r}: per-tensor quantization needs one scale, got shape {scale.shape}")
        return scale.reshape(()), zero_point.reshape(()), None, None
    axis = _normalize_axis(axis, x.ndim, name)
    length = x.shape[axis]
    if block_size is None:
        if scale.shape != (length,):
            raise QuantLabError(f"tensor {name!r}: per-channel scale along axis {axis} must have shape ({length},), "
                                f"got {scale.shape}")
        return scale, np.ascontiguousarray(zero_point), axis, None
    expected = x.shape[:axis] + (_num_blocks(length, block_size),) + x.shape[axis + 1:]
    if scale.shape != expected:
        raise QuantLabError(f"tensor {name!r}: per-group scale for block_size {block_size} along axis {axis} "
                            f"must have shape {expected}, got {scale.shape}")
    return scale, np.ascontiguousarray(zero_point), axis, int(block_size)


def split3(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """(outer, axis length, inner) element counts of `shape` around `axis`: the 3-D view per-axis kernels use."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, shape[axis], inner


# ---------------------------------------------------------------------------------------------
# Work items: (x view, out view, scale, low, high, zero_point) where the parameters broadcast against
# the views. low/high bound rint(x / scale) before the zero point is added: qmin - zp, qmax - zp.
# ---------------------------------------------------------------------------------------------

def _work_items(x, out, scale, zero_point, fmt, axis, block_size):
    qmin, qmax = fmt.limits
    params = (scale, (qmin - zero_point).astype(np.float32), (qmax - zero_point).astype(np.float32),
              zero_point.astype(np.float32))
    if axis is None:
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        for start in range(0, flat_x.size, _CHUNK):
            stop = start + _CHUNK
            yield flat_x[start:stop], flat_out[start:stop], *params
        return
    outer, length, inner = split3(x.shape, axis)
    if block_size is None:
        if inner == 1:  # channels along the last axis: 2-D views keep the ufunc inner loop long
            x2, out2 = x.reshape(outer, length), out.reshape(outer, length)
            step = max(1, _CHUNK // length)
            for start in range(0, outer, step):
                yield x2[start:start + step], out2[start:start + step], *(a.reshape(1, length) for a in params)
            return
        x3, out3 = x.reshape(outer, length, inner), out.reshape(outer, length, inner)
        p3 = [a.reshape(1, length, 1) for a in params]
        if length * inner <= _CHUNK:  # many small slabs: chunk over the outer dimension
            step = max(1, _CHUNK // (length * inner))
            for start in range(0, outer, step):
                yield x3[start:start + step], out3[start:start + step], *p3
            return
        channel_step = max(1, _CHUNK // inner)
        inner_step = min(inner, _CHUNK)
        for o in range(outer):
            for c in range(0, length, channel_step):
                cs = slice(c, c + channel_step)
                for i in range(0, inner, inner_step):
                    ins = slice(i, i + inner_step)
                    yield x3[o:o + 1, cs, ins], out3[o:o + 1, cs, ins], *(p[:, cs] for p in p3)
        return
    blocks = _num_blocks(length, block_size)
    full = length // block_size
    x3, out3 = x.reshape(outer, length, inner), out.reshape(outer, length, inner)
    p4 = [a.reshape(outer, blocks, 1, inner) for a in params]
    if full:
        span = full * block_size
        x4 = x3[:, :span].reshape(outer, full, block_size, inner)
        out4 = out3[:, :span].reshape(outer, full, block_size, inner)
        yield x4, out4, *(p[:, :full] for p in p4)
    if full < blocks:  # the last, partial block
        tail = length - full * block_size
        yield (x3[:, full * block_size:].reshape(outer, 1, tail, inner),
               out3[:, full * block_size:].reshape(outer, 1, tail, inner), *(p[:, full:] for p in p4))


def _scaled_chunk(x, out, scale, low, high, safe_low, safe_high, uniform, name) -> None:
    """out <- clip(x / scale, low, high), refusing NaN and Inf; rint commutes with the clip (integer bounds)."""
    np.divide(x, scale, out=out)
    # Two fast in-cache reductions do two jobs: NaN or Inf in x shows as a non-finite extreme, and
    # when every value already lies inside the tightest bounds the clip pass can be skipped.
    flat = out.reshape(-1) if out.flags.c_contiguous else out  # 1-D reductions are the fastest
    top, bottom = np.maximum.reduce(flat, axis=None), np.minimum.reduce(flat, axis=None)
    if not (np.isfinite(top) and np.isfinite(bottom)):
        refuse_non_finite(x, name)  # raises, unless x / scale merely overflowed: the clip handles that
    if bottom < safe_low or top > safe_high:
        if uniform:  # one zero point for all channels: scalar bounds keep the clip loop vectorized
            np.clip(out, safe_low, safe_high, out=out)
        else:  # np.clip with array bounds is 3x slower than these two vectorized passes
            np.maximum(out, low, out=out)
            np.minimum(out, high, out=out)


def _fake_quantize_chunk(x, out, scale, low, high, zero_point, safe_low, safe_high, uniform, name) -> None:
    _scaled_chunk(x, out, scale, low, high, safe_low, safe_high, uniform, name)
    np.rint(out, out=out)
    np.add(out, np.float32(0.0), out=out)  # -0.0 -> +0.0, as float32(q - zero_point) gives
    np.multiply(out, scale, out=out)


def _quantize_chunk(x, out, scale, low, high, zero_point, safe_low, safe_high, uniform, name) -> None:
    t = np.empty(x.shape, dtype=np.float32)
    _scaled_chunk(x, t, scale, low, high, safe_low, safe_high, uniform, name)
    np.rint(t, out=t)
    np.add(t, zero_point, out=out, casting="unsafe")


def _bounds(zero_point, fmt) -> tuple[np.float32, np.float32, bool]:
    """Return the tightest clipping bounds over all channels (inside them no value needs clipping),
    and whether they are every channel's bounds (a single zero point)."""
    qmin, qmax = fmt.limits
    smallest, largest = zero_point.min(), zero_point.max()
    return np.float32(qmin - smallest), np.float32(qmax - largest), bool(smallest == largest)


@functools.cache
def _helper_pool() -> ThreadPoolExecutor:
    """The worker threads that share large tensors with the calling thread (started once: a thread
    start costs milliseconds on a loaded machine). Stateless, so sharing it between callers is safe."""
    return ThreadPoolExecutor(max_workers=_THREADS - 1, thread_name_prefix="quant_core")


def _run(items, kernel, parallel: bool) -> None:
    # x / scale may overflow to Inf for huge finite x: the clip saturates it, as QuantizeLinear does.
    # (errstate is per thread, so each worker sets it.)
    def run_share(part):
        with np.errstate(over="ignore"):
            for item in part:
                kernel(*item)

    if not parallel:
        run_share(items)
        return
    # numpy releases the GIL inside ufuncs, so the helpers and the calling thread use separate cores;
    # each takes a contiguous share of the chunks.
    work = list(items)
    share = -(-len(work) // _THREADS)
    futures = [_helper_pool().submit(run_share, work[i:i + share]) for i in range(share, len(work), share)]
    try:
        run_share(work[:share])
    finally:
        wait(futures)  # never leave a helper writing into `out` after an error here
    for future in futures:
        future.result()


# ---------------------------------------------------------------------------------------------
# Public integer API
# ---------------------------------------------------------------------------------------------

def tensor_range(x, *, granularity: Granularity | str, axis: int | None = 0, block_size: int = 128,
                 name: str = "tensor") -> tuple[np.ndarray, np.ndarray]:
    """Return the min-max range `(lo, hi)` of x per tensor, per channel along `axis`, or per block.

    Shapes: per-tensor () ; per-channel (x.shape[axis],) ; per-group x.shape with
    shape[axis] = ceil(x.shape[axis] / block_size) (the layout `quantize(..., block_size=)` takes).

    Notes
    -----
    NaN or Inf in x raises QuantLabError naming the tensor. Per-channel needs at least 2 dimensions.
    axis=None (TensorQuant's "natural axis") follows the bare-shape rule of quant_core.numerics.axes: channels
    on axis 0, groups along the last axis of a 2-D (or the only axis of a 1-D) tensor.
    """
    granularity = Granularity(granularity)
    x = as_float32(x, name)
    if axis is None and granularity != Granularity.PER_TENSOR:
        axis = natural_axis(x.shape, granularity, name)
    if granularity == Granularity.PER_TENSOR:
        lo, hi = np.min(x), np.max(x)
    elif granularity == Granularity.PER_CHANNEL:
        check_layout(x, granularity, axis, name)
        axis = _normalize_axis(axis, x.ndim, name)
        x3 = x.reshape(split3(x.shape, axis))
        lo, hi = x3.min(axis=(0, 2)), x3.max(axis=(0, 2))
    else:
        if not 1 <= block_size:
            raise ConfigError(f"block_size must be positive, got {block_size}")
        axis = _normalize_axis(axis, x.ndim, name)
        outer, length, inner = split3(x.shape, axis)
        x3 = x.reshape(outer, length, inner)
        full = length // block_size
        parts_lo, parts_hi = [], []
        if full:
            x4 = x3[:, :full * block_size].reshape(outer, full, block_size, inner)
            parts_lo.append(x4.min(axis=2))
            parts_hi.append(x4.max(axis=2))
        if full * block_size < length:
            tail = x3[:, full * block_size:]
            parts_lo.append(tail.min(axis=1, keepdims=True))
            parts_hi.append(tail.max(axis=1, keepdims=True))
        shape = x.shape[:axis] + (_num_blocks(length, block_size),) + x.shape[axis + 1:]
        lo = np.concatenate(parts_lo, axis=1).reshape(shape)
        hi = np.concatenate(parts_hi, axis=1).reshape(shape)
    lo, hi = np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32)
    # min/max propagate NaN and expose +-Inf, so checking the range checks the tensor for free.
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        refuse_non_finite(x, name)
    return lo, hi


def quantize(x, scale, zero_point, fmt: NumberFormat, *, axis: int | None = None, block_size: int | None = None,
             name: str = "tensor") -> np.ndarray:
    """Return the int32 codes q = clip(rint(x / scale) + zero_point, qmin, qmax) (ONNX QuantizeLinear)."""
    _require_integer(fmt)
    x = as_float32(x, name)
    scale, zero_point, axis, block_size = _param_arrays(x, scale, zero_point, axis, block_size, name)
    out = np.empty(x.shape, dtype=np.int32)
    items = _work_items(x, out, scale, zero_point, fmt, axis, block_size)
    safe = _bounds(zero_point, fmt)
    _run(((*item, *safe, name) for item in items), _quantize_chunk, parallel=x.size >= _THREAD_MIN)
    return out


def dequantize(q, scale, zero_point, *, axis: int | None = None, block_size: int | None = None,
               name: str = "tensor") -> np.ndarray:
    """Return float32(q - zero_point) * scale (ONNX DequantizeLinear)."""
    q = np.asarray(q)
    if q.size == 0:
        raise QuantLabError(f"tensor {name!r} is empty (shape {q.shape}); there is nothing to dequantize")
    if not np.issubdtype(q.dtype, np.integer):
        raise QuantLabError(f"tensor {name!r}: dequantize needs integer codes, got dtype {q.dtype}")
    scale, zero_point, axis, block_size = _param_arrays(q, scale, zero_point, axis, block_size, name)
    scale_b, zero_b = broadcastable(scale, q.shape, axis, block_size), broadcastable(zero_point, q.shape, axis,
                                                                                       block_size)
    centered = (q.astype(np.int32) - zero_b).astype(np.float32)
    return np.multiply(centered, scale_b, out=centered)


def broadcastable(param: np.ndarray, shape, axis, block_size) -> np.ndarray:
    """Return param expanded so that it broadcasts element-wise against an array of `shape`."""
    if axis is None:
        return param
    if block_size is None:
        return param.reshape((-1,) + (1,) * (len(shape) - axis - 1))
    return np.repeat(param, block_size, axis=axis)[(slice(None),) * axis + (slice(0, shape[axis]),)]


def fake_quantize(x, scale, zero_point, fmt: NumberFormat, *, axis: int | None = None,
                  block_size: int | None = None, name: str = "tensor", out: np.ndarray | None = None) -> np.ndarray:
    """Return dequantize(quantize(x)) as float32, bit for bit, in one cache-friendly pass.

    x' = clip(rint(x / scale), qmin - zero_point, qmax - zero_point) * scale

    `out`, if given, is a C-contiguous float32 array of x's shape (x itself for in place) that
    receives the result and is returned; reusing it saves the page faults of a fresh array.

    Notes
    -----
    Speed (bench/bench_fake_quant.py): large int8 / uint8 / int16 / uint16 tensors, per tensor or per
    channel, go through a cached onnxruntime QuantizeLinear -> DequantizeLinear session (one fused
    pass, bit-identical by tests/core/test_onnxruntime_oracle.py); everything else is processed in
    1 MiB chunks with in-place ufuncs on two threads. NaN or Inf raises QuantLabError naming the tensor.
    """
    _require_integer(fmt)
    x = as_float32(x, name)
    scale, zero_point, axis, block_size = _param_arrays(x, scale, zero_point, axis, block_size, name)
    if out is not None:
        _check_out(out, x, name)
    if out is not x and _use_onnxruntime(x, fmt, axis, block_size):
        return _onnxruntime_fake_quantize(x, scale, zero_point, _ORT_TYPES[fmt.signed, fmt.bits], axis, name, out)
    if out is None:
        out = np.empty_like(x)
    # In place is safe: each chunk of x is read (divided into out) before that chunk of out is written.
    items = _work_items(x, out, scale, zero_point, fmt, axis, block_size)
    safe = _bounds(zero_point, fmt)
    _run(((*item, *safe, name) for item in items), _fake_quantize_chunk, parallel=x.size >= _THREAD_MIN)
    return out


def _check_out(out, x: np.ndarray, name: str) -> None:
    if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == x.shape
            and out.flags.c_contiguous and out.flags.writeable):
        raise QuantLabError(f"tensor {name!r}: out must be a writeable C-contiguous float32 array of shape {x.shape}")
    if out is not x and np.may_share_memory(out, x):
        raise QuantLabError(f"tensor {name!r}: out overlaps x without being x; pass out=x for in place")


# (signed, bits) -> (onnx element type, numpy zero-point dtype) that onnxruntime quantizes to on CPU.
_ORT_TYPES = {(True, 8): ("INT8", np.int8), (False, 8): ("UINT8", np.uint8), (True, 16): ("INT16", np.int16),
              (False, 16): ("UINT16", np.uint16)}
# From this many elements the session's fused kernel beats the chunked ufuncs by far more than the
# ~0.1 ms a run costs; below it the numpy path keeps small tensors free of any session.
_ORT_MIN = 1 << 22
# Elements per onnxruntime run when writing into `out` (4 MiB: the chunk stays in the cache between
# the NaN check and the kernel; measured 88% of copy speed against 70% unchunked, 74% at 1 MiB).
_ORT_CHUNK = 1 << 20


# onnxruntime's per-axis kernel is slow on short rows (measured: 25x slower than numpy with the channels
# on the last axis, on par at 16 elements a row, 2-3x faster from 64), so it only gets per-channel
# work whose rows (the elements after the axis) are at least this long.
_ORT_MIN_ROW = 64


def _use_onnxruntime(x, fmt: NumberFormat, axis, block_size) -> bool:
    if x.size < _ORT_MIN or (fmt.signed, fmt.bits) not in _ORT_TYPES or fmt.narrow_range or block_size is not None:
        return False
    return axis is None or split3(x.shape, axis)[2] >= _ORT_MIN_ROW


@functools.lru_cache(maxsize=16)
def _qdq_session(element_type: str, axis: int | None):
    """A QuantizeLinear -> DequantizeLinear session taking x, scale and zero_point as inputs; read-only."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    attributes = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["q"], **attributes),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero_point"], ["y"], **attributes)]
    graph = helper.make_graph(
        nodes, "fake_quantize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("zero_point", getattr(TensorProto, element_type), None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the Q -> DQ pair
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _onnxruntime_fake_quantize(x, scale, zero_point, element, axis, name, out=None) -> np.ndarray:
    element_type, zero_point_dtype = element
    scale, zero_point = np.ascontiguousarray(scale), zero_point.astype(zero_point_dtype)
    if out is None:
        # One read pass refuses NaN and Inf (onnxruntime would quantize them silently): x.x is finite
        # iff x is, unless large finite values overflow it, which the exact check then tells apart.
        flat = x.reshape(-1)
        if not np.isfinite(np.vdot(flat, flat)):
            refuse_non_finite(x, name)
        # The result lives in onnxruntime's arena, which reuses its already-mapped memory from run to
        # run: much faster than writing into a fresh array, for memory kept about the size of the
        # largest tensor seen (docs/benchmarks/fake_quant.md).
        feeds = {"x": x, "scale": scale, "zero_point": zero_point}
        return _qdq_session(element_type, axis).run(None, feeds)[0]
    # Into `out`, chunk by chunk: each chunk is checked just before onnxruntime reads it, while it
    # is still in the cache, which saves the separate read pass of the check.
    for x_part, out_part, scale_part, zero_point_part, part_axis in _ort_chunks(x, out, scale, zero_point, axis):
        flat = x_part.reshape(-1)
        if not np.isfinite(np.vdot(flat, flat)):
            refuse_non_finite(x, name)
        session = _qdq_session(element_type, part_axis)
        binding = session.io_binding()
        binding.bind_cpu_input("x", x_part)
        binding.bind_cpu_input("scale", scale_part)
        binding.bind_cpu_input("zero_point", zero_point_part)
        binding.bind_output("y", "cpu", 0, np.float32, list(out_part.shape), out_part.ctypes.data)
        session.run_with_iobinding(binding)
    return out


def _ort_chunks(x, out, scale, zero_point, axis):
    """Yield contiguous (x, out, scale, zero_point, axis) pieces of about _ORT_CHUNK elements."""
    if axis is None:
        flat_x, flat_out = x.reshape(-1), out.reshape(-1)
        for start in range(0, flat_x.size, _ORT_CHUNK):
            yield flat_x[start:start + _ORT_CHUNK], flat_out[start:start + _ORT_CHUNK], scale, zero_point, None
        return
    outer, length, inner = split3(x.shape, axis)
    if outer == 1:  # channels first: chunks of whole channels, with their scales
        x2, out2 = x.reshape(length, inner), out.reshape(length, inner)
        step = max(1, _ORT_CHUNK // inner)
        for c in range(0, length, step):
            yield x2[c:c + step], out2[c:c + step], scale[c:c + step], zero_point[c:c + step], 0
        return
    x3, out3 = x.reshape(outer, length, inner), out.reshape(outer, length, inner)
    step = max(1, _ORT_CHUNK // (length * inner))
    for o in range(0, outer, step):
        yield x3[o:o + step], out3[o:o + step], scale, zero_point, 1


def _require_integer(fmt: NumberFormat) -> None:
    if not isinstance(fmt, NumberFormat) or not fmt.is_integer:
        raise QuantLabError(f"integer quantization needs an int/uint format, got {fmt}")


# ---------------------------------------------------------------------------------------------
# One entry for every format
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor quantized in some format: its fake-quantized float32 values and the parameters used.

    values      float32, x's shape, holding only values the format can represent
    scale       float32 scale(s) (int, fp8, binary, ternary), else None
    zero_point  int32 zero point(s) (int formats), else None
    codes       integer codes (int: q; binary: -1/+1; ternary: -1/0/+1; kmeans: centroid index), else None
    codebook    float32 centroids (kmeans), else None
    axis, block_size   the layout of scale (None, None for per-tensor); with TensorQuant.axis=None
                       per group, they refer to the weight viewed as (shape[0], rest flattened)
    """

    values: np.ndarray
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    codes: np.ndarray | None
    codebook: np.ndarray | None
    fmt: NumberFormat
    axis: int | None = None
    block_size: int | None = None


def natural_axis(shape: tuple[int, ...], granularity: Granularity, name: str) -> int:
    """Return the axis of a tensor known only by its shape (quant_core.numerics.axes.shape_axes)."""
    axes = shape_axes(shape)
    if granularity == Granularity.PER_CHANNEL:
        return axes.channel_axis
    if tuple(axes.group_shape) != tuple(shape):
        raise ConfigError(f"per-group quantization of tensor {name!r} along its natural axis needs the tensor "
                          f"viewed as {tuple(axes.group_shape)}: pass that view (quant_core.numerics.axes.resolve) or an axis")
    return axes.group_axis


def check_layout(x: np.ndarray, granularity: Granularity, axis: int | None, name: str) -> None:
    """Raise ConfigError if `granularity` along `axis` cannot apply to x."""
    if granularity == Granularity.PER_TENSOR:
        return
    if axis is None:
        axis = natural_axis(x.shape, granularity, name)
    if granularity == Granularity.PER_CHANNEL and x.ndim < 2:
        raise ConfigError(f"per-channel quantization of tensor {name!r} needs at least 2 dimensions, "
                          f"got shape {x.shape}; use per-tensor for it")
    _normalize_axis(axis, x.ndim, name)


def scale_layout(tq: TensorQuant, ndim: int) -> tuple[int | None, int | None]:
    """Return (axis, block_size) of tq's granularity, the axis made non-negative."""
    if tq.granularity == Granularity.PER_TENSOR:
        return None, None
    block_size = tq.block_size if tq.granularity == Granularity.PER_GROUP else None
    return tq.axis % ndim, block_size

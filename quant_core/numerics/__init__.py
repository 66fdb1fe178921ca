"""Numbers: formats, the (scale, zero point) formula, quantize / dequantize, ranges, metrics, sizes.

Pure numpy (onnxruntime only to probe the int8 kernels in cpu_target); knows nothing of models.
"""

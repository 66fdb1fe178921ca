"""Quantization Lab's core: numpy, onnx and onnxruntime only (never streamlit)."""
from quant_core.config import PRESETS, LayerQuant, QuantConfig, TensorQuant
from quant_core.numerics.formats import FormatKind, Granularity, NumberFormat, RangeMethod, parse_format
from quant_core.numerics.qparams import qparams_from_range

__all__ = ["PRESETS", "FormatKind", "Granularity", "LayerQuant", "NumberFormat", "QuantConfig", "RangeMethod",
           "TensorQuant", "parse_format", "qparams_from_range"]

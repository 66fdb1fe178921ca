"""Real quantized ONNX models through onnxruntime.quantization, and their measured latency."""

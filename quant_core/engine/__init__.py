"""The engine: calibrate, simulate a config with onnxruntime, score it against FP32 (per-layer errors, tasks)."""

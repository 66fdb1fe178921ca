"""Models and data: safe loading of untrusted ONNX, the prepared form and its layer inventory, .npz data and its layouts, the demos."""

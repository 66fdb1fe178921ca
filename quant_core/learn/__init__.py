"""Teaching helpers for the Learn page (numpy quantization-aware training)."""

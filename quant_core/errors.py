"""User-facing errors: their message is shown as-is, in the app and on the command line."""


class QuantLabError(ValueError):
    """A problem with the user's input; the message says what is wrong and what is expected."""


class ModelError(QuantLabError):
    """The ONNX model cannot be opened, run or quantized as asked."""


class DataError(QuantLabError):
    """The data (.npz) does not fit the model."""


class ConfigError(QuantLabError):
    """The quantization config cannot apply to the model."""

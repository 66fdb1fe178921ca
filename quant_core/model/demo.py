"""The shipped demo models and their data: scikit-learn's handwritten digits (8x8, 10 classes).

The 1,797 digits are split by a fixed permutation (seed 0): the first 1,000 trained the demo models
(training/train_demo_models.py) and are never shown to the lab; the other 797 are the lab's data, which
`data.split_dataset` splits into calibration (256) and evaluation (541).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quant_core.model.data import Dataset
from quant_core.errors import ModelError

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo_models"
TRAIN_SAMPLES = 1000


@dataclass(frozen=True)
class DemoModel:
    """A shipped model: `fp32_accuracy` is its measured top-1 accuracy on the 541 evaluation digits."""

    name: str
    title: str
    description: str
    path: Path
    fp32_accuracy: float


DEMO_MODELS: dict[str, DemoModel] = {
    model.name: model for model in (
        DemoModel("mlp", "MLP (digits)",
                  "Flatten → Gemm 64→128 → ReLU → Gemm 128→64 → ReLU → Gemm 64→10. Smooth weight ranges: "
                  "INT8 per-tensor is nearly lossless, low bit widths show the first cracks.",
                  DEMO_DIR / "mlp.onnx", 519 / 541),
        DemoModel("cnn", "CNN with folded BatchNorm (digits)",
                  "Conv 1→16 3×3 → ReLU → Conv 16→32 3×3 → ReLU → MaxPool → Gemm → 10, BatchNorm folded into "
                  "the convs. conv1's output channels differ in weight range by over 250×: per-tensor weights lose the "
                  "small channels, per-channel keeps them.",
                  DEMO_DIR / "cnn.onnx", 538 / 541),
        DemoModel("transformer", "Tiny vision transformer (digits)",
                  "16 tokens of 2×2 patches → embed 32 + position, 2 encoder blocks (4-head self-attention with "
                  "MatMul + Softmax, LayerNormalization, GELU MLP), mean-pool, linear head. Activations after "
                  "LayerNorm and GELU have outliers that stress activation ranges.",
                  DEMO_DIR / "transformer.onnx", 524 / 541),
    )
}


def demo_data_path() -> Path:
    """Path of the shipped digits data: image float32 (1797, 1, 8, 8) in [0, 1], labels int64 (1797,)."""
    return DEMO_DIR / "digits.npz"


def demo_split_indices(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, lab) indices: a permutation with seed 0, the first 1,000 for training, the rest held out."""
    order = np.random.default_rng(0).permutation(num_samples)
    return order[:TRAIN_SAMPLES], order[TRAIN_SAMPLES:]


def heldout_data_path() -> Path:
    """Path of the 797 held-out digits as their own .npz (`image`, `labels`), for the command line.

    `digits.npz` holds all 1,797 digits, 1,000 of which trained the demo models: evaluating a demo model
    on it from the command line would count training data. This file holds only what `load_demo` returns
    (written by `write_heldout_data`; a test checks the shipped file still matches).
    """
    return DEMO_DIR / "digits_heldout.npz"


def write_heldout_data(path: Path) -> None:
    """Write the held-out digits (the data `load_demo` returns) to `path` as an .npz."""
    _, data = load_demo(next(iter(DEMO_MODELS)))
    np.savez_compressed(path, image=data.inputs["image"], labels=data.labels)


def load_demo(name: str) -> tuple[bytes, Dataset]:
    """Return a demo model's ONNX bytes and the 797 held-out digits (never used in training)."""
    if name not in DEMO_MODELS:
        raise ModelError(f"unknown demo model '{name}': choose one of {', '.join(DEMO_MODELS)}")
    with np.load(demo_data_path(), allow_pickle=False) as digits:
        image, labels = digits["image"], digits["labels"]
    _, lab = demo_split_indices(len(labels))
    return DEMO_MODELS[name].path.read_bytes(), Dataset(inputs={"image": image[lab]}, labels=labels[lab])

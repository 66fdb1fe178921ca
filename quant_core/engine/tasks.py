"""What a model's output is for, and the metric that judges a quantized model at that task.

A `Task` names the scored output, its kind and the kind's options; `infer_task` guesses it from the
model's output shapes and names; `TaskScorer` scores candidate outputs against the FP32 ones (and
the labels where they fit the output) and returns a `TaskScore` whose `headline` metric is what
pages, sweeps and suggestions rank by. docs/tasks.md describes every kind and metric.

Every headline is a fraction where higher is better and FP32 scores 1.0 against itself (0..1 for
all but 1 − CER, which can go below 0), so "drop vs FP32 in points" means the same on every page.
Labels that cannot be scored against the chosen output give None and a `labels_note` saying why,
never a number.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from quant_core.errors import ConfigError, DataError
from quant_core.numerics.metrics import (FixedReference, max_abs_error, mean_cross_entropy, nearest_neighbours,
                                         recall_at_k, token_error_rate)


class TaskKind(StrEnum):
    CLASSIFICATION = "classification"  # one class per sample: [N, C] (class axis selectable)
    SEQUENCE = "sequence"              # one class per position: [N, T, C]
    CTC = "ctc"                        # CTC logits [N, T, C]: greedy-decoded to a token sequence
    EMBEDDING = "embedding"            # one vector per sample: [N, D]
    DETECTION = "detection"            # dense or detection heads: scores along a channel axis
    REGRESSION = "regression"          # any tensor: only how close the numbers are
    LANGUAGE_MODEL = "language_model"  # next-token logits [N, T, vocab] of integer tokens: perplexity


class Metric(StrEnum):
    """Metric names as shown on every page and in the CLI (fractions unless the name says dB)."""

    AGREEMENT = "top-1 agreement"             # argmax along the class axis equal to FP32's, per position
    ACCURACY = "accuracy"                     # argmax equal to the label, per position
    SEQUENCE_MATCH = "sequence match"         # greedy CTC decode exactly equal to FP32's
    CER = "CER vs FP32"                       # token error rate of the decode against FP32's decode
    CHARACTER_ACCURACY = "1 − CER vs FP32"    # the CTC headline
    LABEL_SEQUENCE_MATCH = "sequence match vs labels"
    LABEL_CER = "CER vs labels"
    LABEL_CHARACTER_ACCURACY = "1 − CER vs labels"
    SAMPLE_COSINE = "mean per-sample cosine"
    WORST_COSINE = "worst per-sample cosine"
    RECALL = "recall@k"
    MAX_SCORE_CHANGE = "max-score change"     # mean |max score - FP32 max score| per sample
    COSINE = "cosine"
    SQNR = "SQNR dB"
    MAX_ABS_ERROR = "max abs error"
    PERPLEXITY = "perplexity"                 # exp(mean cross-entropy of the next-token labels)
    PERPLEXITY_INCREASE = "perplexity increase"  # perplexity - FP32 perplexity (lower is better)
    PERPLEXITY_RATIO = "FP32 perplexity / perplexity"  # the language-model headline with labels


# recall@k compares every sample with every other (N x N similarities per config): on more samples
# than this, the first RECALL_SAMPLES are its queries and gallery, so a sweep stays seconds per config.
RECALL_SAMPLES = 2048
# Next-token logits [N, T, V] over integer tokens are a language model when V is at least this (a byte
# vocabulary is 128 or 256); fewer classes per position are a token tagger (sequence).
LM_MIN_VOCAB = 64
_KIND_DEFAULT_AXIS = {TaskKind.DETECTION: 1}  # channels-first heads; every other kind: the last axis
_EMBEDDING_NAMES = ("embed", "pooler", "sentence", "feature", "vector", "pooled")
_CTC_NAMES = ("ctc", "char", "ocr", "text", "recog")
_DETECTION_NAMES = ("box", "bbox", "det", "anchor", "heatmap", "score", "conf", "loc", "yolo", "face", "mask", "seg")
_HIDDEN_NAMES = ("hidden", "last_hidden_state", "encoder_out")
_INTEGER_DTYPES = ("int64", "int32", "int16", "uint16", "int8", "uint8")


@dataclass(frozen=True)
class Task:
    """The scored output, its kind and the kind's options.

    output: an output name (None: the model's first output). axis: the class axis (classification,
    sequence, CTC) or the channel axis (detection); None: the kind's default (detection 1, others
    the last). blank: the CTC blank class (negative counts from the end). k: neighbours of recall@k.
    """

    kind: TaskKind = TaskKind.CLASSIFICATION
    output: str | None = None
    axis: int | None = None
    blank: int = 0
    k: int = 5

    def __post_init__(self):
        try:
            object.__setattr__(self, "kind", TaskKind(self.kind))
        except ValueError:
            raise ConfigError(f"unknown task {self.kind!r}: expected one of "
                              f"{', '.join(kind.value for kind in TaskKind)}") from None
        for key in ("axis", "blank", "k"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise ConfigError(f"task {key} must be an integer, got {value!r}")
            if value is not None:
                object.__setattr__(self, key, int(value))  # equal tasks hash equal and write to JSON
        if self.output is not None and not isinstance(self.output, str):
            raise ConfigError(f"task output must be an output name, got {self.output!r}")
        if self.k < 1:
            raise ConfigError(f"task k (recall@k) must be at least 1, got {self.k}")

    @property
    def class_axis(self) -> int:
        return _KIND_DEFAULT_AXIS.get(self.kind, -1) if self.axis is None else self.axis

    @property
    def headline_name(self) -> str:
        """The headline metric's name for this kind (labels may replace it by their own, see `TaskScore`)."""
        return _HEADLINES[self.kind]

    def describe(self) -> str:
        options = {TaskKind.CTC: f", blank {self.blank}", TaskKind.EMBEDDING: f", k {self.k}"}.get(self.kind, "")
        axis = f", axis {self.class_axis}" if self.kind not in (TaskKind.EMBEDDING, TaskKind.REGRESSION) else ""
        return f"{self.kind.value} on output {self.output or '(first)'}{axis}{options}"

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "output": self.output, "axis": self.axis, "blank": self.blank, "k": self.k}

    @classmethod
    def from_dict(cls, data) -> Task:
        if isinstance(data, str):
            return cls(data)
        if not isinstance(data, dict) or "kind" not in data:
            raise ConfigError("'task' must be a task kind such as \"classification\" or an object with 'kind'")
        unknown = set(data) - {"kind", "output", "axis", "blank", "k"}
        if unknown:
            raise ConfigError(f"unknown task keys {sorted(unknown)}; expected some of kind, output, axis, blank, k")
        return cls(**data)


_HEADLINES = {TaskKind.CLASSIFICATION: Metric.AGREEMENT, TaskKind.SEQUENCE: Metric.AGREEMENT,
              TaskKind.CTC: Metric.CHARACTER_ACCURACY, TaskKind.EMBEDDING: Metric.RECALL,
              TaskKind.DETECTION: Metric.AGREEMENT, TaskKind.REGRESSION: Metric.COSINE,
              TaskKind.LANGUAGE_MODEL: Metric.AGREEMENT}


# -- the task against a model -------------------------------------------------------------------------

def output_index(task: Task, info) -> int:
    """Index of the task's output among the model's outputs; a ConfigError names the outputs otherwise."""
    names = [tensor.name for tensor in info.outputs]
    if task.output is None:
        return 0
    if task.output not in names:
        raise ConfigError(f"the task scores output {task.output!r}, but the model's outputs are {', '.join(names)}")
    return names.index(task.output)


def _shown_shape(shape) -> str:
    return "(" + ", ".join("?" if not isinstance(dim, int) else str(dim) for dim in shape) + ")"


def check_shape(task: Task, name: str, shape: tuple) -> None:
    """Refuse a task that does not fit an output of `shape` (dims: ints, or None / str when unknown)."""
    rank = len(shape)
    shown = f"output {name!r} of shape {_shown_shape(shape)}"
    needs = {TaskKind.CLASSIFICATION: (2, "[N, C]"), TaskKind.SEQUENCE: (3, "[N, T, C]"),
             TaskKind.CTC: (3, "[N, T, C]"), TaskKind.DETECTION: (3, "[N, C, ...] or [N, ..., C]")}
    if task.kind in needs and rank < needs[task.kind][0]:
        raise ConfigError(f"task {task.kind.value} needs {needs[task.kind][1]}, but {shown} has rank {rank}: "
                          f"pick another task or output")
    if task.kind == TaskKind.LANGUAGE_MODEL:
        vocab = shape[-1] if rank == 3 else None
        if rank != 3 or task.class_axis % rank != rank - 1:
            raise ConfigError(f"task language_model needs next-token logits [N, T, vocab] with the vocabulary last, "
                              f"but {shown} has rank {rank}: pick another task or output")
        if isinstance(vocab, int) and vocab < 2:
            raise ConfigError(f"task language_model needs a vocabulary-sized last axis, but {shown} has {vocab}: "
                              f"pick another task or output")
    if task.kind == TaskKind.EMBEDDING and rank != 2:
        raise ConfigError(f"task embedding needs one vector per sample [N, D], but {shown} has rank {rank}: "
                          "pick sequence or regression")
    if task.kind in needs:
        if not -rank <= task.class_axis < rank:
            raise ConfigError(f"class axis {task.class_axis} is out of range for {shown}: pick 1 to {rank - 1}")
        if task.class_axis % rank == 0:
            raise ConfigError(f"the class axis of {shown} cannot be 0: axis 0 holds the samples")
    if task.kind == TaskKind.CTC:
        classes = shape[task.class_axis]
        if isinstance(classes, int) and classes > 0 and not -classes <= task.blank < classes:
            raise ConfigError(f"CTC blank index {task.blank} is out of range: {shown} has {classes} classes "
                              f"(0 to {classes - 1})")


def check_task(task: Task, info) -> Task:
    """Return `task` after checking it fits the model's outputs (a ConfigError in one line otherwise)."""
    if not info.outputs:
        raise ConfigError("the model has no outputs to score")
    tensor = info.outputs[output_index(task, info)]
    if tensor.shape:  # unknown rank: checked on the real outputs when scored
        check_shape(task, tensor.name, tuple(tensor.shape))
    return task


def check_tokens(task: Task, info, inputs) -> None:
    """Refuse token ids outside a language model's vocabulary (the size of its logits' last axis).

    Integer inputs are token ids for the language-model task; onnxruntime would fail on them deep in
    its Gather with a message about indices, so they are checked here in one line.
    """
    if task.kind != TaskKind.LANGUAGE_MODEL or not info.outputs:
        return
    output = info.outputs[output_index(task, info)]
    vocab = output.shape[-1] if output.shape else None
    if not isinstance(vocab, int):
        return
    for tensor in info.inputs:
        array = inputs.get(tensor.name)
        if tensor.dtype in _INTEGER_DTYPES and array is not None and array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= vocab:
                raise DataError(f"input {tensor.name!r} holds token id {low if low < 0 else high}, outside the "
                                f"vocabulary of output {output.name!r} ({vocab} tokens: 0 to {vocab - 1})")


def infer_task(info) -> Task:
    """Guess the task from the first output's shape and name (docs/tasks.md lists the rules).

    [N, C] → classification ([N, D] named like an embedding → embedding; [N, 1] → regression);
    [N, T, C] → CTC when named like text / characters, detection when named like boxes or scores or
    when a fixed axis 1 precedes a free axis 2 (a channels-first head), hidden states → regression,
    [N, T, V] with V >= LM_MIN_VOCAB over integer tokens [N, T] → language model,
    else sequence; rank 4+ → detection with channels on axis 1;
    anything else → regression.
    """
    if not info.outputs:
        return Task(TaskKind.REGRESSION)
    tensor = info.outputs[0]
    shape, name = tuple(tensor.shape), tensor.name.lower()
    rank = len(shape)
    if any(hint in name for hint in _HIDDEN_NAMES):
        return Task(TaskKind.REGRESSION)
    if rank == 2:
        if shape[1] == 1:
            return Task(TaskKind.REGRESSION)
        if any(hint in name for hint in _EMBEDDING_NAMES):
            return Task(TaskKind.EMBEDDING)
        return Task(TaskKind.CLASSIFICATION)
    if rank == 3:
        if _next_token_logits(info, shape):
            return Task(TaskKind.LANGUAGE_MODEL)
        if any(hint in name for hint in _CTC_NAMES):
            return Task(TaskKind.CTC)
        if any(hint in name for hint in _DETECTION_NAMES):
            # Channels on the shorter of the two axes: [N, anchors, 2] scores or [N, 84, 8400] heads.
            first, second = shape[1], shape[2]
            axis = 1 if isinstance(first, int) and isinstance(second, int) and first < second else 2
            return Task(TaskKind.DETECTION, axis=axis)
        if isinstance(shape[1], int) and shape[1] > 0 and not isinstance(shape[2], int):
            # A fixed channel axis before a free one: a channels-first head ([N, 4 + classes, anchors], YOLO),
            # not a sequence, whose free time axis comes before its fixed classes.
            return Task(TaskKind.DETECTION, axis=1)
        return Task(TaskKind.SEQUENCE)
    if rank >= 4:
        return Task(TaskKind.DETECTION)
    return Task(TaskKind.REGRESSION)


def _next_token_logits(info, shape: tuple) -> bool:
    """True for [N, T, V] logits of a model fed integer tokens [N, T] with a vocabulary of at least
    LM_MIN_VOCAB (a token tagger's few classes stay a sequence task)."""
    positions, vocab = shape[1], shape[2]
    if not isinstance(vocab, int) or vocab < LM_MIN_VOCAB:
        return False
    for tensor in getattr(info, "inputs", ()):
        dims = tuple(tensor.shape)
        if tensor.dtype in _INTEGER_DTYPES and len(dims) == 2 and dims[1] == positions:
            return True
    return False


# -- JSON beside a config ----------------------------------------------------------------------------------

TASK_KEY = "task"


def config_document(config, task: Task | None) -> dict:
    """The config's JSON object with the task under "task" (left out when None: inferred when read)."""
    document = config.to_dict()
    if task is not None:
        document[TASK_KEY] = task.to_dict()
    return document


def config_json(config, task: Task | None) -> str:
    return json.dumps(config_document(config, task), indent=2)


def read_config_json(text: str | bytes):
    """Return (QuantConfig, Task or None) from a config JSON; "task" is optional (None: infer it)."""
    from quant_core.config import QuantConfig

    config = QuantConfig.from_json(text)  # validates size, JSON and the config itself
    data = json.loads(text)
    return config, (Task.from_dict(data[TASK_KEY]) if data.get(TASK_KEY) is not None else None)


# -- scoring ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskScore:
    """A candidate's metrics at its task, against FP32 (and labels where they fit); None = not measurable.

    `headline` names the metric pages and sweeps rank by (a fraction, higher is better);
    `labels_note` says why labels were not scored (None: scored, or no labels).
    """

    kind: TaskKind
    headline: str
    metrics: tuple[tuple[str, float | None], ...]
    labels_note: str | None = None
    per_class_accuracy: tuple[float, ...] | None = None

    def value(self, name: str) -> float | None:
        return dict(self.metrics).get(name)

    @property
    def headline_value(self) -> float:
        return self.value(self.headline)

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "headline": self.headline, "headline_value": self.headline_value,
                "metrics": dict(self.metrics), "labels_note": self.labels_note,
                "per_class_accuracy": None if self.per_class_accuracy is None else list(self.per_class_accuracy)}


def ctc_greedy_decode(logits, *, blank: int = 0, axis: int = -1) -> list[tuple[int, ...]]:
    """Return each sample's greedy CTC decode of [N, T, C] logits: the argmax per time step, repeats
    merged, blanks removed (blank may count from the end: -1 is the last class)."""
    best = np.argmax(np.asarray(logits), axis=axis)
    if best.ndim != 2:
        raise ConfigError(f"CTC decoding needs [N, T, C] logits, got shape {np.shape(logits)}")
    blank = blank % np.shape(logits)[axis]
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(int(v) for v in row[mask]) for row, mask in zip(best, keep)]


def _label_sequences(labels: np.ndarray) -> list[tuple[int, ...]]:
    """[N, L] labels padded with negative values → one tuple per sample (padding dropped)."""
    return [tuple(int(v) for v in row if v >= 0) for row in labels]


class TaskScorer:
    """Scores many candidates of one output against its FP32 reference and the labels (computed once).

    What only depends on FP32 (argmax, CTC decode, nearest neighbours, norms) and whether the
    labels fit the output is worked out here once; `score(outputs)` then costs the candidate alone.
    """

    def __init__(self, reference, task: Task, labels=None, *, name: str = "output",
                 fixed_reference: FixedReference | None = None):
        self.task = task
        self.name = name
        self.reference = FixedReference(reference) if fixed_reference is None else fixed_reference
        self._x = np.asarray(reference)
        check_shape(task, name, self._x.shape)
        self.axis = task.class_axis % self._x.ndim if self._x.ndim else 0
        self.labels, self.labels_note = self._fit_labels(labels)
        kind = task.kind
        if kind in (TaskKind.CLASSIFICATION, TaskKind.SEQUENCE, TaskKind.CTC, TaskKind.DETECTION,
                    TaskKind.LANGUAGE_MODEL):
            self._top = np.argmax(self._x, axis=self.axis)
        if kind == TaskKind.LANGUAGE_MODEL and self.labels is not None:
            self._fp32_perplexity = float(np.exp(mean_cross_entropy(self._x, self.labels)))
        if kind == TaskKind.CTC:
            self._decoded = ctc_greedy_decode(self._x, blank=task.blank, axis=self.axis)
            if self.labels is not None:
                self._label_sequences = _label_sequences(self.labels)
        if kind == TaskKind.EMBEDDING:
            self._gallery = self._x[:RECALL_SAMPLES]
            self.k = min(task.k, len(self._gallery))
            self._neighbours = nearest_neighbours(self._gallery, self._gallery, self.k)
            self._norms = np.linalg.norm(self._x.astype(np.float64), axis=1)
        if kind == TaskKind.DETECTION:
            self._max_score = self._x.reshape(len(self._x), -1).max(axis=1).astype(np.float64)

    # -- labels ---------------------------------------------------------------------------------

    def _fit_labels(self, labels):
        """(labels, None) when they can be scored against this output, else (None, why not)."""
        if labels is None:
            return None, None
        labels = np.asarray(labels)
        kind, shape, name = self.task.kind, self._x.shape, self.name
        per_sample = labels.ndim == 1
        if kind == TaskKind.CLASSIFICATION:
            positions = int(np.prod(shape, dtype=np.int64)) // (shape[0] * shape[self.axis])
            if not per_sample or positions != 1:
                return None, (f"the labels ({_shown_shape(labels.shape)}) give one class per sample, but output "
                              f"{name!r} {_shown_shape(shape)} has {positions} positions per sample: accuracy "
                              "cannot be measured, only agreement with FP32")
            return self._in_range(labels)
        if kind == TaskKind.SEQUENCE:
            positions = tuple(d for i, d in enumerate(shape) if i != self.axis)
            if labels.shape != positions:
                return None, (f"per-position labels must have shape {_shown_shape(positions)} for output {name!r} "
                              f"{_shown_shape(shape)}, got {_shown_shape(labels.shape)}: accuracy cannot be measured")
            return self._in_range(labels)
        if kind == TaskKind.LANGUAGE_MODEL:
            positions = shape[:-1]
            if labels.shape != positions:
                return None, (f"next-token labels must have shape {_shown_shape(positions)} for output {name!r} "
                              f"{_shown_shape(shape)}, got {_shown_shape(labels.shape)}: perplexity cannot be measured")
            if labels.size and labels.max() >= shape[-1]:
                raise DataError(f"the labels hold token {int(labels.max())}, but output {name!r} has a vocabulary "
                                f"of {shape[-1]} (0 to {shape[-1] - 1})")
            if not (labels >= 0).any():
                return None, "no position has a next-token label (all are negative): perplexity cannot be measured"
            return labels.astype(np.int64, copy=False), None
        if kind == TaskKind.CTC:
            if labels.ndim != 2:
                return None, (f"CTC labels must be one token sequence per sample ([N, L] padded with -1), got "
                              f"{_shown_shape(labels.shape)}: CER against labels cannot be measured")
            return labels, None
        what = {TaskKind.EMBEDDING: "an embedding", TaskKind.DETECTION: "a detection or dense head",
                TaskKind.REGRESSION: "a regression output"}[kind]
        return None, (f"class labels cannot be scored against {what} ({name!r} {_shown_shape(shape)}): "
                      f"fidelity to FP32 is shown instead")

    def _in_range(self, labels):
        classes = self._x.shape[self.axis]
        if labels.size and labels.max() >= classes:
            return None, (f"the labels hold class {int(labels.max())}, but output {self.name!r} has {classes} "
                          f"classes along axis {self.axis}: accuracy cannot be measured")
        return labels.astype(np.int64, copy=False), None

    # -- scoring --------------------------------------------------------------------------------

    def score(self, outputs) -> TaskScore:
        """Return the task's metrics of `outputs` (the same shape as the reference)."""
        y = np.asarray(outputs)
        kind = self.task.kind
        sqnr, cosine = self.reference.sqnr_db_and_cosine(y)
        metrics: list[tuple[str, float | None]] = []
        headline = self.task.headline_name
        per_class = None
        if kind in (TaskKind.CLASSIFICATION, TaskKind.SEQUENCE, TaskKind.DETECTION, TaskKind.CTC,
                    TaskKind.LANGUAGE_MODEL):
            top = np.argmax(y, axis=self.axis)
            metrics.append((Metric.AGREEMENT, float(np.mean(top == self._top))))
        if kind in (TaskKind.CLASSIFICATION, TaskKind.SEQUENCE):
            accuracy = None if self.labels is None else float(np.mean(top == self.labels))
            metrics.append((Metric.ACCURACY, accuracy))
            if accuracy is not None:
                headline = Metric.ACCURACY
                if kind == TaskKind.CLASSIFICATION:
                    per_class = self._per_class(top.reshape(-1))
        if kind == TaskKind.CTC:
            decoded = ctc_greedy_decode(y, blank=self.task.blank, axis=self.axis)
            cer = token_error_rate(self._decoded, decoded)
            metrics += [(Metric.SEQUENCE_MATCH, float(np.mean([a == b for a, b in zip(self._decoded, decoded)]))),
                        (Metric.CER, cer), (Metric.CHARACTER_ACCURACY, 1.0 - cer)]
            if self.labels is not None:
                label_cer = token_error_rate(self._label_sequences, decoded)
                metrics += [(Metric.LABEL_SEQUENCE_MATCH,
                             float(np.mean([a == b for a, b in zip(self._label_sequences, decoded)]))),
                            (Metric.LABEL_CER, label_cer), (Metric.LABEL_CHARACTER_ACCURACY, 1.0 - label_cer)]
                headline = Metric.LABEL_CHARACTER_ACCURACY
        if kind == TaskKind.LANGUAGE_MODEL:
            if self.labels is None:
                metrics += [(Metric.PERPLEXITY, None), (Metric.PERPLEXITY_INCREASE, None)]
            else:
                value = float(np.exp(mean_cross_entropy(y, self.labels)))
                metrics += [(Metric.PERPLEXITY_RATIO, self._fp32_perplexity / value), (Metric.PERPLEXITY, value),
                            (Metric.PERPLEXITY_INCREASE, value - self._fp32_perplexity)]
                headline = Metric.PERPLEXITY_RATIO
        if kind == TaskKind.EMBEDDING:
            cosines = self._sample_cosines(y)
            metrics += [(Metric.SAMPLE_COSINE, float(np.mean(cosines))), (Metric.WORST_COSINE, float(np.min(cosines))),
                        (Metric.RECALL, recall_at_k(self._gallery, y[:RECALL_SAMPLES], self.k,
                                                    reference_neighbours=self._neighbours))]
        if kind == TaskKind.DETECTION:
            change = np.abs(y.reshape(len(y), -1).max(axis=1) - self._max_score)
            metrics.append((Metric.MAX_SCORE_CHANGE, float(np.mean(change))))
        metrics += [(Metric.SQNR, sqnr), (Metric.COSINE, cosine)]
        if kind == TaskKind.REGRESSION:
            metrics.append((Metric.MAX_ABS_ERROR, max_abs_error(self._x, y)))
        return TaskScore(kind, str(headline), tuple((str(name), value) for name, value in metrics),
                         self.labels_note, per_class)

    def _per_class(self, top: np.ndarray) -> tuple[float, ...]:
        labels = self.labels.reshape(-1)
        classes = max(int(labels.max()) + 1, self._x.shape[self.axis])
        totals = np.bincount(labels, minlength=classes)
        correct = np.bincount(labels[top == labels], minlength=classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tuple(float(v) for v in np.where(totals > 0, correct / totals, np.nan))

    def _sample_cosines(self, y: np.ndarray) -> np.ndarray:
        """Cosine of each sample's embedding with its FP32 one (both zero: 1; one zero: 0)."""
        x, y = self._x.astype(np.float64), y.astype(np.float64)
        norms = self._norms * np.linalg.norm(y, axis=1)
        dots = np.einsum("ij,ij->i", x, y)
        both_zero = (self._norms == 0) & (np.linalg.norm(y, axis=1) == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosines = np.where(norms > 0, dots / norms, 0.0)
        return np.clip(np.where(both_zero, 1.0, cosines), -1.0, 1.0)


def score(reference, outputs, labels, task: Task) -> TaskScore:
    """Return `outputs` scored at `task` against the FP32 `reference` and `labels` (None: none)."""
    return TaskScorer(reference, task, labels).score(outputs)


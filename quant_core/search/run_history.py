"""Run history: one record per config evaluated, as plain data (the pages keep them per session).

A record holds what a history table shows (name, when, the task's headline metric, size, latency
when it was measured, the range methods used) and the config as JSON, so a run can be restored or
compared layer by layer. Records are keyed by model, data, config and task: evaluating the same
config again does not add a row.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import datetime

from quant_core.config import LayerQuant, QuantConfig

MAX_RECORDS = 200  # a session's history is bounded: the oldest runs go first


@dataclass(frozen=True)
class RunRecord:
    """One evaluated config: what the history table shows, and the config JSON to restore it."""

    name: str
    when: str  # ISO 8601, seconds
    model_key: str
    data_key: str
    task_key: str
    config_json: str
    metric: str  # the task's headline metric, e.g. "accuracy"
    metric_value: float | None  # a fraction (0..1), None when it cannot be measured
    size_bytes: int
    fp32_size_bytes: int
    methods: str
    latency_ms: float | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model_key, self.data_key, self.config_json, self.task_key)

    @property
    def config(self) -> QuantConfig:
        return QuantConfig.from_json(self.config_json)

    def to_row(self) -> dict:
        """The record as a history-table row (metric in %, size in KiB)."""
        return {"run": self.name, "when": self.when.replace("T", " "), "config": self.config.name,
                self.metric + " (%)": None if self.metric_value is None else round(100 * self.metric_value, 3),
                "size (KiB)": round(self.size_bytes / 1024, 1),
                "size vs FP32": round(self.size_bytes / self.fp32_size_bytes, 3) if self.fp32_size_bytes else None,
                "latency (ms)": self.latency_ms, "methods": self.methods}


def range_methods(config: QuantConfig) -> str:
    """The range methods a config uses, e.g. "weights minmax per_channel; activations entropy"."""
    choices = [config.default, *(choice for _, choice in config.overrides)]
    weights = sorted({f"{c.weights.range_method.value} {c.weights.granularity.value}" for c in choices if c.weights})
    activations = sorted({c.activations.range_method.value for c in choices if c.activations})
    parts = []
    if weights:
        parts.append("weights " + ", ".join(weights))
    if activations:
        parts.append("activations " + ", ".join(activations))
    return "; ".join(parts) or "FP32"


def make_record(history: tuple[RunRecord, ...], *, model_key: str, data_key: str, task_key: str,
                config: QuantConfig, metric: str, metric_value: float | None, size_bytes: int, fp32_size_bytes: int,
                when: datetime | None = None) -> RunRecord:
    """A new record named "#k name", k counting this model's runs from 1."""
    number = 1 + sum(1 for record in history if record.model_key == model_key)
    moment = (when or datetime.now()).isoformat(timespec="seconds")
    return RunRecord(name=f"#{number} {config.name}", when=moment, model_key=model_key, data_key=data_key,
                     task_key=task_key, config_json=config.to_json(), metric=metric, metric_value=metric_value,
                     size_bytes=int(size_bytes), fp32_size_bytes=int(fp32_size_bytes), methods=range_methods(config))


def add_record(history: tuple[RunRecord, ...], record: RunRecord) -> tuple[RunRecord, ...]:
    """`history` with `record` appended, unless a record with its key is there (then unchanged).

    Notes
    -----
    At most `MAX_RECORDS` records: the oldest are dropped first.
    """
    if any(existing.key == record.key for existing in history):
        return history
    return (*history, record)[-MAX_RECORDS:]


def with_latency(history: tuple[RunRecord, ...], key: tuple, latency_ms: float) -> tuple[RunRecord, ...]:
    """`history` with the latency of the record `key` set (a record not in the history: unchanged)."""
    return tuple(replace(record, latency_ms=float(latency_ms)) if record.key == key else record for record in history)


def history_csv(history: tuple[RunRecord, ...]) -> bytes:
    """The history as UTF-8 CSV: the table's columns plus each run's config JSON."""
    buffer = io.StringIO()
    rows = [{**record.to_row(), "metric": record.metric, "config JSON": record.config_json} for record in history]
    columns = list(dict.fromkeys(column for row in rows for column in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def layer_format(choice: LayerQuant) -> str:
    """A layer's choice in a few characters, e.g. "W int8 per_channel / A uint8", "W int4", "FP32"."""
    if choice.is_fp32:
        return "FP32"
    weights = "W fp32" if choice.weights is None else f"W {choice.weights.format.name}"
    if choice.weights is not None and choice.weights.granularity.value != "per_tensor":
        weights += f" {choice.weights.granularity.value}"
    return weights if choice.activations is None else f"{weights} / A {choice.activations.format.name}"

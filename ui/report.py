"""Downloadable reports of the trade-offs page: a CSV table and a Markdown report with the config."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from quant_core.config import QuantConfig

# Column name in the frame → heading in the reports, in report order.
REPORT_COLUMNS = {
    "variant": "variant",
    "kind": "kind",
    "accuracy": "accuracy (%)",
    "accuracy_change_pp": "Δ accuracy vs FP32 (pp)",
    "streaming_accuracy": "streaming accuracy (%)",  # data that streams (docs/data.md): own state carried
    "size_kb": "size (KB)",
    "size_ratio": "size vs FP32",
    "latency_ms": "latency median (ms)",
    "latency_p10_ms": "latency p10 (ms)",
    "latency_p90_ms": "latency p90 (ms)",
    "speedup": "speed-up vs FP32",
}


@dataclass(frozen=True)
class MeasurementSettings:
    """How latency was measured, to be printed next to every latency figure."""

    batch_size: int
    threads: int
    warmup: int
    repeats: int
    provider: str = "CPUExecutionProvider"
    cpu_count: int = 0  # CPU cores of the machine that measured (0: not recorded)

    def describe(self) -> str:
        machine = f" on a machine with {self.cpu_count} CPU core(s)" if self.cpu_count else ""
        return (f"onnxruntime {self.provider}, batch size {self.batch_size}, {self.threads} intra-op thread(s), "
                f"{self.warmup} warm-up run(s) then {self.repeats} timed run(s) per variant{machine}; "
                "latency = median wall time of one run, error bars = 10th to 90th percentile")


def report_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The before/after table as shown and downloaded: percentages, rounded, human headings."""
    table = frame[[c for c in REPORT_COLUMNS if c in frame.columns]].copy()
    table["accuracy"] = table["accuracy"] * 100
    headings = dict(REPORT_COLUMNS)
    if "metric" in frame.columns and len(frame):  # the task's headline metric, not always accuracy
        metric = str(frame["metric"].iloc[0])
        change = f"Δ {metric} (pp)" if "vs FP32" in metric else f"Δ {metric} vs FP32 (pp)"
        headings.update(accuracy=f"{metric} (%)", accuracy_change_pp=change, streaming_accuracy=f"streaming {metric} (%)")
    if "streaming_accuracy" in table.columns:
        table["streaming_accuracy"] = table["streaming_accuracy"] * 100
    latency = [c for c in table.columns if c.startswith("latency")]
    # Small models run in microseconds: keep latency to 10 ns, the rest to 3 decimals.
    table[latency] = table[latency].round(5)
    return table.round({c: 3 for c in table.columns if c not in latency}).rename(columns=headings)


def tradeoffs_csv(frame: pd.DataFrame) -> bytes:
    """The before/after table as UTF-8 CSV."""
    return report_table(frame).to_csv(index=False).encode("utf-8")


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "—" if value != value else f"{value:g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def tradeoffs_markdown(frame: pd.DataFrame, *, model_name: str, config: QuantConfig,
                       settings: MeasurementSettings, notes: list[str] = ()) -> str:
    """A self-contained Markdown report: what was measured and how, the table, and the config JSON."""
    parts = [
        f"# Quantization trade-offs: {model_name}",
        "",
        "## How this was measured",
        "",
        settings.describe() + ".",
        "Accuracy (the task's headline metric, docs/tasks.md) is measured on the evaluation split; simulated variants (formats without an "
        "onnxruntime kernel) have a simulated accuracy and a size but no latency.",
        *(f"- {note}" for note in notes),
        "",
        "## Results",
        "",
        _markdown_table(report_table(frame)),
        "",
        f"## Mixed-precision config (`{config.name}`)",
        "",
        "```json",
        config.to_json(),
        "```",
        "",
    ]
    return "\n".join(parts)

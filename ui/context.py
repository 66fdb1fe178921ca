"""What a page knows about the current model, its data and config (`LabContext`), and its cache key of the task.

Below every other ui module: the caches (`ui/cache.py`), the run log and the views take a context;
`ui/setup.py` makes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from quant_core.config import QuantConfig

if TYPE_CHECKING:
    from quant_core.engine.tasks import Task
    from quant_core.model.data import Dataset
    from quant_core.model.model_io import ModelInfo, PreparedModel


@dataclass(frozen=True, eq=False)
class LabContext:
    """Everything a page needs about the current model, its data and the current config."""

    model_key: str  # content hash of the model bytes: the cache key
    model_name: str
    prepared: PreparedModel
    info: ModelInfo
    data: Dataset | None  # all the model's data (the demos: the 797 held-out digits)
    calibration_data: Dataset | None  # the calibration split of `data`
    evaluation_data: Dataset | None  # the evaluation split of `data`
    config: QuantConfig
    data_key: str = ""  # content key of the data ("" without data)
    data_name: str = ""  # e.g. "digits (held-out demo data)" or the uploaded file name
    is_demo: bool = False
    task: Task | None = None  # what the output is for, which sets the metric (None: inferred by the Evaluator)
    # With methods in the config (quant_core.methods): `prepared` and `model_key` are the transformed
    # model's; `original` / `original_key` the model as opened; `reference` the original when a method
    # changed the FP32 function (metrics stay against it); `methods_report` what the methods did.
    original: PreparedModel | None = None
    original_key: str = ""
    reference: PreparedModel | None = None
    methods_report: object = None

    def without_methods(self) -> LabContext:
        """This context for the model as opened and the config without its methods (the "before")."""
        if self.original is None:
            return replace(self, config=self.config.with_methods(()))
        return replace(self, prepared=self.original, info=self.original.info, model_key=self.original_key,
                       config=self.config.with_methods(()), original=None, original_key="", reference=None,
                       methods_report=None)


def task_key(ctx: LabContext) -> str:
    """The context's task as a cache key ("" when inferred: the Evaluator's own)."""
    task = getattr(ctx, "task", None)
    return "" if task is None else json.dumps(task.to_dict(), sort_keys=True)

"""The task on every page: the sidebar's Task section (inferred kind, override, scored output, option)
and how a task's metrics read (labels, values, changes vs FP32). docs/tasks.md describes the kinds."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st

from quant_core.errors import QuantLabError
from quant_core.engine.tasks import Metric, Task, TaskKind, check_task, infer_task
from ui import state

INFERRED = "inferred"
# The one option each kind shows: (widget label, Task field, help).
_OPTIONS = {
    TaskKind.CLASSIFICATION: ("Class axis", "axis", "the output axis that holds the classes (-1: the last)"),
    TaskKind.SEQUENCE: ("Class axis", "axis", "the output axis that holds the classes (-1: the last)"),
    TaskKind.DETECTION: ("Channel axis", "axis", "the axis of the class channels (1: channels-first heads)"),
    TaskKind.CTC: ("CTC blank index", "blank", "the class CTC uses as blank (0, or -1 for the last class)"),
    TaskKind.EMBEDDING: ("k of recall@k", "k", "neighbours each embedding retrieves among the FP32 ones"),
}
_HELP = ("What the model's output is for: it sets the metric every page shows and sweeps rank by. Inferred from "
         "the output's shape and name; override it when the guess is wrong.")


def current_task(info, model_key: str) -> Task:
    """The task chosen for this model in the sidebar, else the one inferred from its outputs."""
    return state.get_task(model_key) or infer_task(info)


def _choose(info, model_key: str, make) -> None:
    """Make `make(current task)` this model's task when it fits the model; else say why and keep the task."""
    try:
        task = make(current_task(info, model_key))
        if task is not None:
            check_task(task, info)
    except QuantLabError as err:
        state.push_message(state.TASK_KIND, f"That task cannot apply: {err}. The previous task is kept.")
        return
    state.push_message(state.TASK_KIND, None)
    state.set_task(model_key, task)


def _use_kind(info, model_key: str) -> None:
    kind = st.session_state[state.TASK_KIND]
    _choose(info, model_key, lambda task: None if kind == INFERRED else Task(kind, output=task.output))


def _use_output(info, model_key: str) -> None:
    name = st.session_state[state.TASK_OUTPUT]
    first = info.outputs[0].name
    _choose(info, model_key, lambda task: replace(task, output=None if name == first else name))


def _use_option(info, model_key: str, field: str) -> None:
    value = int(st.session_state[state.TASK_OPTION])
    _choose(info, model_key, lambda task: replace(task, **{field: value}))


def task_section(info, model_key: str) -> Task:
    """Draw the inferred task with an override (kind, scored output, the kind's option); return the task."""
    inferred, chosen = infer_task(info), state.get_task(model_key)
    task = chosen or inferred
    st.session_state[state.TASK_KIND] = chosen.kind.value if chosen is not None else INFERRED
    st.selectbox("Task (sets the metric)", [INFERRED, *(kind.value for kind in TaskKind)], key=state.TASK_KIND,
                 on_change=_use_kind, args=(info, model_key), help=_HELP,
                 format_func=lambda value: f"inferred: {inferred.kind.value}" if value == INFERRED else value)
    names = [tensor.name for tensor in info.outputs]
    if len(names) > 1:
        st.session_state[state.TASK_OUTPUT] = task.output or names[0]
        st.selectbox("Scored output", names, key=state.TASK_OUTPUT, on_change=_use_output, args=(info, model_key),
                     help="A model with several outputs is judged on one of them.")
    if task.kind in _OPTIONS:
        label, field, help_text = _OPTIONS[task.kind]
        st.session_state[state.TASK_OPTION] = task.class_axis if field == "axis" else getattr(task, field)
        st.number_input(label, step=1, key=state.TASK_OPTION, on_change=_use_option, args=(info, model_key, field),
                        help=help_text)
    if message := state.get_message(state.TASK_KIND):
        st.error(message)
    st.caption(f"Scored: {task.describe()}. Headline metric: {headline_text(task)}.")
    return task


def short_headline(task: Task | None) -> str:
    """The headline metric in a few words, before the labels are known ("accuracy (or agreement)")."""
    if task is None or task.kind in (TaskKind.CLASSIFICATION, TaskKind.SEQUENCE):
        return "accuracy (or agreement)"
    return metric_name(task.headline_name, task)


def headline_text(task: Task) -> str:
    """What the task's pages and sweeps rank by, in words (labels replace FP32 where they fit)."""
    return {TaskKind.CLASSIFICATION: "accuracy with labels, else top-1 agreement with FP32",
            TaskKind.SEQUENCE: "per-position accuracy with labels, else per-position agreement with FP32",
            TaskKind.CTC: "1 − CER against label sequences, else against FP32's greedy decode",
            TaskKind.EMBEDDING: f"recall@{task.k} of the FP32 nearest neighbours",
            TaskKind.DETECTION: f"top-1 agreement with FP32 along axis {task.class_axis}",
            TaskKind.REGRESSION: "cosine similarity with FP32"}[task.kind]


# -- how metrics read -----------------------------------------------------------------------------------

_LABELS = {Metric.ACCURACY: "Accuracy", Metric.AGREEMENT: "Top-1 agreement", Metric.COSINE: "Cosine similarity",
           Metric.SQNR: "Output SQNR"}
_FRACTIONS = {Metric.AGREEMENT, Metric.ACCURACY, Metric.SEQUENCE_MATCH, Metric.CER, Metric.CHARACTER_ACCURACY,
              Metric.LABEL_SEQUENCE_MATCH, Metric.LABEL_CER, Metric.LABEL_CHARACTER_ACCURACY, Metric.RECALL}
_LOWER_IS_BETTER = {Metric.CER, Metric.LABEL_CER, Metric.MAX_SCORE_CHANGE, Metric.MAX_ABS_ERROR}
_COSINES = {Metric.COSINE, Metric.SAMPLE_COSINE, Metric.WORST_COSINE}


def metric_name(name: str, task: Task | None = None) -> str:
    """A metric's name in running text: "accuracy", "top-1 agreement", "recall@5"."""
    return f"recall@{task.k}" if name == Metric.RECALL and task is not None else name


def metric_label(name: str, task: Task | None = None) -> str:
    """How a metric is titled on a page: "Accuracy", "Top-1 agreement", "Recall@5", "1 − CER vs FP32"."""
    if name == Metric.RECALL and task is not None:
        return f"Recall@{task.k}"
    return _LABELS.get(name, name[:1].upper() + name[1:])


def metric_text(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name == Metric.SQNR:
        return "∞ (identical)" if value == float("inf") else f"{value:.1f} dB"
    if name in _FRACTIONS:
        return f"{value:.2%}"
    if name in _COSINES:
        return f"{value:.5f}"
    return f"{value:.4g}"


def metric_delta(name: str, value: float | None, fp32: float | None) -> str | None:
    """The change vs FP32 as st.metric's delta (None when there is nothing to compare)."""
    if value is None or fp32 is None or name == Metric.SQNR:
        return None
    if name in _FRACTIONS:
        return f"{(value - fp32) * 100:+.2f} pp vs FP32"
    return f"{value - fp32:+.5f} vs FP32" if name in _COSINES else f"{value - fp32:+.4g} vs FP32"


def delta_color(name: str) -> str:
    return "inverse" if name in _LOWER_IS_BETTER else "normal"


def ordered_metrics(score) -> list[str]:
    """The score's metric names, headline first."""
    return [score.headline] + [name for name, _ in score.metrics if name != score.headline]

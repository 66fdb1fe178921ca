"""The Learn page's lessons: each module has a TITLE and a `render(ctx)` that draws text, a live chart
and one question. Widget keys are prefixed per lesson ("l1_bits", "l2_threshold", ...)."""
from __future__ import annotations

import streamlit as st

from ui.lessons import (calibration_data, equalization, group_outliers, mixed_precision, number_formats, ptq_vs_qat,
                        rounding_clipping, scale_zero_point, schemes)
from ui.setup import page_errors

LESSON = "lesson"  # the lesson selector's widget key
_LAST_LESSON = "_lab_lesson"  # plain session state: Streamlit forgets a widget's value when its page is left
LESSONS = (scale_zero_point, rounding_clipping, schemes, number_formats, calibration_data, ptq_vs_qat,
           mixed_precision, equalization, group_outliers)


def lesson_titles() -> list[str]:
    return [lesson.TITLE for lesson in LESSONS]


def choose_lesson() -> str:
    """The lesson selector; returns the chosen title. The choice survives a visit to another page."""
    if LESSON not in st.session_state and st.session_state.get(_LAST_LESSON) in lesson_titles():
        st.session_state[LESSON] = st.session_state[_LAST_LESSON]
    title = st.radio("Lesson", lesson_titles(), key=LESSON, horizontal=True, label_visibility="collapsed")
    st.session_state[_LAST_LESSON] = title
    return title


def render_lesson(title: str, ctx) -> None:
    """Draw the lesson called `title`; its errors show as one line, never as a traceback."""
    lesson = next(lesson for lesson in LESSONS if lesson.TITLE == title)
    st.header(title)
    with page_errors(f"the lesson “{title}”"):
        lesson.render(ctx)

"""A pytest plugin for the notebooks (``make notebooks`` runs them under nbval; pyproject.toml loads it with
``-p utils.course.nbval_warnings``): a cell that shows the student a Python warning fails, so that warnings spam
cannot creep back in with a new library version. A warning the course knows to be harmless is silenced where it
arises (``utils/course/runtime.py``), not here."""

from __future__ import annotations

import re

import pytest

WARNING = re.compile(r"\b\w*Warning: ")  # how Python prints a warning: "file.py:12: FutureWarning: ..."


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    outputs = getattr(item, "test_outputs", None) or []  # nbval's cells keep what the kernel sent
    shown = [out.get("text", "") for out in outputs if out.get("output_type") == "stream"]
    if warned := [line for text in shown for line in text.splitlines() if WARNING.search(line)]:
        raise AssertionError(f"the cell shows {len(warned)} warning line(s) to the student: {warned[0][:300]}")
    return result

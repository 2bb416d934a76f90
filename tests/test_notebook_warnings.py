"""utils/course/nbval_warnings.py fails a notebook cell that shows a Python warning (nbval, as `make notebooks` runs
it): checked on two small notebooks in a folder of their own, with the plugin loaded as pyproject.toml loads it."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from utils.course.config import PROJECT_ROOT

pytestmark = pytest.mark.slow


def run_nbval(folder, cells: list[str]) -> subprocess.CompletedProcess:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nbformat.write(notebook, folder / "check.ipynb")
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-p", "utils.course.nbval_warnings",
               "-q", "check.ipynb"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_cell_that_shows_a_warning_fails(tmp_path):
    warns = run_nbval(tmp_path, ["print('fine')", "import warnings\nwarnings.warn('np.object will change', FutureWarning)"])
    assert warns.returncode == 1, warns.stdout
    assert "1 failed, 1 passed" in warns.stdout
    assert "the cell shows 1 warning line(s) to the student" in warns.stdout and "FutureWarning: np.object" in warns.stdout


def test_cells_without_warnings_pass(tmp_path):
    quiet = run_nbval(tmp_path, ["print('Warning signs in an X-ray: none')", "import sys\nprint('to stderr', file=sys.stderr)"])
    assert quiet.returncode == 0 and "2 passed" in quiet.stdout, quiet.stdout

"""The command line: one-line errors with exit 2, and prepare sharing the notebooks' code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import write_tree

from utils.cli import main
from utils.config import PROJECT_ROOT


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "utils", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "--dataset", "nope"], "Unknown dataset 'nope'"),
        (["prepare"], "--dataset"),
        (["frobnicate"], "invalid choice"),
        (["prepare", "--dataset", "pneumonia", "--source", "/definitely/not/here"], "does not exist"),
        (["prepare", "--dataset", "pneumonia", "--profile", "giant"], "invalid choice: 'giant'"),
    ],
)
def test_bad_input_gives_one_line_error(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_prepare_prints_split_table_and_manifest_path(tmp_path, monkeypatch, capsys):
    source = write_tree(
        tmp_path / "archive",
        {
            "train/NORMAL/IM-{i:04d}-0001.png": 8,
            "train/PNEUMONIA/person{i}_virus_1.png": 8,
            "train/PNEUMONIA/person5{i}_bacteria_1.png": 8,
            "test/PNEUMONIA/person8{i}_bacteria_1.png": 2,
            "test/NORMAL/IM-9{i:03d}-0001.png": 2,
            "test/PNEUMONIA/person9{i}_virus_1.png": 2,
        },
    )
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    assert main(["prepare", "--dataset", "pneumonia3", "--source", str(source), "--profile", "smoke"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "data" / "pneumonia3" / "manifest.csv")
    assert any(line.startswith("total") for line in out)
    # the CLI refuses the classes pneumonia3 needs but the folder lacks
    assert main(["prepare", "--dataset", "pneumonia3", "--source", str(source / "test" / "NORMAL")]) == 2

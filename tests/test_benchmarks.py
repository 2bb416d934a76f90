"""The benchmark scripts skip cleanly without the shared images and parse their options."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from utils.config import PROJECT_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["real_data", "pipeline"])
def test_benchmark_skips_with_a_message_when_the_images_are_absent(name, tmp_path, capsys):
    assert load_script(name).main(["--source", str(tmp_path / "missing")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Skipped: ") and str(tmp_path / "missing") in out


def test_real_data_options_and_layout_check(tmp_path):
    real_data = load_script("real_data")
    args = real_data.parse_args(["--models", "cnn", "--epochs", "2", "1", "--image-size", "96"])
    assert args.models == ["cnn"] and args.epochs == [2, 1] and args.image_size == 96
    assert args.profile == "laptop" and args.source == real_data.DEFAULT_SOURCE
    for folder in ("train/NORMAL", "train/PNEUMONIA", "test/NORMAL"):
        (tmp_path / folder).mkdir(parents=True)
    assert "missing test/PNEUMONIA" in real_data.source_problem(tmp_path)
    (tmp_path / "test/PNEUMONIA").mkdir()
    assert real_data.source_problem(tmp_path) is None
    assert real_data.weights_for("cnn", Path("x.h5")) == "none"
    with pytest.raises(SystemExit, match="weights file"):
        real_data.weights_for("mobilenet_025", tmp_path / "absent.h5")

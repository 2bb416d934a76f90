"""Shared test helpers: tiny image trees written with Pillow, a small synthetic dataset made once per session, a
hermetic environment (no ``CXR_*`` or Kaggle variables leak in)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CXR_VARIABLES = ("CXR_PROFILE", "CXR_DATASET", "CXR_DATA_DIR", "CXR_OUTPUT_DIR", "CXR_SEED", "CXR_SOURCE", "CXR_WEIGHTS")
KAGGLE_VARIABLES = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR")
# Small enough to generate in a few seconds, large enough that every split gets both classes.
SMALL_COUNTS = {"train": {"NORMAL": 14, "BACTERIA": 10, "VIRUS": 10}, "test": {"NORMAL": 6, "BACTERIA": 3, "VIRUS": 3}}


def pytest_configure(config: pytest.Config) -> None:
    """The warnings the course silences for students (``utils.course.runtime.HARMLESS_WARNINGS``) are silenced in
    the tests too, so that the summary shows only warnings worth reading."""
    from utils.course.runtime import HARMLESS_WARNINGS

    for message in HARMLESS_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


def write_image(path: Path, size: tuple[int, int] = (40, 32), mode: str = "L", seed: int = 0) -> Path:
    """A small random image at ``path`` (format from the suffix); returns the path."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def write_tree(root: Path, files: dict[str, int]) -> Path:
    """Write ``{relative path pattern: count}``; the pattern holds ``{i}`` for the running number."""
    for pattern, count in files.items():
        for i in range(count):
            relative = pattern.format(i=i)
            write_image(root / relative, seed=zlib.crc32(relative.encode()))  # distinct bytes per file
    return root


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No course or Kaggle setting of the developer's shell reaches a test; Keras's cache is an empty folder."""
    for name in (*CXR_VARIABLES, *KAGGLE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.getbasetemp() / "keras-home"))


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the Kermany layout (with lesion masks), generated once per session."""
    from utils.course.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "synthetic", SMALL_COUNTS, seed=3)



def one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The one ``error:`` line on stderr (and nothing else there)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]

"""Shared test helpers: tiny image trees written with Pillow, and the optional real data in ../shared."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.config import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared"


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


@pytest.fixture
def shared_dir() -> Path:
    """``../shared`` beside the project, or skip (a user's machine has none)."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (it exists only on the course's build machines)")
    return SHARED

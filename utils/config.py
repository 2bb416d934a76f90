"""Run profiles and settings, read from environment variables.

One variable, ``CXR_PROFILE``, picks how big a run is:

========  ==========  =====  ======================  ===========================  =======
profile   image size  batch  epochs (head, finetune)  images per class and split   weights
========  ==========  =====  ======================  ===========================  =======
smoke     64          16     1, 1                    16                           none
laptop    128         32     3, 2                    train 500, val 150, test all  auto
full      224         32     15, 20 (early stopping)  all                          auto
========  ==========  =====  ======================  ===========================  =======

The default is ``full`` when TensorFlow sees a GPU, else ``laptop``. Other settings: ``CXR_DATASET``,
``CXR_DATA_DIR`` (default ``data/``), ``CXR_OUTPUT_DIR`` (default ``outputs/``), ``CXR_SEED`` (default 42),
``CXR_SOURCE`` (an extracted archive to use instead of downloading) and ``CXR_WEIGHTS``
(``imagenet`` | ``none`` | ``auto`` | a file path; overrides the profile's weights).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")


class ConfigError(ValueError):
    """A setting has a value the course cannot use; the message says which values are allowed."""


@dataclass(frozen=True)
class Profile:
    """How big a run is: input size, batch, epochs and how many images per class and split."""

    name: str
    image_size: int
    batch_size: int
    epochs_head: int
    epochs_finetune: int
    max_per_class: dict[str, int | None] = field(default_factory=dict)
    weights: str = "auto"
    patience: int = 3
    description: str = ""

    def limit(self, split: str) -> int | None:
        """Largest number of images per class for ``split`` (None = all)."""
        return self.max_per_class.get(split)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        image_size=64,
        batch_size=16,
        epochs_head=1,
        epochs_finetune=1,
        max_per_class={"train": 16, "val": 16, "test": 16},
        weights="none",
        patience=1,
        description="CI check: tiny inputs, 16 images per class and split, one epoch, random weights",
    ),
    "laptop": Profile(
        name="laptop",
        image_size=128,
        batch_size=32,
        epochs_head=3,
        epochs_finetune=2,
        max_per_class={"train": 500, "val": 150, "test": None},
        weights="auto",
        patience=2,
        description="CPU-sized: 128 px, capped training images, a few epochs",
    ),
    "full": Profile(
        name="full",
        image_size=224,
        batch_size=32,
        epochs_head=15,
        epochs_finetune=20,
        max_per_class={"train": None, "val": None, "test": None},
        weights="auto",
        patience=4,
        description="GPU-sized: 224 px, all images, early stopping",
    ),
}


def gpu_available() -> bool:
    """True when a GPU is visible: TensorFlow's view if it is loaded, else the NVIDIA driver's device files
    (so that choosing a profile does not cost a TensorFlow import)."""
    if "tensorflow" in sys.modules:
        return bool(sys.modules["tensorflow"].config.list_physical_devices("GPU"))
    gpus = Path("/proc/driver/nvidia/gpus")
    return Path("/dev/nvidia0").exists() or (gpus.is_dir() and any(gpus.iterdir()))


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name``, else ``$CXR_PROFILE``, else ``full`` on a GPU and ``laptop`` on a CPU."""
    name = name or os.environ.get("CXR_PROFILE") or ("full" if gpu_available() else "laptop")
    key = name.strip().lower()
    if key not in PROFILES:
        raise ConfigError(f"Unknown profile {name!r}: set CXR_PROFILE to one of {', '.join(PROFILES)}.")
    return PROFILES[key]


def _env_path(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    path = Path(value).expanduser() if value else default
    return path if path.is_absolute() else (PROJECT_ROOT / path)


@dataclass(frozen=True)
class Settings:
    """Everything a notebook or the command line needs to know about where and how to run."""

    profile: Profile
    dataset: str | None
    data_dir: Path
    output_dir: Path
    seed: int
    source: Path | None
    weights: str

    def with_profile(self, name: str) -> Settings:
        """A copy with another profile (its weights too, unless CXR_WEIGHTS pins them)."""
        profile = get_profile(name)
        weights = os.environ.get("CXR_WEIGHTS") or profile.weights
        return replace(self, profile=profile, weights=weights)


def get_settings(profile: str | None = None) -> Settings:
    """Read all ``CXR_*`` settings from the environment, with the course's defaults."""
    chosen = get_profile(profile)
    seed_text = os.environ.get("CXR_SEED", "42")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"CXR_SEED must be a whole number, got {seed_text!r}.") from None
    source = os.environ.get("CXR_SOURCE")
    return Settings(
        profile=chosen,
        dataset=os.environ.get("CXR_DATASET") or None,
        data_dir=_env_path("CXR_DATA_DIR", PROJECT_ROOT / "data"),
        output_dir=_env_path("CXR_OUTPUT_DIR", PROJECT_ROOT / "outputs"),
        seed=seed,
        source=Path(source).expanduser().resolve() if source else None,
        weights=os.environ.get("CXR_WEIGHTS") or chosen.weights,
    )

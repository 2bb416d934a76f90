"""Run profiles and settings, read from ``CXR_*`` environment variables once, into one :class:`Settings`.

One variable, ``CXR_PROFILE``, picks how big a run is (``smoke`` for CI, ``laptop`` for a CPU, ``full`` for a
GPU; default ``full`` when a GPU is visible, else ``laptop``). The others: ``CXR_DATASET``, ``CXR_DATA_DIR``
(default ``data/``), ``CXR_OUTPUT_DIR`` (default ``outputs/``), ``CXR_SEED`` (42), ``CXR_SOURCE`` (an extracted
archive to read instead of downloading) and ``CXR_WEIGHTS`` (``imagenet`` | ``auto`` | ``cached`` | ``none`` |
a file). Code below the notebooks and the command line never reads the environment: it gets ``Settings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val", "test")
WEIGHT_CHOICES = ("imagenet", "auto", "cached", "none")


class ConfigError(ValueError):
    """A setting has a value the course cannot use; the message says which values are allowed."""


@dataclass(frozen=True)
class Profile:
    """How big a run is: input size, batch, epochs, learning rate and how many images each split keeps."""

    name: str
    image_size: int
    batch_size: int
    epochs: int  # a network trained from scratch (the custom CNN)
    head_epochs: int  # transfer learning, phase 1: the new head on a frozen backbone
    finetune_epochs: int  # phase 2: the top of the backbone unfrozen, learning rate / 10
    images: dict[str, int | None] = field(default_factory=dict)  # per split, class shares kept; None = all
    learning_rate: float = 1e-3
    patience: int = 3
    weights: str = "auto"
    eager: bool = False  # run Keras steps eagerly: for tiny runs, tracing graphs costs more than it saves
    description: str = ""
    recipes: dict[str, dict] = field(default_factory=dict)  # per model: the numbers that differ for it


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke", 64, 16, epochs=2, head_epochs=1, finetune_epochs=1,
        images={"train": 64, "val": 32, "test": 48}, patience=2, weights="cached", eager=True,
        description="CI check: 64 px, 64 training images, 2 epochs; ImageNet weights only where on disk",
    ),
    "laptop": Profile(
        "laptop", 128, 32, epochs=15, head_epochs=5, finetune_epochs=10,
        images={"train": 1000, "val": 300, "test": None}, patience=4,
        description="CPU: 128 px, 1,000 training images, up to 15 epochs with early stopping; the custom CNN on "
                    "every image; MobileNet 0.25 at 224 px on every image, 5 + 10 epochs",
        # Per-model recipes measured on the Kermany images (README, Results): the CNN (with its stride-2 stem)
        # scores at least as high on validation with every training image as it did on 2,000 without the stem, in
        # half the time or less, and validates on the whole validation split (every seed on the same images); the
        # course's best CPU recipe, MobileNet 0.25, trains on every image at 224 px.
        recipes={"cnn": dict(images={"train": None, "val": None, "test": None}),
                 "mobilenet_025": dict(image_size=224, images={"train": None, "val": None, "test": None},
                                       epochs=15, head_epochs=5, finetune_epochs=10, patience=6)},
    ),
    "full": Profile(
        "full", 224, 32, epochs=40, head_epochs=10, finetune_epochs=30,
        images={"train": None, "val": None, "test": None}, patience=6,
        description="GPU: 224 px, every image, up to 40 epochs with early stopping",
    ),
}  # fmt: skip


def gpu_available() -> bool:
    """True when an NVIDIA GPU is visible (checked without importing TensorFlow)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return Path("/dev/nvidia0").exists() or (gpus.is_dir() and any(gpus.iterdir()))


def get_profile(name: str | None = None) -> Profile:
    """The profile ``name``, else ``$CXR_PROFILE``, else ``full`` on a GPU and ``laptop`` on a CPU."""
    name = name or os.environ.get("CXR_PROFILE") or ("full" if gpu_available() else "laptop")
    if name.strip().lower() not in PROFILES:
        raise ConfigError(f"Unknown profile {name!r}: set CXR_PROFILE to one of {', '.join(PROFILES)}.")
    return PROFILES[name.strip().lower()]


def check_profile(profile: Profile) -> Profile:
    """``profile`` unchanged, or a :class:`ConfigError` naming the first number that makes no sense."""
    if profile.image_size < 32:
        raise ConfigError(f"The image size must be at least 32 px (the models need it), got {profile.image_size}.")
    if profile.batch_size < 1:
        raise ConfigError(f"The batch size must be at least 1, got {profile.batch_size}.")
    epochs = (profile.head_epochs, profile.finetune_epochs)
    if min(epochs) < 0 or profile.epochs < 1 or sum(epochs) < 1:
        raise ConfigError(f"Epochs must be >= 0 and leave at least one epoch to train, got {profile.epochs} "
                          f"(from scratch) and {epochs[0]} + {epochs[1]} (transfer: head + fine-tuning).")
    if not 0 < profile.learning_rate < 1:
        raise ConfigError(f"The learning rate must lie in (0, 1), got {profile.learning_rate}.")
    return profile


def _path(variable: str, default: str) -> Path:
    path = Path(os.environ.get(variable) or default).expanduser()
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{variable}={path} is a file, not a folder: point {variable} at a folder (it is created "
                          "when missing).")  # fmt: skip
    return path


def check_weights(weights: str) -> str:
    """A weights choice (lower-cased) or an existing file; a :class:`ConfigError` otherwise."""
    text = str(weights).strip()
    if text.lower() in WEIGHT_CHOICES:
        return text.lower()
    if not Path(text).expanduser().is_file():
        raise ConfigError(
            f"Weights {text!r} are neither one of {', '.join(WEIGHT_CHOICES)} nor an existing file: "
            "set CXR_WEIGHTS (or --weights) to one of those, or to a Keras 'no top' .h5 file."
        )
    return str(Path(text).expanduser().resolve())


@dataclass(frozen=True)
class Settings:
    """Everything a notebook or a command needs to know about where and how to run, resolved once."""

    profile: Profile
    dataset: str | None
    data_dir: Path
    output_dir: Path
    seed: int
    source: Path | None
    weights: str

    def with_(self, **changes) -> Settings:
        """A copy with other settings; profile numbers (``image_size``, ``epochs``...) go into the profile."""
        fields = set(Profile.__dataclass_fields__) - {"name", "weights", "description", "recipes"}
        profile = replace(self.profile, **{k: v for k, v in changes.items() if k in fields})
        rest = {k: v for k, v in changes.items() if k not in fields}
        if "weights" in rest:
            rest["weights"] = check_weights(rest["weights"])
        return replace(self, profile=check_profile(profile), **rest)

    def for_model(self, model_name: str) -> Settings:
        """These settings with the profile's own recipe for ``model_name``, where it has one."""
        return self.with_(**self.profile.recipes.get(model_name, {}))


def get_settings(profile: str | None = None) -> Settings:
    """Read all ``CXR_*`` settings from the environment, with the course's defaults."""
    chosen = get_profile(profile)
    seed_text = os.environ.get("CXR_SEED", "42")
    digits = seed_text.strip()  # isdecimal: "-3", "+5", "1_000" and "²" are refused, as int() alone would not
    if not (digits.isascii() and digits.isdecimal() and int(digits) < 2**32):  # NumPy, sklearn and Keras need it
        raise ConfigError(f"CXR_SEED must be a whole number from 0 to {2**32 - 1}, got {seed_text!r}.")
    seed = int(digits)
    source = os.environ.get("CXR_SOURCE")
    return Settings(
        profile=chosen,
        dataset=os.environ.get("CXR_DATASET") or None,
        data_dir=_path("CXR_DATA_DIR", "data"),
        output_dir=_path("CXR_OUTPUT_DIR", "outputs"),
        seed=seed,
        source=Path(source).expanduser().resolve() if source else None,
        weights=check_weights(os.environ.get("CXR_WEIGHTS") or chosen.weights),
    )

"""What every notebook's first code cell does: ``ctx = setup_notebook()``.

On Colab it installs the few packages Colab lacks (never touching Colab's TensorFlow or Keras) and reads Kaggle
credentials from Colab secrets. Everywhere it seeds Python, NumPy and TensorFlow, lets a GPU grow its memory,
quietens library chatter, sets plot and table defaults, picks the dataset and prints what this run uses.
Running it twice does no harm.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from .config import Settings, get_settings
from .manifest import resolve_dataset
from .runtime import quiet_libraries

COLAB_PACKAGES = ("kaggle", "seaborn", "scikit-learn", "pillow", "pandas", "matplotlib", "scipy")
PROTECTED = ("tensorflow", "tf-keras", "keras")  # Colab's own builds stay as they are


class NotebookSetupError(RuntimeError):
    """The notebook cannot run here; the message says what to change."""


@dataclass(frozen=True)
class NotebookContext:
    """What a notebook needs after setup: the settings (dataset resolved), why that dataset, and the hardware."""

    settings: Settings
    dataset_reason: str
    in_colab: bool
    gpus: list[str] = field(default_factory=list)

    @property
    def profile(self):
        return self.settings.profile

    @property
    def dataset(self) -> str:
        return self.settings.dataset

    @property
    def output_dir(self) -> Path:
        return self.settings.output_dir

    @property
    def synthetic(self) -> bool:
        return self.dataset.startswith("synthetic")


def in_colab() -> bool:
    try:
        return "google.colab" in sys.modules or importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package at all
        return False


def _version(name: str) -> str | None:
    """The installed version of a package, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_packages(required: tuple[str, ...] = COLAB_PACKAGES) -> list[str]:
    """The packages of ``required`` that are not installed (never TensorFlow or Keras)."""
    return [name for name in required if name not in PROTECTED and not _version(name)]


def install_missing(required: tuple[str, ...] = COLAB_PACKAGES, run=subprocess.run) -> list[str]:
    """``pip install`` the packages of ``required`` that are missing, with the installed TensorFlow and Keras pinned
    so that none is replaced (pip then also keeps what they need, such as their protobuf)."""
    missing = missing_packages(required)
    if missing:
        pins = [f"{n}=={version}" for n in PROTECTED if (version := _version(n))]  # e.g. no tf-keras: not pinned
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
            constraints.write("\n".join(pins) + "\n")
        print(f"Installing {', '.join(missing)} ...", flush=True)
        result = run([sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name, *missing])
        if getattr(result, "returncode", 0):
            raise NotebookSetupError(f"pip could not install {', '.join(missing)}: check the internet connection, then re-run.")
    return missing


def export_kaggle_secrets(userdata=None) -> bool:
    """Copy KAGGLE_USERNAME and KAGGLE_KEY from Colab secrets into the environment (never printed); False when
    they are missing or not shared with this notebook."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return True
    try:
        userdata = userdata or __import__("google.colab.userdata", fromlist=["get"])
        values = {name: userdata.get(name) for name in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
    except Exception:  # no Colab, a secret missing or not shared with the notebook
        return False
    if not all(values.values()):
        return False
    os.environ.update({name: str(value).strip() for name, value in values.items()})
    return True


def upload_kaggle_json(files=None, target: Path | None = None) -> Path | None:
    """Colab's upload button for ``kaggle.json``; saved privately, never overwriting one that exists. Cancelling
    returns None (the course goes on with the synthetic images)."""
    target = target or Path.home() / ".kaggle" / "kaggle.json"
    if target.exists():
        return target
    files = files or __import__("google.colab.files", fromlist=["upload"])
    print("Choose your kaggle.json (Kaggle > Settings > API > Create New Token).", flush=True)
    uploaded = files.upload()
    if not uploaded:
        print("No file uploaded: the course goes on with the synthetic images (run this cell again to upload).")
        return None
    name, content = next(iter(uploaded.items()))
    try:
        token = json.loads(content)
        os.environ.update(KAGGLE_USERNAME=str(token["username"]), KAGGLE_KEY=str(token["key"]))
    except (ValueError, KeyError, TypeError):
        raise NotebookSetupError(f"{name} is not a Kaggle API token (keys 'username' and 'key'): download a new one.") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if isinstance(content, bytes) else str(content).encode())
    target.chmod(0o600)
    return target


def configure(seed: int, eager: bool = False) -> list[str]:
    """Seed everything, let GPUs grow their memory, quieten the libraries, set display defaults, run Keras eagerly
    when the profile says so; the GPUs' names."""
    tf = quiet_libraries()
    import keras
    import matplotlib as mpl
    import pandas as pd

    if int(keras.__version__.split(".")[0]) < 3:
        raise NotebookSetupError(f"Keras {keras.__version__} found; the course needs Keras 3 (TensorFlow >= 2.16).")
    keras.utils.set_random_seed(seed)
    tf.config.run_functions_eagerly(eager)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):  # already initialised by an earlier setup: that setting stays
            tf.config.experimental.set_memory_growth(gpu, True)
    mpl.rcParams.update({"figure.dpi": 90, "image.cmap": "gray", "axes.spines.top": False, "axes.spines.right": False})
    pd.set_option("display.precision", 3)
    pd.set_option("display.width", 120)
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]


def synthetic_notice(reason: str) -> str:
    lines = ["SYNTHETIC DATA: generated images, NOT real chest X-rays. Every number and plot below",
             "shows how the methods work, not how well they work on patients.",
             *textwrap.wrap(f"Why: {reason}. For real X-rays give Kaggle credentials (see notebook 01) or set "
                            "CXR_SOURCE=/path/to/chest_xray, then restart from notebook 01.", 86)]  # fmt: skip
    return "\n".join(["!" * 92, *(f"!! {line:<86} !!" for line in lines), "!" * 92])


def setup_notebook(colab: bool | None = None, quiet: bool = False) -> NotebookContext:
    """Prepare this notebook's environment and return its :class:`NotebookContext`."""
    colab = in_colab() if colab is None else colab
    if colab:
        install_missing()
        export_kaggle_secrets()
    settings = get_settings()
    gpus = configure(settings.seed, settings.profile.eager)
    dataset, reason = resolve_dataset(settings)
    ctx = NotebookContext(replace(settings, dataset=dataset), reason, colab, gpus)
    if not quiet:
        p = ctx.profile
        print(f"profile  {p.name}: {p.description}\ndataset  {dataset} ({reason})\noutputs  {ctx.output_dir}\n"
              f"weights  {settings.weights}   seed {settings.seed}   devices {', '.join(gpus) or 'CPU only'}"
              + (" (Colab)" if colab else "")
              + f"\nversions tensorflow {_version('tensorflow')}, keras {_version('keras')}")  # fmt: skip
        if p.name == "full" and not gpus:
            print("WARNING: the full profile on a CPU takes many hours: set CXR_PROFILE=laptop and re-run.")
        if ctx.synthetic:
            print(synthetic_notice(reason))
    return ctx

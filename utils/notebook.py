"""The logic behind every notebook's first code cell: ``ctx = setup_notebook()``.

On Colab it installs the few packages Colab lacks (never touching Colab's TensorFlow or Keras) and exports Kaggle
credentials from Colab secrets. Everywhere it sets the seeds, lets TensorFlow grow GPU memory as needed, sets
plotting and table defaults, picks the dataset and prints a banner saying what this run uses. Running it twice does
no harm. TensorFlow is imported inside the functions, so importing this module is cheap.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path

from .config import PROJECT_ROOT, Profile, Settings, get_settings
from .runtime import import_tensorflow

#: Distributions the course needs beyond what Colab always ships; only the missing ones are installed.
COLAB_PACKAGES: tuple[str, ...] = (
    "kaggle",
    "seaborn",
    "scikit-learn",
    "pillow",
    "pandas",
    "matplotlib",
    "scipy",
)
#: Never installed or upgraded by the setup cell: Colab's own builds must stay as they are.
PROTECTED_PACKAGES = frozenset({"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-keras", "keras"})
KAGGLE_SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY")
CPU_FULL_WARNING = "full profile on a CPU will take many hours: set CXR_PROFILE=laptop (or smoke) and re-run."

Runner = Callable[[Sequence[str]], object]


class NotebookSetupError(RuntimeError):
    """The notebook cannot run in this environment; the message says what to change."""


@dataclass(frozen=True)
class NotebookContext:
    """What a notebook needs after setup: settings (with the resolved dataset), paths and the hardware found."""

    settings: Settings
    profile: Profile
    dataset: str
    dataset_reason: str
    root: Path
    output_dir: Path
    in_colab: bool
    gpus: list[str] = field(default_factory=list)
    banner: str = ""

    @property
    def synthetic(self) -> bool:
        """True when the run uses generated images instead of real X-rays."""
        return self.dataset == "synthetic"


# --- Colab ---------------------------------------------------------------------------------------------------------


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no ``google`` package at all
        return False


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def missing_packages(
    required: Sequence[str] = COLAB_PACKAGES, is_installed: Callable[[str], bool] | None = None
) -> list[str]:
    """The distributions in ``required`` that are not installed, never including TensorFlow or Keras."""
    is_installed = is_installed or _installed
    return [name for name in required if name.lower() not in PROTECTED_PACKAGES and not is_installed(name)]


def _run(command: Sequence[str]) -> object:
    return subprocess.run(list(command), check=True)


def protected_pins() -> list[str]:
    """``name==version`` for each installed TensorFlow/Keras distribution, as a pip constraint."""
    pins = []
    for name in sorted(PROTECTED_PACKAGES):
        with contextlib.suppress(metadata.PackageNotFoundError):
            pins.append(f"{name}=={metadata.version(name)}")
    return pins


def install_missing(
    runner: Runner = _run,
    required: Sequence[str] = COLAB_PACKAGES,
    is_installed: Callable[[str], bool] | None = None,
) -> list[str]:
    """``pip install -q`` the missing packages in one command; returns what was installed.

    The installed TensorFlow and Keras are pinned with a constraints file, so no dependency can replace them.
    """
    missing = missing_packages(required, is_installed)
    if not missing:
        return []
    print(f"Installing {', '.join(missing)} ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "keep-tensorflow.txt"
        constraints.write_text("\n".join(protected_pins()) + "\n", encoding="utf-8")
        try:
            runner([sys.executable, "-m", "pip", "install", "-q", "-c", str(constraints), *missing])
        except subprocess.CalledProcessError as err:
            raise NotebookSetupError(
                f"pip could not install {', '.join(missing)} (exit status {err.returncode}). Check that the "
                "runtime has internet access, then re-run this cell."
            ) from None
    importlib.invalidate_caches()
    return missing


def export_kaggle_secrets(userdata: object | None = None) -> str | None:
    """Copy KAGGLE_USERNAME and KAGGLE_KEY from Colab secrets into the environment (the key is never printed).

    Returns where the credentials came from (``"environment"``, ``"kaggle.json"`` or ``"Colab secrets"``), or
    None when there are none; a secret that is missing or not shared with the notebook is not an error.
    """
    if all(os.environ.get(name) for name in KAGGLE_SECRETS):
        return "environment"
    if kaggle_json_path().exists():
        return "kaggle.json"
    if userdata is None:
        try:
            from google.colab import userdata
        except ImportError:
            return None
    values = {}
    for name in KAGGLE_SECRETS:
        try:
            values[name] = userdata.get(name)
        except Exception:  # secret missing, not shared with this notebook, or timed out
            return None
    if not all(values.values()):
        return None
    os.environ.update({name: str(value).strip() for name, value in values.items()})
    return "Colab secrets"


def kaggle_json_path() -> Path:
    """Where the Kaggle client looks for ``kaggle.json`` (``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``)."""
    folder = os.environ.get("KAGGLE_CONFIG_DIR")
    return (Path(folder) if folder else Path.home() / ".kaggle") / "kaggle.json"


def upload_kaggle_json(files: object | None = None) -> Path | None:
    """Ask for ``kaggle.json`` with Colab's upload button, save it with private permissions and export it.

    Cancelling the upload returns None: the course then goes on with the synthetic dataset.

    Only notebook 01 calls this, and only when a download is needed. An existing ``kaggle.json`` is used as it
    is, never overwritten. Outside Colab, raises with instructions instead of waiting for input.
    """
    target = kaggle_json_path()
    if target.exists():
        print(f"Using the existing {target}.")
        return target
    if files is None:
        if not in_colab():
            raise NotebookSetupError(
                f"No Kaggle credentials: save kaggle.json (Kaggle > Settings > API > Create New Token) as {target}, "
                "or set KAGGLE_USERNAME and KAGGLE_KEY, or set CXR_SOURCE to an extracted copy of the archive."
            )
        from google.colab import files
    print("Choose your kaggle.json (Kaggle > Settings > API > Create New Token).", flush=True)
    uploaded = files.upload()
    if not uploaded:
        print(
            "No file uploaded: the course goes on with the synthetic dataset (run this cell again to upload)."
        )
        return None
    name, content = next(iter(uploaded.items()))
    try:
        token = json.loads(content)
        username, key = str(token["username"]), str(token["key"])
    except (ValueError, KeyError, TypeError):
        raise NotebookSetupError(
            f"{name} is not a Kaggle API token (expected keys 'username' and 'key'): "
            "download a new one from Kaggle > Settings > API."
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if isinstance(content, bytes) else str(content).encode())
    target.chmod(0o600)
    os.environ.update(KAGGLE_USERNAME=username, KAGGLE_KEY=key)
    print(f"Saved Kaggle credentials for {username} to {target}.")
    return target


_colab_done = False


def prepare_colab(runner: Runner = _run, userdata: object | None = None) -> str | None:
    """Install what Colab lacks (once per runtime) and export Kaggle secrets; returns the credentials' source."""
    global _colab_done
    if not _colab_done:
        install_missing(runner)
        _colab_done = True
    return export_kaggle_secrets(userdata)


# --- Everywhere ----------------------------------------------------------------------------------------------------


def configure_tensorflow(seed: int) -> list[str]:
    """Seed Python, NumPy and TensorFlow, let every GPU grow its memory, and return the GPUs' names."""
    tf = import_tensorflow()  # first, so that Keras's own import of TensorFlow is already done and quiet
    import keras

    if int(keras.__version__.split(".")[0]) < 3:
        raise NotebookSetupError(
            f"Keras {keras.__version__} found; the course needs Keras 3 (TensorFlow >= 2.16). "
            "Install the versions in requirements.txt, or use a current Colab runtime."
        )
    keras.utils.set_random_seed(seed)
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised by an earlier setup: that setting stays
            tf.config.experimental.set_memory_growth(gpu, True)
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name") or gpu.name)
    return names


def configure_display() -> None:
    """Readable defaults for figures (grey X-rays, fixed size) and pandas tables."""
    import matplotlib as mpl
    import pandas as pd

    mpl.rcParams.update(
        {
            "figure.figsize": (8, 5),
            "figure.dpi": 100,
            "image.cmap": "gray",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    for option, value in {
        "display.max_columns": 50,
        "display.width": 140,
        "display.precision": 3,
        "display.max_colwidth": 80,
    }.items():
        pd.set_option(option, value)


def _resolve_dataset(settings: Settings) -> tuple[str, str]:
    from .prepare import resolve_dataset

    return resolve_dataset(settings)


def _versions() -> str:
    import keras
    import tensorflow as tf

    return f"TensorFlow {tf.__version__}, Keras {keras.__version__}"


def synthetic_warning(reason: str) -> str:
    """The loud notice shown whenever a notebook runs on generated images."""
    lines = [
        "SYNTHETIC DATA: these images are generated shapes,",
        "NOT real chest X-rays. Every number and plot below shows how",
        "the method works, not how well it works on patients.",
        "",
        *textwrap.wrap(f"Why: {reason}.", 62),
        "",
        "To use real X-rays, then restart and re-run from notebook 01:",
        "- Kaggle credentials: KAGGLE_USERNAME and KAGGLE_KEY as Colab",
        "  secrets (key icon) or environment variables, or the file",
        "  ~/.kaggle/kaggle.json; or",
        "- CXR_SOURCE=/path/to/the/extracted/archive",
    ]
    width = max(map(len, lines)) + 6
    border = "!" * width
    return "\n".join([border, *(f"!! {line:<{width - 6}} !!" for line in lines), border])


def format_banner(ctx: NotebookContext, versions: str) -> str:
    """A compact summary of the run's settings, with the loud notices that apply."""
    s = ctx.settings
    weights = s.weights + (" (random initialisation: no ImageNet weights)" if s.weights == "none" else "")
    devices = ", ".join(f"GPU {name}" for name in ctx.gpus) if ctx.gpus else "CPU only"
    rows = [
        ("profile", f"{ctx.profile.name} ({ctx.profile.description})"),
        ("dataset", f"{ctx.dataset} ({ctx.dataset_reason})"),
        ("data dir", str(s.data_dir)),
        ("outputs", str(ctx.output_dir)),
        ("seed", str(s.seed)),
        ("weights", weights),
        ("libraries", versions),
        ("devices", devices + (" (Colab)" if ctx.in_colab else "")),
    ]
    text = "Chest X-ray course: setup done\n" + "\n".join(f"{key:>10}: {value}" for key, value in rows)
    if ctx.profile.name == "full" and not ctx.gpus:
        text += f"\nWARNING: {CPU_FULL_WARNING}"
    if ctx.synthetic:
        text += "\n" + synthetic_warning(ctx.dataset_reason)
    return text


def setup_notebook(
    *, colab: bool | None = None, runner: Runner = _run, userdata: object | None = None, quiet: bool = False
) -> NotebookContext:
    """Prepare this notebook's environment and return its :class:`NotebookContext`; safe to call again.

    ``colab`` overrides the detection of Colab; ``runner`` and ``userdata`` replace pip and Colab secrets (tests).
    """
    colab = in_colab() if colab is None else colab
    if colab:
        prepare_colab(runner, userdata)
    settings = get_settings()
    gpus = configure_tensorflow(settings.seed)
    configure_display()
    dataset, reason = _resolve_dataset(settings)
    settings = replace(settings, dataset=dataset)
    ctx = NotebookContext(
        settings=settings,
        profile=settings.profile,
        dataset=dataset,
        dataset_reason=reason,
        root=PROJECT_ROOT,
        output_dir=settings.output_dir,
        in_colab=colab,
        gpus=gpus,
    )
    ctx = replace(ctx, banner=format_banner(ctx, _versions()))
    if not quiet:
        print(ctx.banner, flush=True)
    return ctx

"""Run folders: ``outputs/runs/<dataset>/<model>/<YYYYmmdd-HHMMSS[-N]>/`` and the ``LATEST`` pointer.

A run folder holds ``model.keras``, ``history.csv``, ``config.json``, ``predictions.csv`` and ``metrics.json``.
Folders are created atomically and never reused, so a run never overwrites another; ``LATEST`` (in the model
folder) names the latest *complete* run and is replaced atomically. This module does not import TensorFlow
(only :meth:`Run.load_model` does).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RUNS_SUBDIR = "runs"
LATEST_FILE = "LATEST"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
# Which notebook trains which model: named in "no run yet" errors (the lead keeps this in step with notebooks/).
TRAINING_NOTEBOOKS: dict[str, str] = {}
DEFAULT_TRAINING_NOTEBOOK = "the training notebook in notebooks/"


class RunNotFoundError(FileNotFoundError):
    """No (complete) run exists yet; the message names the notebook or command that makes one."""


def safe_name(name: str) -> str:
    """A folder name for a dataset or model name: ``folder:/x/y`` -> ``folder_x_y-<hash>``.

    Names made of letters, digits, ``.``, ``_`` and ``-`` are kept as they are; any other name is cleaned and
    gets a short hash of the original, so two different names never share a folder.
    """
    text = str(name).strip()
    if not text:
        raise ValueError("An empty name cannot become a folder name.")
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text) and text not in (".", ".."):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60] or "name"
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def model_dir(output_dir: str | Path, dataset: str, model: str) -> Path:
    """``<output_dir>/runs/<dataset>/<model>``: the folder holding a model's runs and its LATEST file."""
    return Path(output_dir) / RUNS_SUBDIR / safe_name(dataset) / safe_name(model)


def new_run_dir(output_dir: str | Path, dataset: str, model: str, now: float | None = None) -> Path:
    """Create and return a new, empty run folder named by the current time (``-1``, ``-2``... on collision)."""
    parent = model_dir(output_dir, dataset, model)
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(TIMESTAMP_FORMAT, time.localtime(now))
    for n in range(1000):
        candidate = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            candidate.mkdir()  # atomic: fails if another run (or process) took the name
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"Could not create a new run folder in {parent}: 1000 runs in the same second?")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/Infinity
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NumPy values, Paths and NaN -> JSON-friendly)."""
    path = Path(path)
    _atomic_write(path, json.dumps(_jsonable(data), indent=2, default=str) + "\n")
    return path


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def set_latest(run_dir: str | Path) -> Path:
    """Point the model folder's ``LATEST`` file at ``run_dir`` (atomic replace)."""
    run_dir = Path(run_dir)
    latest = run_dir.parent / LATEST_FILE
    _atomic_write(latest, run_dir.name + "\n")
    return latest


def _no_run_message(output_dir: str | Path, dataset: str, model: str, detail: str) -> str:
    notebook = TRAINING_NOTEBOOKS.get(model, DEFAULT_TRAINING_NOTEBOOK)
    return (
        f"No run of {model} on {dataset} yet ({detail}): run {notebook} or "
        f"`python -m utils train --dataset {dataset} --model {model}` first "
        f"(runs are looked up in {Path(output_dir) / RUNS_SUBDIR})."
    )


def _latest_target(model_folder: Path) -> Path:
    """The run folder that ``model_folder``'s ``LATEST`` file names (not checked to exist)."""
    return model_folder / (model_folder / LATEST_FILE).read_text(encoding="utf-8").strip()


def latest_run(output_dir: str | Path, dataset: str, model: str) -> Path:
    """The latest complete run folder of ``model`` on ``dataset``; a clear error when there is none."""
    folder = model_dir(output_dir, dataset, model)
    latest = folder / LATEST_FILE
    if not latest.is_file():
        raise RunNotFoundError(_no_run_message(output_dir, dataset, model, f"no {latest}"))
    run_dir = _latest_target(folder)
    if not run_dir.is_dir() or run_dir == folder:
        raise RunNotFoundError(
            _no_run_message(output_dir, dataset, model, f"{latest} names a missing folder {run_dir.name!r}")
        )
    return run_dir


def list_latest_runs(output_dir: str | Path, dataset: str) -> list[Path]:
    """The latest run of every model trained on ``dataset`` (sorted by model name; empty when none)."""
    root = Path(output_dir) / RUNS_SUBDIR / safe_name(dataset)
    runs = []
    for latest in sorted(root.glob(f"*/{LATEST_FILE}")):
        run_dir = _latest_target(latest.parent)
        if run_dir.is_dir() and run_dir != latest.parent:
            runs.append(run_dir)
    return runs


def list_runs(output_dir: str | Path, dataset: str, model: str) -> list[Path]:
    """Every run folder of ``model`` on ``dataset``, oldest first (complete or not)."""
    folder = model_dir(output_dir, dataset, model)
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


@dataclass
class Run:
    """A run folder read back: its config, and lazy access to the model, history, predictions and metrics."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return self.config.get("status") == "complete"

    def _file(self, name: str) -> Path:
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the run {'did not finish' if not self.complete else 'is incomplete'}; "
                "train the model again."
            )
        return path

    def load_model(self, compile: bool = False):
        """The saved ``model.keras`` (best validation AUC); plain ``keras.models.load_model``."""
        import keras

        return keras.models.load_model(self._file("model.keras"), compile=compile)

    @property
    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self._file("predictions.csv"), keep_default_na=False)

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self._file("history.csv"))

    @property
    def metrics(self) -> dict[str, Any]:
        return load_json(self._file("metrics.json"))


def resolve_run_dir(path: str | Path) -> Path:
    """``path`` itself when it is a run folder; a model folder (holding ``LATEST``) gives its latest run."""
    path = Path(path)
    if (path / LATEST_FILE).is_file() and not (path / "config.json").exists():
        return _latest_target(path)
    return path


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder (a model folder resolves through its ``LATEST`` file)."""
    path = resolve_run_dir(run_dir)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise RunNotFoundError(f"{path} is not a run folder (no config.json): train a model first.")
    return Run(path, load_json(config_path))

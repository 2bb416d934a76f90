"""Run folders: ``outputs/runs/<dataset>/<model>/<YYYYmmdd-HHMMSS[-N]>/``, never reused or overwritten.

:func:`start_run` creates one when training starts (``config.json`` with status ``running``, and ``manifest.csv``:
the run's own copy of its split, so that re-preparing the dataset later cannot change what the run is scored on).
:func:`finish_run` writes ``model.keras`` (the best weights), ``history.csv``, ``predictions.csv`` (validation and
test probabilities) and the binary decision threshold chosen on validation, marks the run ``complete`` and points
the model folder's ``LATEST`` file at it. A run that stops early is marked ``interrupted`` or ``failed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import PROJECT_ROOT, Settings
from .datasets import dataset_dir_name, get_dataset
from .manifest import write_atomic

LATEST = "LATEST"
TRAINING_LOCK = ".training.lock"  # held by the process that trains a run


class RunError(FileNotFoundError):
    """A run folder is missing, incomplete or unreadable; the message says what to do."""


def _dataset_dir(output_dir: Path, dataset: str) -> Path:
    return Path(output_dir) / "runs" / dataset_dir_name(get_dataset(dataset))


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (temporary file, then rename)."""
    write_atomic(path, json.dumps(data, indent=1, default=str))


@dataclass
class Run:
    """A run folder and its ``config.json``."""

    path: Path
    config: dict[str, Any]

    @property
    def model_name(self) -> str:
        return self.config["model"]

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def threshold(self) -> float | None:
        return self.config.get("threshold")

    @property
    def decision_rule(self) -> str:
        """How this run decides, in words: ``"threshold 0.625 on p(PNEUMONIA), chosen on validation"``."""
        if self.threshold is None:
            return "the most probable class (more than two classes)"
        return f"threshold {self.threshold:.3f} on p({self.class_names[1]}), chosen on validation"

    @property
    def title(self) -> str:
        """``"cnn on synthetic (SYNTHETIC images)"``: what every figure of this run is titled with."""
        used = str(self.config["weights_used"])  # "random (...)" when ImageNet was missing, "none (random weights...)"
        notes = [n for n, on in [("SYNTHETIC images", self.config["dataset"].startswith("synthetic")),
                                 ("random weights", used.startswith("random") or "random weights" in used)] if on]  # fmt: skip
        return f"{self.model_name} on {self.config['dataset']}" + (f" ({', '.join(notes)})" if notes else "")

    def load_model(self):
        """The trained model (``model.keras``, inference only); a missing or broken file says what to do."""
        import keras

        path = self.path / "model.keras"
        if not path.is_file():
            status = self.config.get("status")
            todo = "train it again" if status == "complete" else f"resume it with `python -m utils train --resume {self.path}`"
            raise RunError(f"{self.path} has no model.keras (status {status}): {todo}.")
        try:
            return keras.models.load_model(path, compile=False)
        except Exception as err:  # a truncated, empty or foreign file
            raise RunError(f"{path} cannot be read as a Keras model ({type(err).__name__}): it is damaged; "
                           "train the model again.") from None  # fmt: skip

    def predictions(self) -> pd.DataFrame:
        """Every validation and test image with its label and class probabilities, saved when training finished."""
        if not (self.path / "predictions.csv").is_file():
            raise RunError(f"{self.path} has no predictions.csv (status {self.config.get('status', 'unknown')}): resume it "
                           f"with `python -m utils train --resume {self.path}` if it was interrupted, else train the "
                           "model again.")  # fmt: skip
        return pd.read_csv(self.path / "predictions.csv", keep_default_na=False)

    def arrays(self, split: str):
        """``(y_true, probs)`` of one split of the saved predictions."""
        rows = self.predictions().query("split == @split")
        if rows.empty:
            raise RunError(f"{self.path} has no {split!r} predictions.")
        y = rows["label"].map({c: i for i, c in enumerate(self.class_names)}).to_numpy()
        return y, rows[[f"p_{c}" for c in self.class_names]].to_numpy(float)

    def manifest(self) -> pd.DataFrame:
        """The rows (path, label, split, bytes) this run was trained and scored on."""
        if not (self.path / "manifest.csv").is_file():
            raise RunError(f"{self.path} has no manifest.csv (its own split): train the model again.")
        return pd.read_csv(self.path / "manifest.csv", keep_default_na=False)

    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "history.csv")


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "git_commit": commit or "unknown"}  # fmt: skip


def start_run(settings: Settings, model_name: str, manifest: pd.DataFrame, class_names: list[str], weights_used: str) -> Run:
    """A new run folder (its name is claimed atomically: a run never reuses another's) with ``config.json``
    (status ``running``) and the run's own ``manifest.csv``."""
    folder = _dataset_dir(settings.output_dir, settings.dataset) / model_name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        try:
            (path := folder / f"{stamp}{suffix}").mkdir()
            break
        except FileExistsError:
            continue
    config = {
        "status": "running", "model": model_name, "dataset": settings.dataset, "class_names": class_names,
        "profile": dataclasses.asdict(settings.profile), "image_size": settings.profile.image_size,
        "seed": settings.seed, "weights_used": weights_used, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "gradcam_layer": None, "threshold": None, "versions": _versions(),
    }  # fmt: skip
    manifest[[c for c in ("path", "label", "split", "bytes") if c in manifest]].to_csv(path / "manifest.csv", index=False)
    save_json(path / "config.json", config)
    return Run(path, config)


def mark_run(run: Run, status: str) -> None:
    """Record that a run stopped (``interrupted`` or ``failed``); ``python -m utils train --resume`` continues it."""
    save_json(run.path / "config.json", run.config | {"status": status})


def predict_splits(model, data) -> pd.DataFrame:
    """Validation and test probabilities of ``model``, one row per image in the manifest's order."""
    tables = []
    for split in ("val", "test"):
        rows = data.manifest[data.manifest["split"] == split]
        probs = model.predict(getattr(data, split), verbose=0)
        table = rows[["path", "label", "split"]].reset_index(drop=True)
        tables.append(table.join(pd.DataFrame(probs, columns=[f"p_{c}" for c in data.class_names])))
    return pd.concat(tables, ignore_index=True)


def save_model(model, path: Path) -> None:
    """Save ``model`` without its optimizer state (a third of the size), atomically: an uncompiled copy built from
    the model's config holds the same weights."""
    import keras

    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    tmp = path.with_name(f".{path.stem}.saving.keras")
    clean.save(tmp)
    os.replace(tmp, path)


def finish_run(run: Run, model, data, gradcam_layer: str, train_seconds: float) -> Run:
    """Save the trained model and everything later notebooks read; mark the run complete and LATEST."""
    from ..metrics import choose_threshold, roc_auc
    from ..training import read_history

    predictions = predict_splits(model, data)
    predictions.to_csv(run.path / "predictions.csv", index=False)
    read_history(run.path).to_csv(run.path / "history.csv", index=False)
    y_val, p_val = run.arrays("val")
    save_model(model, run.path / "model.keras")
    shutil.rmtree(run.path / "backup", ignore_errors=True)
    (run.path / "head.weights.h5").unlink(missing_ok=True)
    run.config |= {
        "status": "complete", "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "gradcam_layer": gradcam_layer,
        "threshold": choose_threshold(y_val, p_val) if len(data.class_names) == 2 else None,
        "val_auc": round(roc_auc(y_val, p_val), 4), "train_time_s": round(train_seconds, 1),
        "params": int(model.count_params()), "train_images": int((data.manifest["split"] == "train").sum()),
        "image_size": int(model.input_shape[1]),  # what later notebooks resize to: the model's own input size
    }  # fmt: skip
    save_json(run.path / "config.json", run.config)
    write_atomic(run.path.parent / LATEST, run.path.name)
    return run


def load_run(path: str | Path) -> Run:
    """A run folder; a model folder stands for its ``LATEST`` run."""
    path = Path(path)
    if (path / LATEST).is_file() and not (path / "config.json").exists():
        path = path / (path / LATEST).read_text().strip()
    if not (path / "config.json").is_file():
        raise RunError(f"{path} is not a run folder (no config.json): pass outputs/runs/<dataset>/<model>[/<run>].")
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path / 'config.json'} is damaged (not JSON): this run cannot be used; train the model "
                       "again.") from None  # fmt: skip
    return Run(path, config)


def _alive(holder: dict) -> bool:
    """Whether the process that wrote a lock still runs (one on another machine is taken to be alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


@contextlib.contextmanager
def training_lock(run: Run) -> Iterator[None]:
    """Held while this process trains ``run``: a second process (``train --resume`` of the same run) is refused
    instead of writing into the same folder. A lock left by a process that died is taken over."""
    lock = run.path / TRAINING_LOCK
    for _ in range(2):
        try:
            with open(lock, "x") as f:  # created only if absent: two processes cannot both win
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            break
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder and _alive(holder):
                raise RunError(f"{run.path} is being trained by process {holder.get('pid')} on {holder.get('host')}: "
                               f"wait for it to finish, or stop it, then resume (if no process trains it, delete "
                               f"{lock}).") from None  # fmt: skip
            lock.unlink(missing_ok=True)  # left behind by a process that died
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def latest_runs(output_dir: Path, dataset: str) -> dict[str, Run]:
    """``{model: its latest complete run}`` on ``dataset``; a :class:`RunError` naming what to train when none."""
    runs = {}
    for latest in sorted(_dataset_dir(output_dir, dataset).glob(f"*/{LATEST}")):
        run = load_run(latest.parent)
        if run.config.get("status") == "complete":
            runs[run.model_name] = run
    if not runs:
        raise RunError(f"No trained model on {dataset} under {Path(output_dir) / 'runs'}: run notebooks 04-08 first "
                       f"(same CXR_DATASET and CXR_OUTPUT_DIR), or `python -m utils train --dataset {dataset} --model cnn`.")  # fmt: skip
    return runs

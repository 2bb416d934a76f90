"""One model from a prepared dataset to a finished run folder, with the functions the notebooks teach: what
``python -m utils train``, the benchmarks and notebook 09's three-class section call."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from ..data import make_data
from ..models import BACKBONES, GRADCAM_LAYERS, MODELS, build_cnn, build_transfer_model
from ..training import compile_and_fit, fit_two_phase
from .config import SPLITS, ConfigError, Settings
from .datasets import DatasetError
from .manifest import load_prepared, stale_files
from .runs import Run, RunError, finish_run, load_run, mark_run, start_run, training_lock
from .weights import resolve_weights


def check_model_name(name: str) -> str:
    """``name`` when it is one of :data:`utils.models.MODELS`, else a :class:`ConfigError` listing them."""
    if name not in MODELS:
        raise ConfigError(f"Unknown model {name!r}: choose one of {', '.join(MODELS)}.")
    return name


def build_model(name: str, num_classes: int, settings: Settings) -> tuple[keras.Model, str, bool]:
    """``(model, weights used, pretrained)`` for a name of :data:`utils.models.MODELS`."""
    check_model_name(name)
    size = settings.profile.image_size
    if name == "cnn":
        return build_cnn(num_classes, size), "none (trained from scratch)", False
    weights, used = resolve_weights(BACKBONES[name], settings.weights, size)
    return build_transfer_model(BACKBONES[name], num_classes, size, weights), used, weights is not None


def resume_settings(settings: Settings, run: Run) -> Settings:
    """The settings an interrupted run was started with (its profile, dataset and seed)."""
    if run.config.get("status") == "complete":
        raise ConfigError(f"{run.path} is complete: there is nothing to resume.")
    # "weights" is the profile's default choice, not the one the run used: CXR_WEIGHTS / --weights stay as given
    ignore = ("name", "description", "images", "weights", "recipes")
    profile = {k: v for k, v in run.config["profile"].items() if k not in ignore}
    return settings.with_(dataset=run.config["dataset"], seed=run.config["seed"], **profile)


def check_splits(manifest: pd.DataFrame, class_names: list[str], dataset: str) -> None:
    """A :class:`DatasetError` when a split lacks a class: the class weights, the validation AUC and the test
    scores need every class in every split."""
    have = set(zip(manifest["split"], manifest["label"], strict=True))
    if missing := [f"{c} in {s}" for s in SPLITS for c in class_names if (s, c) not in have]:
        raise DatasetError(f"{dataset} has no images of {', '.join(missing)} after the split by patient: add images "
                           "(every class needs at least 3 patients, far more for a useful model), then run "
                           f"`python -m utils prepare --dataset {dataset} --force`.")  # fmt: skip


def train_model(settings: Settings, model_name: str, resume: Path | None = None) -> Run:
    """Train ``model_name`` on ``settings.dataset`` with the profile's recipe and save a run folder (or continue
    the interrupted run ``resume`` from its last finished epoch)."""
    old = load_run(resume) if resume else None
    if old:  # its own settings and split, whatever the dataset's manifest is now
        settings, manifest, classes = resume_settings(settings, old), old.manifest(), old.class_names
        if "bytes" in manifest and (stale := stale_files(manifest)):
            raise RunError(f"{len(stale)} image(s) of {old.path} are gone or changed since it started, e.g. "
                           f"{stale[0]}: restore them, or train a new run.")  # fmt: skip
    else:
        prepared = load_prepared(settings)
        manifest, classes = prepared.manifest, prepared.class_names
    keras.utils.set_random_seed(settings.seed)
    check_splits(manifest, classes, settings.dataset)
    profile = settings.profile
    tf.config.run_functions_eagerly(profile.eager)
    data = make_data(manifest, classes, profile.image_size, profile.batch_size, settings.seed)
    model, weights_used, pretrained = build_model(old.model_name if old else model_name, len(data.class_names), settings)
    run = old or start_run(settings, model.name, manifest, data.class_names, weights_used)
    with training_lock(run):  # one process per run folder
        print(f"{run.path}\n{model.name}: {model.count_params():,} parameters, weights {weights_used}")
        started = time.perf_counter()
        try:
            if model.name == "cnn":
                compile_and_fit(model, data, run.path, epochs=profile.epochs, learning_rate=profile.learning_rate,
                                patience=profile.patience)  # fmt: skip
            else:
                fit_two_phase(model, BACKBONES[model.name], data, run.path, profile, pretrained)
        except KeyboardInterrupt:
            mark_run(run, "interrupted")
            raise
        except Exception:
            mark_run(run, "failed")
            raise
        return finish_run(run, model, data, GRADCAM_LAYERS[model.name], time.perf_counter() - started)

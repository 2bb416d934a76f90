"""One call from a prepared dataset to a saved run: what notebooks 04-08, the CLI and the benchmarks share.

``course_datasets`` turns the manifest into the three tf.data splits of the active profile (training split
shuffled and augmented, val and test in manifest order) plus the class weights; ``train_course_model`` trains
one model of the registry on them with :func:`utils.training.train_run` and returns its :class:`RunResult`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Settings
from .prepare import PreparedDataset, load_dataset


@dataclass
class CourseData:
    """The tf.data splits of one prepared dataset at one image size, ready for ``model.fit``."""

    prepared: PreparedDataset
    manifest: pd.DataFrame  # the (profile-limited) manifest the datasets were built from, in their order
    train: Any
    val: Any
    test: Any | None
    class_weight: dict[int, float]
    image_size: int
    batch_size: int

    @property
    def class_names(self) -> list[str]:
        return list(self.prepared.class_names)


def course_datasets(
    prepared: PreparedDataset,
    settings: Settings,
    *,
    image_size: int | None = None,
    batch_size: int | None = None,
    augment: bool = True,
    cache: bool | str | Path = True,
) -> CourseData:
    """Build train (shuffled, augmented), val and test (when the manifest has one) datasets and class weights.

    Image and batch size default to the profile's. The manifest's order is kept for val and test, so that
    predictions can be matched to file paths.
    """
    from .pipeline import class_weights, make_dataset

    size = image_size or settings.profile.image_size
    batch = batch_size or settings.profile.batch_size
    manifest = prepared.manifest
    names = prepared.class_names
    common = {"image_size": size, "batch_size": batch, "seed": settings.seed, "cache": cache}
    train = make_dataset(manifest, "train", names, training=True, augment=augment, **common)
    val = make_dataset(manifest, "val", names, **common)
    test = make_dataset(manifest, "test", names, **common) if (manifest["split"] == "test").any() else None
    weights = class_weights(manifest.loc[manifest["split"] == "train", "label"], names)
    return CourseData(prepared, manifest, train, val, test, weights, size, batch)


def train_course_model(
    model_name: str,
    settings: Settings,
    *,
    dataset: str | None = None,
    data: CourseData | None = None,
    epochs: tuple[int, int] | None = None,
    image_size: int | None = None,
    weights: str | None = None,
    verbose: int = 1,
    **train_kwargs: Any,
):
    """Train ``model_name`` on the active dataset with the profile's settings and save the run.

    ``data`` reuses already built datasets (see :func:`course_datasets`); otherwise the dataset ``dataset``
    (default: ``settings.dataset``) is loaded, capped to the profile. Class weights are always used. The run
    folder goes under ``settings.output_dir/runs/<dataset>/<model>/``. Further keyword arguments go to
    :func:`utils.training.train_run`. Returns its :class:`~utils.training.RunResult`.
    """
    from .training import train_run

    if data is None:
        name = dataset or settings.dataset
        if not name:
            raise ValueError("No dataset given: pass dataset= or set CXR_DATASET (see notebook 01).")
        data = course_datasets(load_dataset(name, settings), settings, image_size=image_size)
    elif image_size is not None and image_size != data.image_size:
        raise ValueError(f"data was built at {data.image_size} px but image_size={image_size} was asked for.")
    return train_run(
        model_name,
        data.train,
        data.val,
        class_names=data.class_names,
        dataset=data.prepared.name,
        profile=settings.profile,
        weights=weights or settings.weights,
        epochs=epochs,
        class_weight=data.class_weight,
        output_dir=settings.output_dir,
        seed=settings.seed,
        test_ds=data.test,
        manifest=data.manifest,
        image_size=data.image_size,
        verbose=verbose,
        **train_kwargs,
    )


def run_summary(result: Any, split: str = "test") -> pd.DataFrame:
    """A one-column table of what a notebook shows after training: weights used, parameters, time, and the
    main metrics of ``split`` (falls back to ``val`` when the run has no test predictions)."""
    config, metrics = result.config, result.metrics or {}
    split = split if split in metrics else "val"
    scores = metrics.get(split, {})
    rows = {
        "model": config["model"],
        "weights used": config["weights_used"],
        "image size": config["image_size"],
        "parameters": f"{config['params']:,}",
        "training time (s)": config["train_time_s"],
        "epochs run": sum(config["epochs_run"].values()),
        "best val AUC": config["best_val_auc"],
        "split evaluated": f"{split} ({scores.get('n', 0)} images)",
    }
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity"):
        if scores.get(key) is not None:
            rows[key.replace("_", " ")] = round(float(scores[key]), 3)
    return pd.Series(rows, name=Path(result.run_dir).name).to_frame()

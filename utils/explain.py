"""Grad-CAM for the saved runs (notebook 10): load the latest models, pick correct and wrong test images, draw
overlays within and across models, run the randomisation sanity check, and score localisation against the
synthetic dataset's lesion masks. The maps themselves come from :mod:`utils.gradcam`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import gradcam
from .report import find_runs
from .runs import load_json

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure


@dataclass
class LoadedRun:
    """A trained model read back from its run folder, with its config and saved predictions."""

    name: str
    run_dir: Path
    model: keras.Model
    config: dict[str, Any]
    predictions: pd.DataFrame = field(repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])


def load_latest_models(output_dir: str | Path, dataset: str) -> dict[str, LoadedRun]:
    """``{model: LoadedRun}`` for the latest run of every model trained on ``dataset``.

    Raises FileNotFoundError naming the training notebooks when there is none.
    """
    import keras

    loaded = {}
    for name, run_dir in find_runs(output_dir, dataset).items():
        model = keras.models.load_model(run_dir / "model.keras", compile=False)
        predictions = pd.read_csv(run_dir / "predictions.csv", keep_default_na=False)
        loaded[name] = LoadedRun(name, run_dir, model, load_json(run_dir / "config.json"), predictions)
    return loaded


def load_images(paths: Sequence[str | Path], image_size: int) -> np.ndarray:
    """Images as the course models take them: float32 (N, S, S, 3) in [0, 255], decoded like in training."""
    import tensorflow as tf

    from .pipeline import load_image

    if not len(paths):
        raise ValueError("No image paths given.")
    grey = tf.stack([load_image(str(p), image_size) for p in paths])
    return tf.image.grayscale_to_rgb(tf.cast(grey, tf.float32)).numpy()


def pick_examples(
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    split: str = "test",
    per_class: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Up to ``per_class`` correctly and ``per_class`` wrongly predicted images (argmax) of each true class.

    Columns: ``path, label, predicted, probability`` (of the predicted class) and ``correct``; deterministic for
    a seed. Raises ValueError when the split has no predictions.
    """
    rows = predictions[predictions["split"] == split]
    if rows.empty:
        raise ValueError(f"No {split!r} predictions in this run: train it with a test split.")
    probs = rows[[f"p_{c}" for c in class_names]].to_numpy(float)
    table = pd.DataFrame(
        {
            "path": rows["path"].to_numpy(),
            "label": rows["label"].astype(str).to_numpy(),
            "predicted": np.asarray(class_names)[probs.argmax(axis=1)],
            "probability": probs.max(axis=1).round(3),
        }
    )
    table["correct"] = table["label"] == table["predicted"]
    picked = [
        group.sample(min(per_class, len(group)), random_state=seed)
        for label in class_names
        for _, group in table[table["label"] == label].groupby("correct", sort=False)
    ]
    picked = [p for p in picked if len(p)]
    return pd.concat(picked).sort_values(["label", "correct"], ascending=[True, False]).reset_index(drop=True)


def _titles(run: LoadedRun, probs: np.ndarray, labels: Sequence[str]) -> list[str]:
    names = np.asarray(run.class_names)
    return [f"true {t}, pred {names[p.argmax()]} ({p.max():.2f})" for t, p in zip(labels, probs, strict=True)]


def explain_rows(run: LoadedRun, rows: pd.DataFrame, method: str = "gradcam") -> Figure:
    """Grad-CAM overlays of ``rows`` (``path`` and ``label`` columns) for the class the model predicted."""
    images = load_images(list(rows["path"]), run.image_size)
    probs = np.asarray(run.model(images, training=False))
    maps = gradcam.gradcam_maps(run.model, images, probs.argmax(axis=1), method=method)
    return gradcam.plot_gradcam_grid(images, maps, _titles(run, probs, list(rows["label"])))


def compare_models_on(
    runs: Mapping[str, LoadedRun], paths: Sequence[str], labels: Sequence[str], method: str = "gradcam"
) -> Figure:
    """One row per image: the image, then each model's overlay for the class it predicted (and its probability)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(paths), len(runs) + 1, figsize=(2.3 * (len(runs) + 1), 2.4 * len(paths)), squeeze=False
    )
    for col, run in enumerate(runs.values(), start=1):
        images = load_images(paths, run.image_size)
        probs = np.asarray(run.model(images, training=False))
        maps = gradcam.gradcam_maps(run.model, images, probs.argmax(axis=1), method=method)
        for row in range(len(paths)):
            axes[row, col].imshow(gradcam.overlay_heatmap(images[row], maps[row]))
            predicted = run.class_names[int(probs[row].argmax())]
            axes[row, col].set_title(f"{run.name}: {predicted} ({probs[row].max():.2f})", fontsize=8)
    originals = load_images(paths, max(run.image_size for run in runs.values()))
    for row, label in enumerate(labels):
        axes[row, 0].imshow(originals[row, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"true {label}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    plt.close(fig)
    return fig


def sanity_check(
    run: LoadedRun, images: np.ndarray, n_steps: int = 4, seed: int = 0
) -> tuple[list[dict[str, Any]], Figure]:
    """Cascading randomisation of ``run``'s model (Adebayo et al. 2018): the per-step results and their figure."""
    results = gradcam.cascading_randomization(run.model, images, n_steps=n_steps, seed=seed)
    return results, gradcam.plot_sanity_check(results, images)


def synthetic_localisation(
    run: LoadedRun,
    manifest: pd.DataFrame,
    split: str = "test",
    max_images: int | None = None,
    tolerance_px: float = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Pointing game and heat-inside scores of ``run``'s Grad-CAM maps (for the TRUE class) on the lesion images
    of ``split``, with the random baseline. Needs the synthetic dataset's lesion masks.

    Returns :func:`utils.gradcam.localisation_scores` plus ``random_baseline`` and the ``images``, ``maps``,
    ``masks`` and ``paths`` used.
    """
    from .synthetic import mask_path

    rows = manifest[(manifest["split"] == split) & (manifest["label"] != "NORMAL")]
    rows = rows[[mask_path(Path(p)).is_file() for p in rows["path"]]]
    if rows.empty:
        raise ValueError(
            f"No lesion masks for the {split!r} images of this dataset: localisation needs the synthetic "
            "dataset (CXR_DATASET=synthetic), whose BACTERIA and VIRUS images come with masks."
        )
    if max_images is not None and len(rows) > max_images:
        rows = rows.sample(max_images, random_state=seed)
    from .synthetic import load_mask

    paths = list(rows["path"])
    images = load_images(paths, run.image_size)
    classes = [run.class_names.index(label) for label in rows["label"]]
    maps = gradcam.gradcam_maps(run.model, images, classes)
    masks = np.stack([load_mask(Path(p), run.image_size) for p in paths])
    scores = gradcam.localisation_scores(maps, masks, tolerance_px)
    scores["random_baseline"] = gradcam.random_baseline(masks, seed=seed, tolerance_px=tolerance_px)
    return scores | {"images": images, "maps": maps, "masks": masks, "paths": paths}


def localisation_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Models x localisation scores (from :func:`synthetic_localisation`), best pointing game first."""
    keys = ("pointing_game", "random_baseline", "heat_inside_ratio", "heat_inside_share", "share_baseline")
    table = pd.DataFrame({name: {k: float(r[k]) for k in keys} for name, r in results.items()}).T
    table["images"] = [int(r["n_images"]) for r in results.values()]
    return table.sort_values("pointing_game", ascending=False).round(3)

"""Grad-CAM for the saved runs (notebook 10): load the latest models, pick correct and wrong test images, draw
overlays within and across models, run the randomisation sanity check, and score localisation against the
synthetic dataset's lesion masks. The maps themselves come from :mod:`utils.gradcam`.

Typical use::

    runs = load_latest_models(ctx.output_dir, ctx.dataset)
    first = next(iter(runs.values()))
    examples = pick_examples(first.predictions, first.class_names)
    explain_rows(first, examples)
    compare_models_on(runs, list(examples["path"][:3]), list(examples["label"][:3]))
    results, figure = sanity_check(first, load_images(list(examples["path"][:3]), first.image_size))
    localisation_table({name: synthetic_localisation(run, manifest) for name, run in runs.items()})

Every figure is closed in pyplot before it is returned (as in :mod:`utils.plots`): end a cell with it to show
it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import gradcam
from .evaluation import read_predictions
from .report import find_runs
from .runs import load_json

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

LOCALISATION_COLUMNS = {  # localisation_table column -> synthetic_localisation key
    "pointing game": "pointing_game",
    "random baseline": "random_baseline",
    "heat inside ratio": "heat_inside_ratio",
    "heat inside share": "heat_inside_share",
    "share baseline": "share_baseline",
}


@dataclass
class LoadedRun:
    """A trained model read back from its run folder, with its config and saved predictions."""

    name: str
    run_dir: Path
    model: keras.Model = field(repr=False)
    config: dict[str, Any]
    predictions: pd.DataFrame = field(repr=False)

    @property
    def class_names(self) -> list[str]:
        """The classes in the order of the model's outputs."""
        return list(self.config["class_names"])

    @property
    def image_size(self) -> int:
        """The side of the square images the model was trained on."""
        return int(self.config["image_size"])


def _closed(fig: Figure) -> Figure:
    """Close ``fig`` in pyplot so that a notebook shows it once (when the cell returns it)."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def load_latest_models(output_dir: str | Path, dataset: str) -> dict[str, LoadedRun]:
    """``{model: LoadedRun}`` for the latest complete run of every model trained on ``dataset``.

    Models are loaded with ``compile=False`` (inference only). Raises FileNotFoundError naming the training
    notebooks when there is no run, or naming the run folder when its ``model.keras`` is missing.
    """
    import keras

    loaded = {}
    for name, run_dir in find_runs(output_dir, dataset).items():
        path = run_dir / "model.keras"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the run of {name} did not save its model. Train {name} again, or delete "
                f"{run_dir.parent / 'LATEST'} to leave {name} out."
            )
        model = keras.models.load_model(path, compile=False)
        loaded[name] = LoadedRun(
            name, run_dir, model, load_json(run_dir / "config.json"), read_predictions(run_dir)
        )
    return loaded


def load_images(paths: Sequence[str | Path], image_size: int) -> np.ndarray:
    """Images as the course models take them: float32 ``(N, S, S, 3)`` in [0, 255], decoded and resized like
    in training (:func:`utils.pipeline.load_image`, grey copied to three channels)."""
    import tensorflow as tf

    from .pipeline import load_image

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("No image paths given: pass a list of file paths (e.g. list(examples['path'])).")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} images are missing, e.g. {missing[0]}. The run's predictions point "
            "at the files it was trained on: use the same CXR_DATA_DIR, or prepare the dataset again "
            "(notebook 01) and retrain."
        )
    grey = tf.stack([load_image(p, image_size) for p in paths])
    return tf.image.grayscale_to_rgb(tf.cast(grey, tf.float32)).numpy()


def pick_examples(
    predictions: pd.DataFrame,
    class_names: Sequence[str],
    split: str = "test",
    per_class: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Up to ``per_class`` correctly and ``per_class`` wrongly predicted images (argmax) of each true class.

    Columns: ``path, label, predicted, probability`` (of the predicted class) and ``correct``; rows by class
    order, correct before wrong, the same for the same ``seed``. A class with no wrong (or no correct) image
    simply has fewer rows.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}.")
    names = [str(c) for c in class_names]
    columns = [f"p_{c}" for c in names]
    missing = [c for c in ["path", "split", "label", *columns] if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"The predictions lack columns {missing}: pass a run's predictions (run.predictions) and its "
            "class_names (run.class_names)."
        )
    rows = predictions[predictions["split"] == split]
    if rows.empty:
        raise ValueError(
            f"No {split!r} predictions in this run (splits present: {sorted(set(predictions['split']))}); "
            "pick another split= or retrain with a test split."
        )
    probs = rows[columns].to_numpy(float)
    table = pd.DataFrame(
        {
            "path": rows["path"].astype(str).to_numpy(),
            "label": rows["label"].astype(str).to_numpy(),
            "predicted": np.asarray(names)[probs.argmax(axis=1)],
            "probability": probs.max(axis=1).round(3),
        }
    )
    table["correct"] = table["label"] == table["predicted"]
    picked = []
    for label in names:
        for correct in (True, False):
            group = table[(table["label"] == label) & (table["correct"] == correct)]
            if len(group):
                picked.append(group.sample(min(per_class, len(group)), random_state=seed))
    if not picked:
        raise ValueError(f"None of the {split!r} labels is among the classes {names}.")
    return pd.concat(picked).reset_index(drop=True)


def _predict(run: LoadedRun, images: np.ndarray) -> np.ndarray:
    return np.asarray(run.model(images, training=False), dtype=float)


def explain_rows(run: LoadedRun, rows: pd.DataFrame, method: str = "gradcam") -> Figure:
    """Image | overlay for each row of ``rows`` (``path`` and ``label`` columns, e.g. :func:`pick_examples`),
    the map explaining the class the model PREDICTS, titled ``"true BACTERIA, pred VIRUS (0.71)"``.

    ``method`` is ``"gradcam"`` or ``"gradcam++"``.
    """
    missing = {"path", "label"} - set(rows.columns)
    if missing:
        raise ValueError(
            f"rows needs columns path and label (missing {sorted(missing)}): use pick_examples()."
        )
    images = load_images(list(rows["path"]), run.image_size)
    probs = _predict(run, images)
    maps = gradcam.gradcam_maps(run.model, images, probs.argmax(axis=1), method=method)
    names = np.asarray(run.class_names)
    titles = [
        f"true {t}, pred {names[p.argmax()]} ({p.max():.2f})"
        for t, p in zip(rows["label"], probs, strict=True)
    ]
    return gradcam.plot_gradcam_grid(images, maps, titles)


def compare_models_on(
    runs: Mapping[str, LoadedRun], paths: Sequence[str | Path], labels: Sequence[str], method: str = "gradcam"
) -> Figure:
    """One row per image: the image, then each model's overlay for the class it predicted (with its probability),
    every model at its own image size."""
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("No runs given: load them with load_latest_models(output_dir, dataset).")
    if len(paths) != len(labels):
        raise ValueError(f"Got {len(paths)} paths but {len(labels)} labels: give one label per image.")
    fig, axes = plt.subplots(
        len(paths), len(runs) + 1, figsize=(2.3 * (len(runs) + 1), 2.4 * len(paths)), squeeze=False
    )
    for col, (name, run) in enumerate(runs.items(), start=1):
        images = load_images(paths, run.image_size)
        probs = _predict(run, images)
        maps = gradcam.gradcam_maps(run.model, images, probs.argmax(axis=1), method=method)
        for row in range(len(paths)):
            axes[row, col].imshow(gradcam.overlay_heatmap(images[row], maps[row]))
            predicted = run.class_names[int(probs[row].argmax())]
            axes[row, col].set_title(f"{name}: {predicted} ({probs[row].max():.2f})", fontsize=8)
    originals = load_images(paths, max(run.image_size for run in runs.values()))
    for row, label in enumerate(labels):
        axes[row, 0].imshow(originals[row, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"true {label}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    return _closed(fig)


def sanity_check(
    run: LoadedRun, images: np.ndarray, n_steps: int = 4, seed: int = 0
) -> tuple[list[dict[str, Any]], Figure]:
    """Cascading randomisation of a copy of ``run``'s model (Adebayo et al. 2018): the per-step results of
    :func:`utils.gradcam.cascading_randomization` and their figure (rank correlation per step, then maps)."""
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
    """Pointing game and heat-inside scores of ``run``'s Grad-CAM maps for the TRUE class, on the lesion images
    (non-NORMAL, with a non-empty mask) of ``split``, against the random baseline. Needs the synthetic dataset's
    lesion masks (resized to the model's image size with nearest neighbour).

    ``max_images`` draws that many lesion images at random (``seed``); ``tolerance_px`` lets a peak that close
    to the lesion count as a hit. Returns :func:`utils.gradcam.localisation_scores` (``pointing_baseline`` is
    the mask area fraction) plus ``random_baseline`` (:func:`utils.gradcam.random_baseline`) and the
    ``images``, ``maps``, ``masks`` and ``paths`` used.
    """
    from .synthetic import load_mask, mask_path

    missing = {"path", "label", "split"} - set(manifest.columns)
    if missing:
        raise ValueError(f"The manifest lacks columns {sorted(missing)}: pass load_dataset(...).manifest.")
    rows = manifest[(manifest["split"] == split) & (manifest["label"].astype(str) != "NORMAL")]
    rows = rows[[mask_path(Path(p)).is_file() for p in rows["path"]]]
    if rows.empty:
        raise ValueError(
            f"No lesion masks for the {split!r} images of this dataset: localisation needs lesion masks, which "
            "only the synthetic dataset has (CXR_DATASET=synthetic, whose BACTERIA and VIRUS images come with "
            "masks). Run notebooks 01-08 with it first."
        )
    unknown = sorted(set(rows["label"].astype(str)) - set(run.class_names))
    if unknown:
        raise ValueError(
            f"Labels {unknown} of the manifest are not classes of {run.name} ({run.class_names}): pass the "
            "manifest of the dataset the model was trained on."
        )
    masks = np.stack([load_mask(Path(p), run.image_size) for p in rows["path"]])
    lesion = masks.reshape(len(masks), -1).any(axis=1)  # a lesion can vanish when the mask is shrunk
    rows, masks = rows[lesion], masks[lesion]
    if rows.empty:
        raise ValueError(f"Every lesion mask is empty at {run.image_size} px: nothing to localise.")
    if max_images is not None and len(rows) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_images, replace=False))
        rows, masks = rows.iloc[keep], masks[keep]
    paths = [str(p) for p in rows["path"]]
    images = load_images(paths, run.image_size)
    classes = np.array([run.class_names.index(label) for label in rows["label"].astype(str)])
    maps = gradcam.gradcam_maps(run.model, images, classes)
    scores = gradcam.localisation_scores(maps, masks, tolerance_px)
    scores["random_baseline"] = gradcam.random_baseline(masks, seed=seed, tolerance_px=tolerance_px)
    return scores | {"images": images, "maps": maps, "masks": masks, "paths": paths}


def localisation_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Models x localisation scores (from :func:`synthetic_localisation`), best pointing game first: pointing
    game vs its random baseline, heat inside ratio (chance 1), heat inside share vs a uniform map's share, and
    the number of images."""
    if not results:
        raise ValueError("No results given: pass {model: synthetic_localisation(run, manifest)}.")
    table = pd.DataFrame(
        {
            name: {col: float(r[key]) for col, key in LOCALISATION_COLUMNS.items()}
            for name, r in results.items()
        }
    ).T
    table["images"] = [int(r["n_images"]) for r in results.values()]
    table.index.name = "model"
    return table.sort_values("pointing game", ascending=False, kind="stable").round(3)

"""Compare the saved runs of every model on one dataset (notebook 09): the leaderboard, curves, confusion
matrices, per-class scores, thresholds and McNemar's test, all from the runs' ``predictions.csv``.

Nothing is re-trained or re-predicted; every number comes from :mod:`utils.evaluation` (scikit-learn / SciPy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .evaluation import (
    choose_threshold,
    compute_metrics,
    evaluate_predictions,
    leaderboard,
    mcnemar,
    predict,
    prediction_arrays,
    read_predictions,
)
from .runs import list_latest_runs, load_json

TRAINING_NOTEBOOKS = (
    "04_custom_cnn",
    "05_vgg16",
    "06_resnet50",
    "07_mobilenet",
    "08_densenet121",
)


def no_runs_message(output_dir: str | Path, dataset: str) -> str:
    """What to do when no model was trained on ``dataset`` yet."""
    names = ", ".join(f"notebooks/{n}.ipynb" for n in TRAINING_NOTEBOOKS)
    return (
        f"No trained runs for dataset {dataset!r} under {Path(output_dir) / 'runs' / dataset}. Run at least one "
        f"of {names} first (with the same CXR_DATASET, CXR_PROFILE and CXR_OUTPUT_DIR), or "
        f"`python -m utils train --dataset {dataset} --model cnn`."
    )


def find_runs(output_dir: str | Path, dataset: str) -> dict[str, Path]:
    """``{model: latest complete run folder}`` for ``dataset``; FileNotFoundError saying what to run if none."""
    runs = {}
    for run_dir in list_latest_runs(output_dir, dataset):
        if (run_dir / "predictions.csv").is_file() and (run_dir / "config.json").is_file():
            runs[load_json(run_dir / "config.json").get("model", run_dir.parent.name)] = run_dir
    if not runs:
        raise FileNotFoundError(no_runs_message(output_dir, dataset))
    return runs


@dataclass
class Comparison:
    """Every latest run of one dataset, evaluated on one split (see :func:`compare_runs`)."""

    runs: dict[str, Path]
    class_names: list[str]
    split: str
    board: pd.DataFrame
    results: dict[str, dict[str, Any]]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    predictions: dict[str, pd.DataFrame]

    @property
    def best_model(self) -> str:
        """The model at the top of the leaderboard (highest ROC-AUC)."""
        return str(self.board["model"].iloc[0])

    def confusion_matrices(self) -> dict[str, np.ndarray]:
        """Count matrices (rows = true class) at each model's decision rule (validation-chosen threshold)."""
        return {model: np.asarray(res["confusion_matrix"]) for model, res in self.results.items()}

    def per_class(self, metric: str = "f1") -> dict[str, dict[str, float]]:
        """``{model: {class: value}}`` of one per-class metric (``precision``, ``recall`` or ``f1``), as
        :func:`utils.plots.plot_per_class_bars` takes it."""
        return {
            model: {c: float(res["per_class"][c][metric]) for c in self.class_names}
            for model, res in self.results.items()
        }

    def val_curve(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """``(y_true, probs)`` of ``model`` on the validation split (where thresholds are chosen)."""
        y, probs, _ = prediction_arrays(self.predictions[model], self.class_names, "val")
        return y, probs

    def decisions(self, model: str) -> np.ndarray:
        """Predicted class per image of the split, at the model's decision rule."""
        return predict(self.curves[model][1], self.results[model]["threshold"])

    def mcnemar_top_two(self) -> dict[str, Any] | None:
        """McNemar's test between the two best models on the split's images (None with fewer than two models)."""
        if len(self.board) < 2:
            print("McNemar's test needs two trained models; only one run was found.")
            return None
        first, second = (str(m) for m in self.board["model"].iloc[:2])
        y = self.curves[first][0]
        if not np.array_equal(y, self.curves[second][0]):
            raise ValueError(
                f"{first} and {second} were not tested on the same images: retrain on one manifest."
            )
        return {"models": (first, second), **mcnemar(y, self.decisions(first), self.decisions(second))}

    def leaderboard_table(self) -> pd.DataFrame:
        """The leaderboard for display: one row per model, main scores as ``value [95% CI]`` strings."""
        b = self.board

        def with_ci(name: str) -> pd.Series:
            return b.apply(
                lambda r: f"{r[name]:.3f} [{r[f'{name}_low']:.3f}, {r[f'{name}_high']:.3f}]", axis=1
            )

        table = pd.DataFrame(
            {
                "model": b["model"],
                "parameters": b["params"].map(lambda p: f"{p / 1e6:.1f} M" if pd.notna(p) else "?"),
                "weights used": b["weights_used"].astype(str).str.slice(0, 40),
                "image size": b["image_size"],
                "run time (s)": b["train_time_s"],  # wall time of the whole run
                "inference images/s": b["inference_images_per_s"],
                "accuracy": with_ci("accuracy"),
                "macro-F1": with_ci("macro_f1"),
                "AUC": with_ci("auc"),
            }
        )
        if len(self.class_names) == 2:
            table["sensitivity"] = with_ci("sensitivity")
            table["specificity"] = with_ci("specificity")
        return table.set_index("model")


def compare_runs(
    output_dir: str | Path,
    dataset: str,
    split: str = "test",
    threshold_from: str | None = "val",
    n_boot: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Evaluate the latest run of every model trained on ``dataset`` on ``split``.

    Binary decisions use a threshold chosen on ``threshold_from`` (Youden's J), never on ``split``; more classes
    use the argmax. Runs trained on different class lists cannot be compared and raise ValueError.
    """
    runs = find_runs(output_dir, dataset)
    class_lists = {
        model: tuple(load_json(path / "config.json")["class_names"]) for model, path in runs.items()
    }
    if len(set(class_lists.values())) > 1:
        raise ValueError(
            f"The runs have different classes {class_lists}: retrain them on one dataset version."
        )
    class_names = list(next(iter(class_lists.values())))
    board = leaderboard(runs.values(), split=split, threshold_from=threshold_from, n_boot=n_boot, seed=seed)
    predictions = {model: read_predictions(path) for model, path in runs.items()}
    results, curves = {}, {}
    for model, df in predictions.items():
        results[model] = evaluate_predictions(df, class_names, split=split, threshold_from=threshold_from)
        y, probs, _ = prediction_arrays(df, class_names, split)
        curves[model] = (y, probs)
    return Comparison(runs, class_names, split, board, results, curves, predictions)


def threshold_report(comparison: Comparison, model: str, target_sensitivity: float = 0.95) -> pd.DataFrame:
    """Test-split scores of a binary ``model`` at three decision rules: 0.5, and two thresholds chosen on the
    validation split (Youden's J; the highest threshold reaching ``target_sensitivity``)."""
    if len(comparison.class_names) != 2:
        raise ValueError("Decision thresholds apply to two classes; with more, the course uses the argmax.")
    y_val, p_val = comparison.val_curve(model)
    y_test, p_test = comparison.curves[model]
    rules = {
        "0.5 (argmax)": None,
        "Youden's J on val": choose_threshold(y_val, p_val, method="youden"),
        f"sensitivity >= {target_sensitivity:g} on val": choose_threshold(
            y_val, p_val, method="sensitivity", target_sensitivity=target_sensitivity
        ),
    }
    rows = {}
    for rule, threshold in rules.items():
        m = compute_metrics(y_test, p_test, comparison.class_names, threshold=threshold)
        rows[rule] = {
            "threshold": 0.5 if threshold is None else round(float(threshold), 4),
            **{
                k: round(float(m[k]), 3)
                for k in ("sensitivity", "specificity", "balanced_accuracy", "accuracy")
            },
        }
    return pd.DataFrame(rows).T

"""Compare the saved runs of every model on one dataset (notebook 09): the leaderboard, curves, confusion
matrices, per-class scores, thresholds and McNemar's test, all from the runs' ``predictions.csv``.

Nothing is re-trained or re-predicted; every number comes from :mod:`utils.evaluation` (scikit-learn / SciPy).
Typical use::

    comparison = compare_runs(ctx.output_dir, ctx.dataset)
    comparison.leaderboard_table()
    plot_roc_curves(comparison.curves, comparison.class_names)
    plot_confusion_matrices(comparison.confusion_matrices(), comparison.class_names)
    plot_per_class_bars(comparison.per_class("f1"), metric="F1")
    threshold_report(comparison, comparison.best_model)  # two classes only
    comparison.mcnemar_top_two()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
PER_CLASS_METRICS = ("precision", "recall", "f1", "support", "roc_auc", "pr_auc")


def no_runs_message(output_dir: str | Path, dataset: str) -> str:
    """What to do when no model was trained on ``dataset`` yet."""
    names = ", ".join(f"notebooks/{n}.ipynb" for n in TRAINING_NOTEBOOKS)
    return (
        f"No trained runs for dataset {dataset!r} under {Path(output_dir) / 'runs' / dataset}. Run at least one "
        f"of {names} first (with the same CXR_DATASET, CXR_PROFILE and CXR_OUTPUT_DIR), or "
        f"`python -m utils train --dataset {dataset} --model cnn`."
    )


def find_runs(output_dir: str | Path, dataset: str) -> dict[str, Path]:
    """``{model: latest complete run folder}`` for ``dataset`` (via each model folder's ``LATEST`` file, see
    :func:`utils.runs.list_latest_runs`); FileNotFoundError saying what to run when there is none.

    A run counts when it has both ``config.json`` and ``predictions.csv`` (training writes them last).
    """
    runs = {}
    for run_dir in list_latest_runs(output_dir, dataset):
        if (run_dir / "predictions.csv").is_file() and (run_dir / "config.json").is_file():
            runs[load_json(run_dir / "config.json").get("model", run_dir.parent.name)] = run_dir
    if not runs:
        raise FileNotFoundError(no_runs_message(output_dir, dataset))
    return runs


def _class_names(config: dict[str, Any], predictions: pd.DataFrame) -> tuple[str, ...]:
    """The run's class list: ``config.json``'s ``class_names``, else the ``p_<CLASS>`` columns."""
    names = config.get("class_names") or [c[2:] for c in predictions.columns if c.startswith("p_")]
    return tuple(str(n) for n in names)


def _with_ci(value: float, low: float, high: float, digits: int) -> str:
    """``"0.91 [0.85, 0.95]"``; ``"n/a"`` for an undefined value, no brackets when the interval is undefined."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _parameters(count: Any) -> str:
    if count is None or pd.isna(count):
        return "?"
    return f"{count / 1e6:.1f} M" if count >= 1e5 else f"{int(count):,}"


def _short(text: Any, width: int = 40) -> str:
    text = "?" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class Comparison:
    """Every latest run of one dataset, evaluated on one split (made by :func:`compare_runs`).

    Dicts are keyed by model name in leaderboard order (best ROC-AUC first).

    Attributes:
        runs: model -> run folder.
        class_names: the classes shared by all runs, in probability-column order.
        split: the evaluated split (``"test"``).
        board: :func:`utils.evaluation.leaderboard` (one row per model, bootstrap CIs).
        results: model -> :func:`utils.evaluation.evaluate_predictions` on ``split`` (binary: threshold chosen
            on the validation split; more classes: argmax).
        curves: model -> ``(y_true, probs)`` on ``split``, for ``plot_roc_curves`` / ``plot_pr_curves`` /
            ``plot_reliability``.
        predictions: model -> its ``predictions.csv`` (all splits).
        configs: model -> its ``config.json``.
    """

    runs: dict[str, Path]
    class_names: list[str]
    split: str
    board: pd.DataFrame
    results: dict[str, dict[str, Any]]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    predictions: dict[str, pd.DataFrame]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _check_model(self, model: str) -> None:
        if model not in self.runs:
            raise KeyError(f"No run of {model!r} in this comparison; the models are {list(self.runs)}.")

    @property
    def best_model(self) -> str:
        """The model at the top of the leaderboard (highest ROC-AUC on the split)."""
        return str(self.board["model"].iloc[0])

    def confusion_matrices(self) -> dict[str, np.ndarray]:
        """Count matrices (rows = true class, columns = predicted) at each model's decision rule (the
        validation-chosen threshold for two classes, else the argmax), for ``plot_confusion_matrices``."""
        return {model: np.asarray(res["confusion_matrix"]) for model, res in self.results.items()}

    def per_class(self, metric: str = "f1") -> pd.DataFrame:
        """Models x classes table of one per-class score on the split (``precision``, ``recall``, ``f1``,
        ``support``, ``roc_auc`` or ``pr_auc``), at each model's decision rule; ``plot_per_class_bars`` takes it."""
        if metric not in PER_CLASS_METRICS:
            raise ValueError(
                f"Unknown per-class metric {metric!r}: use one of {', '.join(PER_CLASS_METRICS)}."
            )
        table = pd.DataFrame(
            {
                model: {c: res["per_class"][c][metric] for c in self.class_names}
                for model, res in self.results.items()
            }
        ).T
        table.index.name, table.columns.name = "model", "class"
        return table[self.class_names].astype(float)

    def val_curve(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """``(y_true, probs)`` of ``model`` on the validation split (where thresholds are chosen)."""
        self._check_model(model)
        y, probs, _ = prediction_arrays(self.predictions[model], self.class_names, "val")
        return y, probs

    def decisions(self, model: str) -> np.ndarray:
        """Predicted class index per image of the split, at the model's decision rule."""
        self._check_model(model)
        return predict(self.curves[model][1], self.results[model]["threshold"])

    def _split_table(self, model: str) -> pd.DataFrame:
        rows = self.predictions[model]
        rows = rows[rows["split"] == self.split]
        paths = (
            rows["path"].astype(str).to_numpy()
            if "path" in rows.columns
            else np.arange(len(rows)).astype(str)
        )
        return pd.DataFrame({"path": paths, "y": self.curves[model][0], "pred": self.decisions(model)})

    def mcnemar_top_two(self) -> dict[str, Any] | None:
        """McNemar's test between the two best models (leaderboard order) on the split's images, each at its own
        decision rule; None (with the reason printed) when there are fewer than two models.

        ``b`` counts images the first model gets right and the second wrong, ``c`` the reverse.
        """
        if len(self.board) < 2:
            print(f"McNemar's test needs two trained models; only {self.best_model} was found.")
            return None
        first, second = (str(m) for m in self.board["model"].iloc[:2])
        a, b = self._split_table(first), self._split_table(second)
        same_order = len(a) == len(b) and np.array_equal(a["path"], b["path"])
        if not same_order:
            if a["path"].duplicated().any() or set(a["path"]) != set(b["path"]):
                raise ValueError(
                    f"{first} and {second} were not tested on the same {self.split} images: retrain them on one "
                    "prepared dataset (same CXR_DATASET, CXR_PROFILE and CXR_SEED)."
                )
            b = b.set_index("path").loc[a["path"]].reset_index()
        if not np.array_equal(a["y"], b["y"]):
            raise ValueError(
                f"{first} and {second} disagree on the true labels: retrain them on one manifest."
            )
        result = mcnemar(a["y"], a["pred"], b["pred"])
        return {"models": (first, second), "split": self.split, "n": len(a), **result}

    def leaderboard_table(self, digits: int = 2) -> pd.DataFrame:
        """The leaderboard for display, one row per model (best AUC first): parameters, weights used, image size,
        training time, inference speed, and accuracy, macro-F1 and AUC (plus sensitivity and specificity for two
        classes) as ``"0.91 [0.85, 0.95]"`` strings: value and 95% bootstrap interval over the split's images."""
        b = self.board

        def with_ci(name: str) -> list[str]:
            return [_with_ci(r[name], r[f"{name}_low"], r[f"{name}_high"], digits) for _, r in b.iterrows()]

        train_time = [self.configs.get(str(m), {}).get("train_time_s") for m in b["model"]]
        table = pd.DataFrame(
            {
                "model": b["model"].astype(str),
                "parameters": b["params"].map(_parameters),
                "weights used": b["weights_used"].map(_short),
                "image size": b["image_size"],
                "training time (s)": pd.to_numeric(
                    pd.Series(train_time, dtype=object), errors="coerce"
                ).round(1),
                "inference images/s": pd.to_numeric(b["inference_images_per_s"], errors="coerce").round(1),
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
    """Evaluate the latest complete run of every model trained on ``dataset`` on ``split``.

    Binary decisions use a threshold chosen on ``threshold_from`` (Youden's J), never on ``split``; more classes
    use the argmax. Confidence intervals come from ``n_boot`` bootstrap resamples of the split's images.

    Raises:
        FileNotFoundError: no run yet (the message names the training notebooks and the command).
        ValueError: the runs were trained on different class lists, so they cannot be compared.
    """
    runs = find_runs(output_dir, dataset)
    configs = {model: load_json(path / "config.json") for model, path in runs.items()}
    predictions = {model: read_predictions(path) for model, path in runs.items()}
    class_lists = {model: _class_names(configs[model], predictions[model]) for model in runs}
    if len(set(class_lists.values())) > 1:
        listed = "; ".join(f"{model}: {list(names)}" for model, names in class_lists.items())
        raise ValueError(
            f"The runs have different classes ({listed}) and cannot be compared: retrain them on one dataset "
            "version, or move the odd run folder out of the way."
        )
    class_names = list(next(iter(class_lists.values())))
    board = leaderboard(runs.values(), split=split, threshold_from=threshold_from, n_boot=n_boot, seed=seed)
    order = [str(m) for m in board["model"]]
    results, curves = {}, {}
    for model in order:
        df = predictions[model]
        results[model] = evaluate_predictions(df, class_names, split=split, threshold_from=threshold_from)
        y, probs, _ = prediction_arrays(df, class_names, split)
        curves[model] = (y, probs)
    return Comparison(
        runs={m: runs[m] for m in order},
        class_names=class_names,
        split=split,
        board=board,
        results=results,
        curves=curves,
        predictions={m: predictions[m] for m in order},
        configs={m: configs[m] for m in order},
    )


def threshold_report(comparison: Comparison, model: str, target_sensitivity: float = 0.95) -> pd.DataFrame:
    """Scores of a binary ``model`` on the comparison's split at three decision rules: 0.5 (the argmax), and two
    thresholds chosen on the VALIDATION split (Youden's J; the highest threshold whose validation sensitivity
    reaches ``target_sensitivity``), then applied unchanged to the split.

    One row per rule; columns ``threshold, sensitivity, specificity, balanced_accuracy, accuracy``.
    """
    if len(comparison.class_names) != 2:
        raise ValueError(
            f"Decision thresholds apply to two classes; these runs have {len(comparison.class_names)} "
            f"({', '.join(comparison.class_names)}), so the course uses the argmax for them."
        )
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
    table = pd.DataFrame(rows).T
    table.index.name = f"rule ({comparison.split} split)"
    return table

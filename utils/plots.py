"""Evaluation figures: ROC and PR curves, confusion matrices, per-class F1, reliability, threshold trade-off
and learning curves.

Every function returns a :class:`matplotlib.figure.Figure` that is already closed in pyplot, so nothing is shown
twice or kept open: end a notebook cell with the call (or ``display(fig)``) to show it, ``fig.savefig(...)`` to
save it. Curve inputs are ``{name: (y_true, probs)}`` with ``probs`` of shape ``(N, C)`` as in
:mod:`utils.evaluation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from utils.evaluation import check_inputs, expected_calibration_error, reliability_curve, threshold_table

Curves = Mapping[str, tuple[Any, Any]]


def _figure(
    nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (5.5, 4.5)
) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    plt.close(fig)
    return fig, axes.ravel()


def _curve_sets(
    curves: Curves, class_names: Sequence[str] | None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, binary_target, score)`` per line: class 1 for binary; per class (+ micro) or micro per model."""
    if not curves:
        raise ValueError("No predictions to plot: pass {model_name: (y_true, probs)}.")
    sets = []
    for model, (y_true, probs) in curves.items():
        y, p, names = check_inputs(y_true, probs, class_names)
        onehot = label_binarize(y, classes=range(p.shape[1])) if p.shape[1] > 2 else None
        if onehot is None:
            sets.append((model, (y == 1).astype(int), p[:, 1]))
        elif len(curves) == 1:
            sets += [(f"{names[k]} vs rest", onehot[:, k], p[:, k]) for k in range(p.shape[1])]
            sets.append(("micro-average", onehot.ravel(), p.ravel()))
        else:
            sets.append((f"{model} (micro-average)", onehot.ravel(), p.ravel()))
    return sets


def plot_roc_curves(curves: Curves, class_names: Sequence[str] | None = None) -> Figure:
    """ROC curves with AUC in the legend: one per model (binary, positive = class 1; several multi-class models
    use the micro-average), or one per class plus micro-average for a single multi-class model."""
    fig, (ax,) = _figure()
    for label, target, score in _curve_sets(curves, class_names):
        if target.min() == target.max():
            continue  # one class only: no curve
        fpr, tpr, _ = skm.roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set(
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        title="ROC curves",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_pr_curves(curves: Curves, class_names: Sequence[str] | None = None) -> Figure:
    """Precision-recall curves with average precision (AP) in the legend; same lines as :func:`plot_roc_curves`.
    A dotted line shows the positive rate (a random classifier's precision) of the first curve."""
    fig, (ax,) = _figure()
    sets = _curve_sets(curves, class_names)
    for label, target, score in sets:
        if target.min() == target.max():
            continue
        precision, recall, _ = skm.precision_recall_curve(target, score)
        ap = skm.average_precision_score(target, score)
        ax.plot(recall, precision, drawstyle="steps-post", label=f"{label} (AP {ap:.3f})")
    ax.axhline(sets[0][1].mean(), color="k", ls=":", lw=1, label="chance (positive rate)")
    ax.set(
        xlabel="Recall (sensitivity)",
        ylabel="Precision (PPV)",
        title="Precision-recall curves",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower left", fontsize="small")
    return fig


def plot_confusion_matrices(
    matrices: Mapping[str, Any], class_names: Sequence[str], normalize: bool = True, ncols: int = 3
) -> Figure:
    """A grid of confusion-matrix heatmaps (rows = true class), one axes per model.

    ``matrices`` maps a name to a count matrix. With ``normalize`` colours and numbers are row fractions
    (recall per class) with the counts in brackets.
    """
    if not matrices:
        raise ValueError("No confusion matrices to plot.")
    ncols = min(ncols, len(matrices))
    nrows = -(-len(matrices) // ncols)
    size = max(3.5, 0.9 * len(class_names) + 2)
    fig, axes = _figure(nrows, ncols, (size, size * 0.85))
    for ax, (name, matrix) in zip(axes, matrices.items(), strict=False):
        counts = np.asarray(matrix, dtype=float)
        if counts.shape != (len(class_names), len(class_names)):
            raise ValueError(
                f"Confusion matrix {name!r} has shape {counts.shape}, expected {len(class_names)} classes."
            )
        rows = counts.sum(axis=1, keepdims=True)
        shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
        text = [
            [f"{v:.2f}\n({c:.0f})" if normalize else f"{c:.0f}" for v, c in zip(r, rc, strict=True)]
            for r, rc in zip(shown, counts, strict=True)
        ]
        sns.heatmap(
            shown,
            annot=np.array(text),
            fmt="",
            cmap="Blues",
            cbar=False,
            square=True,
            ax=ax,
            vmin=0,
            vmax=1 if normalize else None,
            xticklabels=class_names,
            yticklabels=class_names,
        )
        ax.set(title=name, xlabel="Predicted", ylabel="True")
    for ax in axes[len(matrices) :]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


def plot_per_class_bars(data: pd.DataFrame | Mapping[str, Mapping[str, float]], metric: str = "F1") -> Figure:
    """Grouped bars of a per-class score: a leaderboard (``model`` + ``f1_<CLASS>`` columns), a models x classes
    table (index = model, one column per class, e.g. ``Comparison.per_class()``) or ``{model: {class: value}}``.
    One bar group (container) per model."""
    if isinstance(data, pd.DataFrame) and "model" not in data.columns:
        prefixed = [c for c in data.columns if str(c).lower().startswith(f"{metric.lower()}_")]
        if not prefixed:  # models x classes
            data = {str(model): row.to_dict() for model, row in data.iterrows()}
    if isinstance(data, pd.DataFrame):
        prefix = f"{metric.lower()}_"
        columns = [c for c in data.columns if c.startswith(prefix)]
        if not columns or "model" not in data.columns:
            raise ValueError(f"Need a 'model' column and '{prefix}<CLASS>' columns (a leaderboard).")
        labels = data["model"].astype(str)
        if labels.duplicated().any() and "run" in data.columns:
            labels = labels + " " + data["run"].astype(str)
        data = {
            label: {c[len(prefix) :]: row[c] for c in columns}
            for label, (_, row) in zip(labels, data.iterrows(), strict=True)
        }
    long = pd.DataFrame(
        [{"model": m, "class": k, "value": float(v)} for m, per in data.items() for k, v in per.items()]
    )
    if long.empty:
        raise ValueError("No per-class values to plot.")
    fig, (ax,) = _figure(size=(max(5.5, 1.3 * long["class"].nunique() + 2), 4.5))
    sns.barplot(data=long, x="class", y="value", hue="model", ax=ax)
    ax.set(xlabel="Class", ylabel=metric, ylim=(0, 1.05), title=f"Per-class {metric}")
    ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_reliability(curves: Curves, n_bins: int = 10) -> Figure:
    """Reliability diagram (one line per model, ECE in the legend) with the perfect-calibration diagonal.
    Binary: predicted p(class 1) vs observed fraction; multi-class: confidence vs accuracy."""
    fig, (ax,) = _figure()
    kind = "positive"
    for name, (y_true, probs) in curves.items():
        curve = reliability_curve(y_true, probs, n_bins=n_bins)
        kind = curve.attrs["kind"]
        ece = expected_calibration_error(y_true, probs, n_bins=n_bins)
        ax.plot(curve["predicted"], curve["observed"], "o-", label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    xlabel, ylabel = (
        ("Predicted probability of class 1", "Observed fraction of class 1")
        if kind == "positive"
        else ("Confidence (max probability)", "Accuracy")
    )
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1), title="Reliability diagram")
    ax.legend(loc="upper left", fontsize="small")
    return fig


def plot_threshold_tradeoff(y_true: Any, probs: Any, chosen: float | None = None) -> Figure:
    """Sensitivity and specificity against the decision threshold, with the chosen threshold marked."""
    table = threshold_table(y_true, probs)
    fig, (ax,) = _figure(size=(6, 4))
    ax.plot(table["threshold"], table["sensitivity"], drawstyle="steps-post", label="sensitivity")
    ax.plot(table["threshold"], table["specificity"], drawstyle="steps-post", label="specificity")
    if chosen is not None:
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen threshold {chosen:.3f}")
    ax.set(
        xlabel="Threshold on p(class 1)",
        ylabel="Rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Sensitivity / specificity trade-off",
    )
    ax.legend(loc="lower center", fontsize="small")
    return fig


def plot_history(history: pd.DataFrame, metrics: Sequence[str] = ("loss", "auc", "accuracy")) -> Figure:
    """Learning curves: one panel per metric found (train and ``val_`` lines), with a dashed line where the
    training phase changes (e.g. head -> fine-tune). Missing columns are skipped."""
    df = history.rename(columns=str.lower).reset_index(drop=True)
    panels = [m for m in metrics if m in df.columns or f"val_{m}" in df.columns]
    if df.empty or not panels:
        raise ValueError(
            f"The history has no rows or none of the columns {list(metrics)} (or their val_ forms)."
        )
    epochs = df["epoch"].to_numpy() if "epoch" in df.columns else None
    x = epochs + 1 if epochs is not None and (np.diff(epochs) > 0).all() else np.arange(1, len(df) + 1)
    boundaries = []
    if "phase" in df.columns:
        change = np.flatnonzero(df["phase"].to_numpy()[1:] != df["phase"].to_numpy()[:-1])
        boundaries = [(x[i] + x[i + 1]) / 2 for i in change]
    fig, axes = _figure(1, len(panels), (4.8, 3.8))
    for ax, metric in zip(axes, panels, strict=True):
        for column, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if column in df.columns:
                ax.plot(x, df[column], "o-", ms=3, label=label)
        for i, boundary in enumerate(boundaries):
            ax.axvline(boundary, color="grey", ls="--", lw=1, label="phase change" if i == 0 else None)
        ax.set(xlabel="Epoch", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig

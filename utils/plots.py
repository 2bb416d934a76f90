"""Figures shared by several notebooks. Every function returns a closed ``matplotlib`` Figure (end a cell with it
to show it once; ``fig.savefig`` saves it). Titles are passed in, so that each names its model and dataset, and
every class keeps one colour across the course (:data:`CLASS_COLORS`)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics

from .gradcam import overlay

CLASS_COLORS = {"NORMAL": "#1f77b4", "PNEUMONIA": "#d62728", "BACTERIA": "#ff7f0e", "VIRUS": "#9467bd",
                "COVID": "#2ca02c", "LUNG_OPACITY": "#8c564b", "VIRAL PNEUMONIA": "#e377c2"}  # fmt: skip
SPARE_COLORS = ("#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3")


def class_color(name: str, class_names: Sequence[str] = ()) -> str:
    """The course's colour of a class, or of a title that starts with one ("NORMAL 0.91"). A class the course does
    not know (a ``folder:`` dataset's) gets a spare colour by its place among the unknown classes of
    ``class_names``, the dataset's classes in their order, so that no two share one; grey without them."""
    upper = str(name).upper()
    for known, color in CLASS_COLORS.items():
        if upper == known or upper.startswith(known + " "):
            return color
    unknown = [c for c in class_names if str(c).upper() not in CLASS_COLORS]
    if name in unknown:
        return SPARE_COLORS[unknown.index(name) % len(SPARE_COLORS)]
    return "#7f7f7f"


def _closed(fig: Figure) -> Figure:
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_images(images: np.ndarray, titles: list[str], title: str, ncols: int = 6) -> Figure:
    """A grid of grey images (N, H, W[, C]) in 0-255, each with its own title."""
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, image, name in zip(axes.ravel(), images, titles, strict=False):
        ax.imshow(np.asarray(image)[..., 0] if np.ndim(image) == 3 else image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(name, fontsize=8, color=class_color(name))
    fig.suptitle(title)
    return _closed(fig)


def plot_history(history: pd.DataFrame, title: str) -> Figure:
    """Learning curves (loss, accuracy, validation AUC) per epoch, with a dashed line where the phase changes."""
    epochs = history["epoch"] + 1
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ["loss", "accuracy", "auc"], strict=True):
        if metric in history:
            ax.plot(epochs, history[metric], "o-", ms=3, label="training")
        ax.plot(epochs, history[f"val_{metric}"], "o-", ms=3, label="validation")
        for change in np.flatnonzero(history["phase"].to_numpy()[1:] != history["phase"].to_numpy()[:-1]):
            ax.axvline(epochs.iloc[change] + 0.5, color="grey", ls="--", lw=1, label="fine-tuning starts")
        ax.set(xlabel="epoch", title="validation AUC" if metric == "auc" else metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.suptitle(title)
    return _closed(fig)


def plot_reliability(
    y_true: np.ndarray, probs: np.ndarray, title: str, n_bins: int = 10, positive: str = "class 1"
) -> Figure:
    """Reliability diagram of p(``positive``, class 1) (two classes) or of the top probability (more), with the number of images
    in each bin underneath: a bin of three images says little."""
    binary = probs.shape[1] == 2
    score = probs[:, 1] if binary else probs.max(axis=1)
    hit = (y_true == 1) if binary else (probs.argmax(axis=1) == y_true)
    bins = np.minimum((score * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    used = counts > 0
    observed = np.bincount(bins, weights=hit, minlength=n_bins)[used] / counts[used]
    predicted = np.bincount(bins, weights=score, minlength=n_bins)[used] / counts[used]
    fig, (ax, below) = plt.subplots(2, 1, figsize=(5.5, 5.5), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    ax.plot(predicted, observed, "o-", label="model")
    ax.set(ylabel=f"observed share of {positive}" if binary else "accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize="small")
    below.bar((np.arange(n_bins) + 0.5) / n_bins, counts, width=0.9 / n_bins, color="grey")
    below.set(xlabel=f"predicted probability of {positive}" if binary else "top probability", ylabel="images")
    return _closed(fig)


def plot_threshold(
    y_true: np.ndarray, probs: np.ndarray, threshold: float, title: str, positive: str = "class 1"
) -> Figure:
    """Sensitivity and specificity against the threshold on p(``positive``, class 1), the chosen threshold marked."""
    fpr, tpr, cuts = metrics.roc_curve(y_true, probs[:, 1])
    keep = np.isfinite(cuts)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(cuts[keep], tpr[keep], drawstyle="steps-post", color=class_color("PNEUMONIA"), label="sensitivity")
    ax.plot(cuts[keep], 1 - fpr[keep], drawstyle="steps-post", color=class_color("NORMAL"), label="specificity")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"chosen on validation: {threshold:.3f}")
    ax.set(xlabel=f"threshold on p({positive})", ylabel="rate", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left", fontsize="small")
    return _closed(fig)


def plot_overlays(images: np.ndarray, maps: np.ndarray, titles: list[str], title: str, masks=None) -> Figure:
    """Each image beside its Grad-CAM overlay (lesion outline in white when ``masks`` are given), with a colour bar."""
    fig, axes = plt.subplots(len(images), 2, figsize=(5.6, 2.6 * len(images)), squeeze=False)
    for row, (image, heat, name) in enumerate(zip(images, maps, titles, strict=True)):
        axes[row, 0].imshow(np.asarray(image)[..., 0], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(name, fontsize=8)
        axes[row, 1].imshow(overlay(image, heat))
        if masks is not None and masks[row].any():
            axes[row, 1].contour(masks[row], levels=[0.5], colors="white", linewidths=1)
        axes[row, 1].set_title("Grad-CAM", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.colorbar(plt.cm.ScalarMappable(cmap="jet"), ax=axes[:, 1], fraction=0.05, label="heat (0 to 1)")
    fig.suptitle(title)
    plt.close(fig)
    return fig


def plot_sanity(results: list[dict], images: np.ndarray, title: str) -> Figure:
    """The maps of :func:`utils.gradcam.randomize_layers` step by step (rows: images), similarity in the titles."""
    fig, axes = plt.subplots(len(images), len(results), figsize=(1.9 * len(results), 2.1 * len(images)), squeeze=False)
    for col, step in enumerate(results):
        for row in range(len(images)):
            axes[row, col].imshow(overlay(images[row], step["maps"][row]))
            axes[row, col].set_axis_off()
        axes[0, col].set_title(f"{step['layer']}\nrho {step['spearman']:.2f}", fontsize=7)  # the whole layer name
    fig.suptitle(title)
    return _closed(fig)

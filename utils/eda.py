"""Exploratory data analysis from a manifest: tables and figures for notebook 02."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from PIL import Image

from .config import SPLITS
from .manifest import patient_overlap


def plot_split_counts(manifest: pd.DataFrame, class_names: list[str] | None = None) -> Figure:
    """Bar chart of images per class in each split, with the class share written on each bar."""
    order = class_names or sorted(manifest["label"].unique())
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.countplot(
        data=manifest,
        x="split",
        hue="label",
        order=[s for s in SPLITS if s in set(manifest["split"])],
        hue_order=order,
        ax=ax,
    )
    for container in ax.containers:
        ax.bar_label(container, fontsize=8)
    ax.set(title="Images per class and split", xlabel="", ylabel="images")
    fig.tight_layout()
    return fig


def class_balance(manifest: pd.DataFrame) -> pd.DataFrame:
    """Share of each class within each split (rows: classes, columns: splits), in percent."""
    shares = pd.crosstab(manifest["label"], manifest["split"], normalize="columns") * 100
    return shares.reindex(columns=[s for s in SPLITS if s in shares.columns]).round(1)


def size_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Width, height and aspect ratio (width / height) per class: median, min and max."""
    frame = manifest.assign(aspect=manifest["width"] / manifest["height"])
    return frame.groupby("label")[["width", "height", "aspect"]].agg(["median", "min", "max"]).round(2)


def plot_sizes(manifest: pd.DataFrame) -> Figure:
    """Image width against height per class, and the aspect-ratio distribution."""
    frame = manifest.assign(aspect=manifest["width"] / manifest["height"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    sns.scatterplot(data=frame, x="width", y="height", hue="label", s=10, alpha=0.5, ax=left)
    left.set_title("Original size (px)")
    sns.histplot(
        data=frame, x="aspect", hue="label", element="step", stat="density", common_norm=False, ax=right
    )
    right.set_title("Aspect ratio (width / height)")
    fig.tight_layout()
    return fig


def channel_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """How many images of each class have 1, 3 or 4 channels (colour encodings of grey X-rays)."""
    return pd.crosstab(manifest["label"], manifest["channels"].rename("channels"))


def sample_rows(
    manifest: pd.DataFrame, per_class: int, seed: int = 0, split: str | None = "train"
) -> pd.DataFrame:
    """Up to ``per_class`` random rows of each class (from ``split`` when given), in class order."""
    rows = manifest if split is None else manifest[manifest["split"] == split]
    shuffled = rows.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=True).head(per_class).sort_values("label", kind="stable")


def load_gray(path: str, size: int | None = None) -> np.ndarray:
    """An image as a uint8 grayscale array, optionally resized to ``size`` x ``size``."""
    with Image.open(path) as image:
        gray = image.convert("L")
        if size:
            gray = gray.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(gray)


def intensity_histograms(manifest: pd.DataFrame, per_class: int = 30, seed: int = 0) -> Figure:
    """Pixel-intensity density per class over a random sample of training images (resized to 128 px)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, rows in sample_rows(manifest, per_class, seed).groupby("label"):
        pixels = np.concatenate([load_gray(p, 128).ravel() for p in rows["path"]])
        ax.hist(pixels, bins=64, range=(0, 255), density=True, histtype="step", linewidth=1.5, label=label)
    ax.set(
        title=f"Pixel intensities ({per_class} training images per class)",
        xlabel="intensity",
        ylabel="density",
    )
    ax.legend()
    fig.tight_layout()
    return fig


def plot_samples(manifest: pd.DataFrame, per_class: int = 4, seed: int = 0) -> Figure:
    """A grid of random training images: one row per class, each titled with its patient id and size."""
    sample = sample_rows(manifest, per_class, seed)
    labels = list(dict.fromkeys(sample["label"]))
    fig, axes = plt.subplots(
        len(labels), per_class, figsize=(2.2 * per_class, 2.4 * len(labels)), squeeze=False
    )
    for r, label in enumerate(labels):
        rows = sample[sample["label"] == label]
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(rows):
                row = rows.iloc[c]
                ax.imshow(load_gray(row["path"]), cmap="gray")
                ax.set_title(f"{label}\n{row['patient_id']} {row['width']}x{row['height']}", fontsize=8)
    fig.tight_layout()
    return fig


def leakage_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Patients per split and how many patients two splits share (must be 0 for an honest evaluation)."""
    overlap = patient_overlap(manifest)
    rows = [
        {"splits": pair, "shared patients": len(ids), "examples": ", ".join(ids[:3])}
        for pair, ids in overlap.items()
    ]
    return pd.DataFrame(rows).set_index("splits")


def images_per_patient(manifest: pd.DataFrame) -> pd.Series:
    """How many patients have 1, 2, 3, ... images (why splitting by image leaks patients)."""
    return manifest.groupby("patient_id").size().value_counts().sort_index().rename("patients")

"""The shared figures (utils/plots.py): each is closed, carries the title it was given, and shows the numbers it
was passed (line data, bar heights, legend and panel texts), with every class in its course colour."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from sklearn import metrics  # noqa: E402

from utils.course.datasets import get_dataset  # noqa: E402
from utils.gradcam import overlay  # noqa: E402
from utils.plots import (  # noqa: E402
    CLASS_COLORS,
    SPARE_COLORS,
    class_color,
    plot_history,
    plot_images,
    plot_overlays,
    plot_reliability,
    plot_sanity,
    plot_threshold,
)

TITLE = "mobilenet_025 on synthetic (SYNTHETIC images)"


def texts(fig) -> list[str]:
    """Every title, label, legend entry and free text of a figure."""
    found = [fig._suptitle.get_text()] if fig._suptitle else []
    for ax in fig.axes:
        found += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend():
            found += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in found if t]


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_class_colors():
    assert class_color("PNEUMONIA") == class_color("pneumonia") == CLASS_COLORS["PNEUMONIA"]
    assert class_color("NORMAL 0.91") == CLASS_COLORS["NORMAL"]  # a title that starts with the class
    covid = get_dataset("covid19-radiography").classes
    assert len({class_color(name) for name in covid}) == len(covid)  # four classes, four colours
    assert class_color("Viral Pneumonia 0.8") == CLASS_COLORS["VIRAL PNEUMONIA"] != class_color("PNEUMONIA")
    colors = set(CLASS_COLORS.values()) | set(SPARE_COLORS) | {"#7f7f7f"}
    assert len(colors) == len(CLASS_COLORS) + len(SPARE_COLORS) + 1  # no two classes share a colour, nor with grey
    folder = ["Atelectasis", "Effusion", "Normal", "Pleural Effusion", "Pleural Thickening"]  # a folder: dataset
    shades = [class_color(name, folder) for name in folder]
    assert len(set(shades)) == len(folder) and shades[2] == CLASS_COLORS["NORMAL"]  # five classes, five colours
    assert set(shades) - {CLASS_COLORS["NORMAL"]} <= set(SPARE_COLORS)
    assert class_color("Effusion") == class_color("as taken") == "#7f7f7f"  # unknown, without the class list: grey


def test_plot_images_titles_each_image_in_its_class_colour():
    images = np.random.default_rng(0).integers(0, 256, (7, 24, 24, 1)).astype(np.float32)
    names = ["NORMAL 0.91", "PNEUMONIA 0.77", "BACTERIA", "VIRUS", "NORMAL", "other", "PNEUMONIA"]
    fig = plot_images(images, names, TITLE, ncols=4)
    assert fig._suptitle.get_text() == TITLE
    assert plt.get_fignums() == []  # closed: shown once, by the cell that returns it
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 8 and len(shown) == 7  # a 2 x 4 grid, the last cell empty
    assert [ax.get_title() for ax in shown] == names
    assert [to_hex(ax.title.get_color()) for ax in shown] == [class_color(n) for n in names]
    assert shown[1].images[0].get_clim() == (0, 255)  # no per-image contrast stretch
    np.testing.assert_array_equal(shown[1].images[0].get_array(), images[1, ..., 0])


def _history(phases: list[str]) -> pd.DataFrame:
    n = len(phases)
    return pd.DataFrame({"epoch": range(n), "phase": phases, "loss": np.linspace(0.9, 0.4, n),
                         "val_loss": np.linspace(1.0, 0.6, n), "accuracy": np.linspace(0.5, 0.9, n),
                         "val_accuracy": np.linspace(0.45, 0.8, n), "val_auc": np.linspace(0.6, 0.93, n)})  # fmt: skip


def test_plot_history_shows_each_metric_per_epoch_and_the_phase_change():
    history = _history(["head", "head", "finetune", "finetune", "finetune"])
    fig = plot_history(history, TITLE)
    assert fig._suptitle.get_text() == TITLE
    loss, accuracy, auc = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "validation AUC"]
    assert legend(loss) == ["training", "validation", "fine-tuning starts"]
    assert legend(auc) == ["validation", "fine-tuning starts"]  # no training AUC is logged
    train_line, val_line, change = loss.get_lines()
    np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3, 4, 5])  # epochs counted from 1
    np.testing.assert_allclose(train_line.get_ydata(), history["loss"])
    np.testing.assert_allclose(val_line.get_ydata(), history["val_loss"])
    np.testing.assert_allclose(auc.get_lines()[0].get_ydata(), history["val_auc"])
    np.testing.assert_allclose(change.get_xdata(), [2.5, 2.5])  # between epoch 2 (head) and 3 (fine-tuning)
    assert accuracy.get_xlabel() == "epoch"


def test_plot_history_of_one_phase_has_no_phase_line():
    fig = plot_history(_history(["train"] * 4), "cnn on pneumonia")
    assert all(legend(ax)[-1] != "fine-tuning starts" for ax in fig.axes)
    assert fig._suptitle.get_text() == "cnn on pneumonia"


def test_plot_reliability_binary_points_and_counts():
    probs1 = np.array([0.05, 0.08, 0.12, 0.55, 0.58, 0.95, 0.97, 0.99, 1.0])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1, 0])
    fig = plot_reliability(y, np.column_stack([1 - probs1, probs1]), TITLE, positive="PNEUMONIA")
    top, below = fig.axes
    assert top.get_title() == TITLE and top.get_ylabel() == "observed share of PNEUMONIA"  # the class, named
    assert TITLE in texts(fig) and "images" in texts(fig)
    assert below.get_xlabel() == "predicted probability of PNEUMONIA"
    heights = [bar.get_height() for bar in below.patches]
    assert heights == [2, 1, 0, 0, 0, 2, 0, 0, 0, 4]  # 1.0 falls in the last bin
    model = top.get_lines()[1]
    np.testing.assert_allclose(model.get_xdata(), [0.065, 0.12, 0.565, (0.95 + 0.97 + 0.99 + 1.0) / 4])
    np.testing.assert_allclose(model.get_ydata(), [0, 1, 0.5, 0.75])
    assert legend(top) == ["perfectly calibrated", "model"]


def test_plot_reliability_three_classes_uses_the_top_probability():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.35, 0.45]])
    y = np.array([0, 2, 2, 1])
    fig = plot_reliability(y, probs, "cnn on synthetic3", n_bins=5)
    top, below = fig.axes
    assert top.get_ylabel() == "accuracy" and below.get_xlabel() == "top probability"
    assert [bar.get_height() for bar in below.patches] == [0, 0, 2, 1, 1]  # top probabilities 0.4, 0.45 | 0.7 | 0.8
    np.testing.assert_allclose(top.get_lines()[1].get_xdata(), [0.425, 0.7, 0.8])
    np.testing.assert_allclose(top.get_lines()[1].get_ydata(), [0.5, 1.0, 0.0])  # right: rows 0 and 2


def test_plot_threshold_marks_the_chosen_threshold():
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 20)
    p1 = np.clip(np.r_[rng.normal(0.35, 0.15, 20), rng.normal(0.65, 0.15, 20)], 0, 1)
    fig = plot_threshold(y, np.column_stack([1 - p1, p1]), 0.4213, TITLE, positive="PNEUMONIA")
    (ax,) = fig.axes
    assert ax.get_title() == TITLE and ax.get_xlabel() == "threshold on p(PNEUMONIA)"
    assert legend(ax) == ["sensitivity", "specificity", "chosen on validation: 0.421"]
    sensitivity, specificity, chosen = ax.get_lines()
    fpr, tpr, cuts = metrics.roc_curve(y, p1)
    keep = np.isfinite(cuts)
    np.testing.assert_allclose(sensitivity.get_xdata(), cuts[keep])
    np.testing.assert_allclose(sensitivity.get_ydata(), tpr[keep])
    np.testing.assert_allclose(specificity.get_ydata(), 1 - fpr[keep])
    np.testing.assert_allclose(chosen.get_xdata(), [0.4213, 0.4213])
    assert to_hex(sensitivity.get_color()) == class_color("PNEUMONIA")
    assert to_hex(specificity.get_color()) == class_color("NORMAL")


@pytest.fixture
def images_and_maps():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    maps = rng.uniform(0, 1, (2, 32, 32)).astype(np.float32)
    return images, maps


def test_plot_overlays_titles_and_lesion_outlines(images_and_maps):
    images, maps = images_and_maps
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 8:20, 10:22] = True  # only the first image has a lesion
    fig = plot_overlays(images, maps, ["PNEUMONIA p=0.93", "NORMAL p=0.80"], TITLE, masks=masks)
    assert fig._suptitle.get_text() == TITLE
    assert plt.get_fignums() == []
    assert [ax.get_title() for ax in fig.axes[:4]] == ["PNEUMONIA p=0.93", "Grad-CAM", "NORMAL p=0.80", "Grad-CAM"]
    assert fig.axes[-1].get_ylabel() == "heat (0 to 1)"  # the colour bar
    outlined = [len(ax.collections) > 0 for ax in fig.axes[:4]]
    assert outlined == [False, True, False, False]
    for row in range(2):  # each row: the image as it is, then its own map over it
        np.testing.assert_array_equal(fig.axes[2 * row].images[0].get_array(), images[row, ..., 0])
        np.testing.assert_allclose(fig.axes[2 * row + 1].images[0].get_array(), overlay(images[row], maps[row]))


def test_plot_sanity_titles_name_the_layer_and_the_similarity(images_and_maps):
    images, maps = images_and_maps
    results = [{"layer": "original", "spearman": 1.0, "maps": maps},
               {"layer": "conv_pw_13_relu_and_more", "spearman": 0.4321, "maps": maps[::-1]}]  # fmt: skip
    fig = plot_sanity(results, images, "Grad-CAM sanity check: mobilenet_025")
    assert fig._suptitle.get_text() == "Grad-CAM sanity check: mobilenet_025"
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["original\nrho 1.00", "conv_pw_13_relu_and_more\nrho 0.43", "", ""]
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 1, 1]  # rows: images, columns: steps
    for row in range(2):
        for col, step in enumerate(results):  # each step's own map of each image
            shown = fig.axes[row * len(results) + col].images[0].get_array()
            np.testing.assert_allclose(shown, overlay(images[row], step["maps"][row]))

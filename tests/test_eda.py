"""EDA tables and figures computed on a small manifest with known contents."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
from conftest import write_image

from utils.datasets import get_dataset
from utils.eda import (
    channel_table,
    class_balance,
    images_per_patient,
    intensity_histograms,
    leakage_table,
    plot_samples,
    plot_sizes,
    plot_split_counts,
    sample_rows,
    size_summary,
)
from utils.manifest import build_manifest


@pytest.fixture
def manifest(tmp_path):
    for p in range(10):
        write_image(tmp_path / f"src/train/NORMAL/IM-{p:04d}-0001.png", size=(60, 40), seed=p)
        write_image(
            tmp_path / f"src/train/PNEUMONIA/person{p}_virus_1.jpeg", size=(30, 30), mode="RGB", seed=50 + p
        )
        write_image(
            tmp_path / f"src/train/PNEUMONIA/person{p}_virus_2.jpeg", size=(30, 30), mode="RGB", seed=90 + p
        )
    for p in range(3):
        write_image(tmp_path / f"src/test/NORMAL/IM-{p:04d}-0001.png", size=(60, 40), seed=200 + p)
        write_image(
            tmp_path / f"src/test/PNEUMONIA/person{p}_virus_1.jpeg", size=(30, 30), mode="RGB", seed=300 + p
        )
    return build_manifest(get_dataset("pneumonia"), tmp_path / "src", tmp_path / "out", seed=0).manifest


def test_tables(manifest):
    assert class_balance(manifest).sum().round().eq(100).all()
    sizes = size_summary(manifest)
    assert sizes.loc["NORMAL", ("aspect", "median")] == 1.5
    assert sizes.loc["PNEUMONIA", ("width", "max")] == 30
    channels = channel_table(manifest)
    assert channels.loc["NORMAL", 1] == 13 and channels.loc["PNEUMONIA", 3] == 23
    assert images_per_patient(manifest).to_dict() == {1: 16, 2: 10}  # test-split ids are namespaced apart
    leakage = leakage_table(manifest)
    assert (leakage["shared patients"] == 0).all()


def test_sample_rows_per_class(manifest):
    sample = sample_rows(manifest, 3, seed=1)
    assert sample.groupby("label").size().to_dict() == {"NORMAL": 3, "PNEUMONIA": 3}
    assert (sample["split"] == "train").all()


def test_figures(manifest):
    assert len(plot_split_counts(manifest).axes) == 1
    assert len(plot_sizes(manifest).axes) == 2
    hist = intensity_histograms(manifest, per_class=2)
    assert len(hist.axes[0].patches) == 2  # one step histogram per class
    grid = plot_samples(manifest, per_class=3)
    assert len(grid.axes) == 6 and sum(bool(ax.images) for ax in grid.axes) == 6

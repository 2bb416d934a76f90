"""Grad-CAM on saved runs (notebook 10): a tiny synthetic dataset prepared and trained end to end into tmp (the
smoke profile, one epoch), plus an untrained CNN of another input size saved as a second run."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from tests.conftest import write_image
from utils.config import get_settings
from utils.experiment import train_course_model
from utils.explain import (
    LoadedRun,
    compare_models_on,
    explain_rows,
    load_images,
    load_latest_models,
    localisation_table,
    pick_examples,
    sanity_check,
    synthetic_localisation,
)
from utils.models import build_model
from utils.prepare import load_dataset, prepare_dataset
from utils.synthetic import generate_synthetic, load_mask

CLASSES = ["NORMAL", "BACTERIA", "VIRUS"]
SIZE = 64  # the smoke profile's
SMALL = 48  # the second run's
pytestmark = pytest.mark.slow  # trains a tiny model once (module fixture)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """``(output_dir, manifest)``: a trained ``cnn`` run and an untrained ``cnn_48`` run on the synthetic set."""
    root = tmp_path_factory.mktemp("course")
    source = generate_synthetic(root / "raw" / "synthetic", n_train_per_class=6, n_test_per_class=3)
    settings = dataclasses.replace(
        get_settings("smoke"),
        dataset="synthetic",
        data_dir=root / "data",
        output_dir=root / "outputs",
        seed=0,
        source=None,
        weights="none",
    )
    prepare_dataset("synthetic", settings, source=source)
    manifest = load_dataset("synthetic", settings).manifest
    train_course_model("cnn", settings, dataset="synthetic", epochs=(1, 0), verbose=0)

    model = build_model("cnn", len(CLASSES), SMALL, weights="none", seed=1).model
    rows = manifest[manifest["split"].isin(["val", "test"])][["path", "split", "label"]]
    probs = np.asarray(model(load_images(list(rows["path"]), SMALL), training=False))
    run_dir = settings.output_dir / "runs" / "synthetic" / "cnn_48" / "20260101-000000"
    run_dir.mkdir(parents=True)
    model.save(run_dir / "model.keras")
    rows.assign(**{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)}).to_csv(
        run_dir / "predictions.csv", index=False
    )
    config = {"model": "cnn_48", "dataset": "synthetic", "class_names": CLASSES, "image_size": SMALL}
    (run_dir / "config.json").write_text(json.dumps(config | {"weights_used": "none"}))
    (run_dir.parent / "LATEST").write_text(run_dir.name)
    return settings.output_dir, manifest


@pytest.fixture(scope="module")
def runs(course) -> dict[str, LoadedRun]:
    return load_latest_models(course[0], "synthetic")


def test_load_latest_models_reads_the_trained_run(runs):
    assert list(runs) == ["cnn", "cnn_48"]
    cnn = runs["cnn"]
    assert cnn.name == "cnn" and cnn.run_dir.parent.name == "cnn" and cnn.config["dataset"] == "synthetic"
    assert cnn.class_names == CLASSES and cnn.image_size == SIZE and runs["cnn_48"].image_size == SMALL
    assert set(cnn.predictions["split"]) == {"val", "test"}
    assert cnn.model.output_shape == (None, len(CLASSES))


def test_load_images_matches_model_input_format(course):
    paths = list(course[1]["path"][:2])
    images = load_images(paths, SIZE)
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 50
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey in three channels
    with pytest.raises(FileNotFoundError, match="CXR_DATA_DIR"):
        load_images([*paths, "/nowhere/x.png"], SIZE)


def test_pick_examples_splits_correct_and_wrong_by_argmax(runs):
    predictions = runs["cnn"].predictions
    picked = pick_examples(predictions, CLASSES, per_class=2)
    assert list(picked.columns) == ["path", "label", "predicted", "probability", "correct"]
    saved = predictions.set_index("path").loc[picked["path"]]
    assert (saved["split"] == "test").all()
    probs = saved[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_array_equal(picked["predicted"], np.asarray(CLASSES)[probs.argmax(axis=1)])
    np.testing.assert_allclose(picked["probability"], probs.max(axis=1), atol=1e-3)
    assert (picked["correct"] == (picked["label"] == picked["predicted"])).all()
    assert picked.groupby(["label", "correct"]).size().max() <= 2
    # every (class, correct) group present in the split is represented, in class order, correct first
    test = predictions[predictions["split"] == "test"]
    predicted = np.asarray(CLASSES)[test[[f"p_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)]
    groups = set(zip(test["label"], test["label"] == predicted, strict=True))
    assert set(zip(picked["label"], picked["correct"], strict=True)) == groups
    order = [
        (CLASSES.index(label), not correct)
        for label, correct in zip(picked["label"], picked["correct"], strict=True)
    ]
    assert order == sorted(order)
    pd.testing.assert_frame_equal(picked, pick_examples(predictions, CLASSES, per_class=2))  # deterministic
    with pytest.raises(ValueError, match="No 'train' predictions"):
        pick_examples(predictions, CLASSES, split="train")
    with pytest.raises(ValueError, match=r"p_PNEUMONIA"):
        pick_examples(predictions, ["NORMAL", "PNEUMONIA"])


def test_overlay_figures_have_one_panel_per_image_and_model(runs, course):
    open_before = set(plt.get_fignums())
    rows = pick_examples(runs["cnn"].predictions, CLASSES).iloc[:3]
    fig = explain_rows(runs["cnn"], rows)
    assert len(fig.axes) == 3 * 2
    probs = np.asarray(runs["cnn"].model(load_images(list(rows["path"]), SIZE), training=False))
    for ax, label, p in zip(fig.axes[::2], rows["label"], probs, strict=True):
        assert ax.get_title() == f"true {label}, pred {CLASSES[p.argmax()]} ({p.max():.2f})"
    assert re.fullmatch(r"true \w+, pred \w+ \(\d\.\d\d\)", fig.axes[0].get_title())

    fig = compare_models_on(runs, list(rows["path"]), list(rows["label"]))
    assert len(fig.axes) == 3 * (1 + len(runs))
    assert fig.axes[0].get_title() == f"true {rows['label'].iloc[0]}"
    assert fig.axes[1].get_title().startswith("cnn: ") and fig.axes[2].get_title().startswith("cnn_48: ")
    assert set(plt.get_fignums()) == open_before  # closed: a notebook shows each figure once


def test_localisation_uses_lesion_images_and_masks(runs, course):
    manifest = course[1]
    result = synthetic_localisation(runs["cnn"], manifest)
    lesions = manifest[(manifest["split"] == "test") & (manifest["label"] != "NORMAL")]
    assert result["paths"] == list(lesions["path"]) and result["n_images"] == len(lesions) > 0
    assert result["maps"].shape == result["masks"].shape == (len(lesions), SIZE, SIZE)
    assert result["images"].shape == (len(lesions), SIZE, SIZE, 3)
    masks = np.stack([load_mask(Path(p), SIZE) for p in lesions["path"]])
    np.testing.assert_array_equal(result["masks"], masks)
    assert result["pointing_baseline"] == pytest.approx(masks.mean())  # the mask area fraction
    assert result["random_baseline"] == pytest.approx(masks.mean(), abs=0.05)  # its Monte Carlo estimate
    for key in ("pointing_game", "random_baseline", "heat_inside_share", "share_baseline"):
        assert 0 <= result[key] <= 1, key
    assert result["maps"].min() >= 0 and result["maps"].max() <= 1

    small = synthetic_localisation(runs["cnn_48"], manifest, max_images=2)
    assert small["maps"].shape == (2, SMALL, SMALL) and set(small["paths"]) <= set(lesions["path"])
    table = localisation_table({"cnn": result, "cnn_48": small})
    assert list(table.columns[:3]) == ["pointing game", "random baseline", "heat inside ratio"]
    assert table.loc["cnn", "images"] == len(lesions) and table.loc["cnn_48", "images"] == 2
    assert table["pointing game"].is_monotonic_decreasing


def test_localisation_without_masks_explains_what_is_needed(runs, tmp_path):
    image = write_image(tmp_path / "chest_xray" / "test" / "PNEUMONIA" / "person1_bacteria_1.jpeg")
    manifest = pd.DataFrame({"path": [str(image)], "label": ["BACTERIA"], "split": ["test"]})
    with pytest.raises(ValueError, match=r"lesion masks.*synthetic dataset"):
        synthetic_localisation(runs["cnn"], manifest)


def test_sanity_check_returns_steps_and_figure(runs, course):
    images = load_images(list(course[1]["path"][:2]), SIZE)
    results, fig = sanity_check(runs["cnn"], images, n_steps=2)
    assert [r["step"] for r in results][0] == 0 and len(results) == 3
    assert results[0]["spearman"] == pytest.approx(1.0) or np.isnan(results[0]["spearman"])
    assert all(r["maps"].shape == (2, SIZE, SIZE) for r in results)
    assert len(fig.axes) == 1 + 2 * 3  # the correlation plot, then 2 images x 3 steps


def test_no_runs_or_no_model_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"04_custom_cnn.*08_densenet121"):
        load_latest_models(tmp_path, "synthetic")
    run_dir = tmp_path / "runs" / "synthetic" / "cnn" / "20260101-000000"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(
        json.dumps({"model": "cnn", "class_names": CLASSES, "image_size": 8})
    )
    (run_dir / "predictions.csv").write_text("path,split,label,p_NORMAL,p_BACTERIA,p_VIRUS\n")
    (run_dir.parent / "LATEST").write_text(run_dir.name)
    with pytest.raises(FileNotFoundError, match="model.keras is missing"):
        load_latest_models(tmp_path, "synthetic")

"""Grad-CAM on saved runs (notebook 10): a tiny untrained course CNN saved as a run, real synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils.datasets import kermany_three_class
from utils.explain import (
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
from utils.synthetic import generate_synthetic, load_mask

CLASSES = ["NORMAL", "BACTERIA", "VIRUS"]
SIZE = 32


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory) -> pd.DataFrame:
    root = generate_synthetic(
        tmp_path_factory.mktemp("raw") / "synthetic", n_train_per_class=2, n_test_per_class=3
    )
    paths = sorted(p for p in root.glob("test/*/*.png"))
    labels = [kermany_three_class(p.parent.name, p.name) for p in paths]  # Kermany layout, three classes
    return pd.DataFrame({"path": [str(p) for p in paths], "label": labels, "split": "test"})


@pytest.fixture(scope="module")
def output(tmp_path_factory, synthetic_manifest) -> Path:
    """Two saved runs (untrained CNNs of two sizes) whose predictions are the models' real outputs."""
    out = tmp_path_factory.mktemp("outputs")
    for name, size, seed in (("cnn", SIZE, 0), ("cnn_big", 48, 1)):
        model = build_model("cnn", len(CLASSES), size, weights="none", seed=seed).model
        run_dir = out / "runs" / "synthetic" / name / "20260101-000000"
        run_dir.mkdir(parents=True)
        model.save(run_dir / "model.keras")
        probs = np.asarray(model(load_images(list(synthetic_manifest["path"]), size), training=False))
        predictions = synthetic_manifest.assign(**{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)})
        predictions.to_csv(run_dir / "predictions.csv", index=False)
        config = {"model": name, "class_names": CLASSES, "image_size": size, "weights_used": "none"}
        (run_dir / "config.json").write_text(json.dumps(config))
        (run_dir.parent / "LATEST").write_text(run_dir.name)
    return out


def test_load_images_matches_model_input_format(synthetic_manifest):
    images = load_images(list(synthetic_manifest["path"][:2]), SIZE)
    assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 50
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey in three channels


def test_pick_examples_splits_correct_and_wrong_by_argmax(output):
    runs = load_latest_models(output, "synthetic")
    assert set(runs) == {"cnn", "cnn_big"} and runs["cnn"].image_size == SIZE
    picked = pick_examples(runs["cnn"].predictions, CLASSES, per_class=2)
    probs = runs["cnn"].predictions.set_index("path").loc[picked["path"], [f"p_{c}" for c in CLASSES]]
    np.testing.assert_array_equal(picked["predicted"], np.asarray(CLASSES)[probs.to_numpy().argmax(axis=1)])
    assert (picked["correct"] == (picked["label"] == picked["predicted"])).all()
    assert picked.groupby(["label", "correct"]).size().max() <= 2
    assert set(picked["label"]) == set(CLASSES)
    with pytest.raises(ValueError, match="No 'val' predictions"):
        pick_examples(runs["cnn"].predictions, CLASSES, split="val")


def test_overlay_figures_have_one_panel_per_image_and_model(output, synthetic_manifest):
    runs = load_latest_models(output, "synthetic")
    rows = synthetic_manifest.iloc[:3]
    assert len(explain_rows(runs["cnn"], rows).axes) == 3 * 2
    fig = compare_models_on(runs, list(rows["path"]), list(rows["label"]))
    assert len(fig.axes) == 3 * (1 + len(runs))
    assert fig.axes[1].get_title().startswith("cnn: ")


def test_localisation_uses_lesion_images_and_masks(output, synthetic_manifest):
    run = load_latest_models(output, "synthetic")["cnn"]
    result = synthetic_localisation(run, synthetic_manifest)
    lesions = synthetic_manifest[synthetic_manifest["label"] != "NORMAL"]
    assert result["paths"] == list(lesions["path"]) and result["n_images"] == len(lesions)
    assert result["maps"].shape == result["masks"].shape == (len(lesions), SIZE, SIZE)
    expected_area = np.mean([load_mask(Path(p), SIZE).mean() for p in lesions["path"]])
    assert result["pointing_baseline"] == pytest.approx(expected_area)
    assert 0 <= result["pointing_game"] <= 1 and 0 <= result["random_baseline"] <= 1
    table = localisation_table({"cnn": result})
    assert table.loc["cnn", "images"] == len(lesions)


def test_localisation_without_masks_explains_what_is_needed(output, tmp_path):
    run = load_latest_models(output, "synthetic")["cnn"]
    manifest = pd.DataFrame({"path": [str(tmp_path / "x.png")], "label": ["BACTERIA"], "split": "test"})
    with pytest.raises(ValueError, match="CXR_DATASET=synthetic"):
        synthetic_localisation(run, manifest)


def test_sanity_check_returns_steps_and_figure(output, synthetic_manifest):
    run = load_latest_models(output, "synthetic")["cnn"]
    images = load_images(list(synthetic_manifest["path"][3:5]), SIZE)
    results, fig = sanity_check(run, images, n_steps=2)
    assert [r["step"] for r in results][0] == 0 and len(results) == 3
    assert results[0]["spearman"] == pytest.approx(1.0)
    assert len(fig.axes) == 1 + 2 * 3


def test_no_runs_says_which_notebooks_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="08_densenet121"):
        load_latest_models(tmp_path, "synthetic")

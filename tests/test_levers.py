"""benchmarks/levers.py (issue 13): the EM label-shift correction checked against exact Bayes posteriors of a
synthetic calibrated classifier, the moved threshold, the TTA views, and the ``--quick`` path end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from benchmarks.levers import (
    VIEWS,
    moved_threshold,
    prior_shift_em,
    reweight,
    run_label,
    train_priors,
    view_transform,
)
from utils.course.runs import Run, load_run, save_json

TRAIN_PRIOR = np.array([0.26, 0.74])  # the Kermany training split: about a quarter NORMAL


def calibrated_classifier(train_prior, test_prior, means, n: int, seed: int):
    """Labels drawn with ``test_prior``, a score from N(means[y], 1), and the exact Bayes posteriors of that score
    under ``train_prior`` (what a perfectly calibrated classifier trained on the training prior outputs) and under
    ``test_prior`` (what the correction should give)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(test_prior), size=n, p=test_prior)
    score = rng.normal(np.asarray(means, float)[y], 1.0)
    likelihood = stats.norm.pdf(score[:, None], loc=np.asarray(means, float)[None, :])

    def posterior(prior):
        joint = likelihood * np.asarray(prior)
        return joint / joint.sum(axis=1, keepdims=True)

    return y, posterior(train_prior), posterior(test_prior)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_em_recovers_a_shifted_prior_and_the_exact_posteriors(seed):
    test_prior = np.array([0.6, 0.4])
    y, probs, exact = calibrated_classifier(TRAIN_PRIOR, test_prior, means=(0.0, 3.0), n=5000, seed=seed)
    assert np.abs(probs.mean(axis=0) - test_prior).max() > 0.05  # the unadjusted mean posterior is off
    adjusted, estimate, iterations = prior_shift_em(probs, TRAIN_PRIOR)
    assert np.abs(estimate - test_prior).max() < 0.02
    assert estimate.sum() == pytest.approx(1) and 1 < iterations < 100
    assert np.abs(adjusted - exact).max() < 0.02
    np.testing.assert_allclose(adjusted.sum(axis=1), 1)
    assert roc_auc_score(y, adjusted[:, 1]) == pytest.approx(roc_auc_score(y, probs[:, 1]))  # monotone: same ranking


def test_em_works_for_three_classes():
    train_prior, test_prior = np.array([0.2, 0.3, 0.5]), np.array([0.5, 0.3, 0.2])
    _, probs, exact = calibrated_classifier(train_prior, test_prior, means=(0.0, 3.0, 6.0), n=6000, seed=0)
    adjusted, estimate, _ = prior_shift_em(probs, train_prior)
    assert np.abs(estimate - test_prior).max() < 0.02
    assert np.abs(adjusted - exact).max() < 0.03


def test_em_changes_nothing_when_the_prior_did_not_change():
    _, probs, _ = calibrated_classifier(TRAIN_PRIOR, TRAIN_PRIOR, means=(0.0, 3.0), n=5000, seed=0)
    adjusted, estimate, _ = prior_shift_em(probs, TRAIN_PRIOR)
    assert np.abs(estimate - TRAIN_PRIOR).max() < 0.02
    assert np.abs(adjusted - probs).max() < 0.02
    # Exactly: when the mean posterior is the training prior, the first round is already the fixed point.
    exact = np.array([[0.1, 0.9], [0.42, 0.58], [0.26, 0.74]])
    adjusted, estimate, iterations = prior_shift_em(exact, exact.mean(axis=0))
    np.testing.assert_allclose(adjusted, exact, atol=1e-15)
    np.testing.assert_allclose(estimate, exact.mean(axis=0), atol=1e-15)
    assert iterations == 1


def test_em_stops_at_max_iter_and_rejects_bad_input():
    _, probs, _ = calibrated_classifier(TRAIN_PRIOR, np.array([0.6, 0.4]), means=(0.0, 1.0), n=500, seed=0)
    assert prior_shift_em(probs, TRAIN_PRIOR, max_iter=3)[2] == 3
    with pytest.raises(ValueError, match="positive and sum to 1"):
        prior_shift_em(probs, np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        prior_shift_em(probs, np.array([0.2, 0.3, 0.5]))


def test_moved_threshold_gives_the_decisions_of_the_adjusted_probabilities():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 2000)
    probs = np.stack([1 - p1, p1], axis=1)
    new_prior = np.array([0.4, 0.6])
    adjusted = reweight(probs, new_prior / TRAIN_PRIOR)
    for threshold in (0.2, 0.5, 0.83):
        moved = moved_threshold(threshold, TRAIN_PRIOR, new_prior)
        assert moved > threshold  # more NORMAL expected: a higher cutoff on p(PNEUMONIA)
        near = np.abs(p1 - moved) < 1e-9  # floating-point ties at the cutoff itself
        np.testing.assert_array_equal((adjusted[:, 1] >= threshold)[~near], (p1 >= moved)[~near])
    assert moved_threshold(0.5, TRAIN_PRIOR, TRAIN_PRIOR) == pytest.approx(0.5)
    assert moved_threshold(1.0, TRAIN_PRIOR, new_prior) == 1.0


def test_train_priors_reads_the_runs_training_split(tmp_path):
    config = {"model": "cnn", "class_names": ["NORMAL", "PNEUMONIA"], "status": "complete"}
    save_json(tmp_path / "config.json", config)
    labels = ["NORMAL"] * 1 + ["PNEUMONIA"] * 3 + ["NORMAL"] * 5  # train 1:3, then validation rows
    splits = ["train"] * 4 + ["val"] * 5
    pd.DataFrame({"path": [f"{i}.png" for i in range(9)], "label": labels, "split": splits}).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    priors = train_priors(Run(tmp_path, config))
    np.testing.assert_allclose(priors["manifest"], [0.25, 0.75])
    np.testing.assert_allclose(priors["class-weighted"], [0.5, 0.5], atol=1e-3)  # balanced class weights: every class counts


def test_views_are_small_and_keep_the_centre():
    assert len(VIEWS) <= 5 and VIEWS["identity"] == (1.0, 0.0, 0.0)
    size = 64
    centre = np.array([(size - 1) / 2, (size - 1) / 2, 1.0])
    for name, (zoom, dx, dy) in VIEWS.items():
        t = view_transform(zoom, dx, dy, size)
        matrix = np.array([t[:3], t[3:6], [0, 0, 1]])
        moved = matrix @ centre - centre  # where the output's centre reads from, relative to the input's centre
        np.testing.assert_allclose(moved[:2], [-dx * size, -dy * size], atol=1e-4, err_msg=name)
        assert 0.9 <= zoom <= 1.1 and abs(dx) <= 0.05 and abs(dy) <= 0.05  # within training's augmentation
        assert t[1] == t[3] == 0  # no rotation, no shear, no flip (a negative scale)
        assert t[0] > 0 and t[4] > 0


def test_the_aspect_probe_predicts_notebook_10s_zoomed_views_per_class(tmp_path):
    """A stand-in model whose p(class 1) is the share of bright pixels: a bright centre square grows when zoomed
    in, by 1.2 along one axis and 1.44 along both; each class's mean p and share above the threshold come back."""
    from PIL import Image

    from benchmarks.levers import ASPECTS, aspect_probe

    class BrightShare:
        def predict(self, images, verbose=0):
            q = (images[..., 0] > 127).mean(axis=(1, 2))
            return np.stack([1 - q, q], axis=1)

    paths = []
    for i, side in enumerate((20, 20, 40)):  # two small squares (class 0), one large (class 1)
        picture = np.zeros((64, 64), np.uint8)
        picture[32 - side // 2 : 32 + side // 2, 32 - side // 2 : 32 + side // 2] = 255
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(picture).save(paths[-1])
    y = np.array([0, 0, 1])
    out = aspect_probe(BrightShare(), {"val": (paths, y, None)}, 64, threshold=0.2)["val"]
    assert list(out) == list(ASPECTS)
    small, large = (20 / 64) ** 2, (40 / 64) ** 2
    assert out["as is"]["0"] == [pytest.approx(small, abs=0.01), 0.0] and out["as is"]["1"] == [pytest.approx(large, abs=0.01), 1.0]
    for view, growth in (("wider x1.2", 1.2), ("taller x1.2", 1.2), ("both x1.2", 1.44)):
        assert out[view]["0"][0] == pytest.approx(small * growth, abs=0.02), view
    assert out["both x1.2"]["0"][1] == 0.0  # 0.14 < 0.2: still below the threshold


def test_levers_quick_scores_every_lever_on_two_fake_runs(tmp_path, capsys):
    from benchmarks import levers

    assert levers.main(["--quick", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "levers.json").read_text())
    assert [(r["model"], r["lever"].split(" (")[0]) for r in result["rows"]] == [
        *[(m, lever) for m in ("cnn", "mobilenet_025")
          for lever in ("baseline", "EM prior shift", "EM prior shift", "EM prior shift", "BCTS on val", "TTA")],
        ("cnn+mobilenet_025", "ensemble"),
    ]  # fmt: skip
    runs = {load_run(path).model_name: path for path in result["runs"]}
    for row in result["rows"]:
        for split in ("val", "test"):
            for name, (value, low, high) in row[split].items():
                assert 0 <= low <= value <= high <= 1, (row["lever"], split, name)
        if row["lever"] == "baseline":  # the saved predictions at the saved threshold
            predictions = pd.read_csv(f"{runs[row['model']]}/predictions.csv").query("split == 'test'")
            y = (predictions["label"] == "PNEUMONIA").to_numpy()
            pred = predictions["p_PNEUMONIA"].to_numpy() >= row["threshold"]
            assert row["test"]["accuracy"][0] == pytest.approx((pred == y).mean(), abs=1e-4)
            assert row["test"]["AUC"][0] == pytest.approx(roc_auc_score(y, predictions["p_PNEUMONIA"]), abs=1e-4)
    baseline = {r["model"]: r for r in result["rows"] if r["lever"] == "baseline"}
    for row in result["rows"]:
        if row["lever"].startswith(("EM", "BCTS")):  # monotone in p(PNEUMONIA): the ranking, hence the AUC, stays
            assert row["test"]["AUC"][0] == pytest.approx(baseline[row["model"]]["test"]["AUC"][0], abs=1e-3)
    for model in ("cnn", "mobilenet_025"):
        details = result["details"][model]
        assert max(details["tta"]["identity_vs_saved_max_abs_diff"].values()) < 1e-4
        em = details["em"]["manifest"]
        assert em["train_prior"] == [0.25, 0.75] and em["test"]["true_prior"] == [0.5, 0.5]
        # A pure label shift (the test split is 1:1, training and validation 1:3) and about calibrated posteriors:
        # EM finds both priors from the unlabelled predictions (60 and 64 images: a few points of noise).
        assert abs(em["val"]["estimated_prior"][0] - 0.25) < 0.05 and abs(em["test"]["estimated_prior"][0] - 0.5) < 0.1
        probe = details["aspect"]  # the "as is" view is the saved predictions again, per true class
        for split in ("val", "test"):
            predictions = pd.read_csv(f"{runs[model]}/predictions.csv").query("split == @split")
            for k, label in enumerate(("NORMAL", "PNEUMONIA")):
                p = predictions.loc[predictions["label"] == label, "p_PNEUMONIA"]
                assert probe[split]["as is"][str(k)][0] == pytest.approx(p.mean(), abs=1e-4)
                assert probe[split]["as is"][str(k)][1] == pytest.approx((p >= details["threshold"]).mean(), abs=1e-4)
            assert set(probe[split]) == {"as is", "wider x1.2", "taller x1.2", "both x1.2"}
        calibrated = details["calibrated_em"]  # BCTS fitted on validation, then EM from validation's shares
        assert calibrated["train_prior"] == [0.25, 0.75] and abs(calibrated["test"]["estimated_prior"][0] - 0.5) < 0.1
        relative = details["em"]["EM of val"]  # validation as the reference: validation is left exactly as it was
        assert relative["train_prior"] == em["val"]["estimated_prior"] and relative["val"]["max_abs_change"] == 0
        assert relative["val"]["moved_threshold"] == pytest.approx(details["threshold"], abs=1e-4)
    for row in result["rows"]:
        if "EM of val" in row["lever"]:
            assert row["val"] == baseline[row["model"]]["val"]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    main_rows = [r for r in cells if len(r) == 11 and r[0] != "model"]
    assert [(r[0], r[2]) for r in main_rows] == [(r["model"], f"{r['threshold']:.3f}") for r in result["rows"]]
    assert len([r for r in cells if len(r) == 9 and r[0] != "model"]) == 2 * 3 * 2  # EM: models x priors x splits
    assert len([r for r in cells if len(r) == 7 and r[0] != "model"]) == 2 * 2 * 2  # probe: models x splits x classes
    assert "EM details" in out and "Aspect-ratio probe" in out and out.rstrip().endswith("levers.json")
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("BCTS ")] == ["BCTS cnn", "BCTS mobilenet_025"]


def test_a_runs_images_are_predicted_again_as_its_variant_loaded_them(tmp_path, capsys):
    """TTA and the aspect probe predict a run's images again: equalised for a run of train_levers.py's equalize
    variant (its ``benchmark_variant``), so that the identity view is its saved predictions. A run whose images
    do not give its saved predictions that way keeps its baseline and EM rows, and the rest is skipped with a note."""
    from benchmarks import levers
    from utils import data

    original = data.load_image
    with levers.images_loaded_as("equalize"):  # trained (here: predicted and saved) on equalised images
        equalized = levers.make_quick_runs(tmp_path / "equalized")[0]
    plain = levers.make_quick_runs(tmp_path / "plain")[0]
    for run in (equalized, plain):  # the plain run mislabelled: its saved predictions come from plain images
        save_json(run.path / "config.json", run.config | {"benchmark_variant": "equalize"})
    args = ["--no-adabn", "--n-boot", "50", "--output", str(tmp_path)]
    assert levers.main(["--runs", str(equalized.path), *args]) == 0
    details = json.loads((tmp_path / "levers.json").read_text())["details"]["cnn"]
    assert max(details["tta"]["identity_vs_saved_max_abs_diff"].values()) < 1e-4 and "aspect" in details
    assert "skipped" not in capsys.readouterr().err and data.load_image is original
    assert levers.main(["--runs", str(plain.path), *args]) == 0
    result = json.loads((tmp_path / "levers.json").read_text())
    assert [row["lever"].split(" (")[0] for row in result["rows"]] == ["baseline", *["EM prior shift"] * 3, "BCTS on val"]
    details = result["details"]["cnn"]
    assert "tta" not in details and "aspect" not in details
    assert details["repredicted_levers_skipped"]["max_abs_diff_to_saved"] > 0.01
    assert "TTA, the aspect probe and AdaBN are skipped" in capsys.readouterr().err and data.load_image is original


def test_runs_of_one_model_are_named_by_their_seed():
    from types import SimpleNamespace

    def fake(model, seed, folder="20261202-120000"):
        return SimpleNamespace(model_name=model, config={"seed": seed}, path=Path("runs") / model / folder)

    seeds = [fake("mobilenet_025", 1), fake("mobilenet_025", 42)]
    assert [run_label(run, seeds) for run in seeds] == ["mobilenet_025 seed 1", "mobilenet_025 seed 42"]
    mixed = [fake("cnn", 42), fake("mobilenet_025", 42)]
    assert [run_label(run, mixed) for run in mixed] == ["cnn", "mobilenet_025"]
    variants = [fake("mobilenet_025", 42, "20261202-150000"), fake("mobilenet_025", 42, "20261202-160000"),
                fake("mobilenet_025", 1)]  # fmt: skip
    assert [run_label(run, variants) for run in variants] == [
        "mobilenet_025 seed 42 (20261202-150000)", "mobilenet_025 seed 42 (20261202-160000)", "mobilenet_025 seed 1"]


def test_a_three_class_run_is_scored_as_normal_against_pneumonia():
    """p(PNEUMONIA) = 1 - p(NORMAL) = p(BACTERIA) + p(VIRUS); the threshold comes from validation (Youden's J)."""
    from types import SimpleNamespace

    from benchmarks.levers import binary_of_three_class
    from utils.metrics import choose_threshold

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("val", 60), ("test", 45)):
        y = np.arange(n) % 3  # NORMAL, BACTERIA, VIRUS
        logits = rng.normal(0, 1, (n, 3)) + 2.5 * np.eye(3)[y]
        arrays[split] = y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run = SimpleNamespace(model_name="cnn", class_names=["NORMAL", "BACTERIA", "VIRUS"], arrays=arrays.get)
    row = binary_of_three_class(run, n_boot=50)
    y_val, p_val = arrays["val"]
    expected = choose_threshold((y_val != 0).astype(int), np.c_[p_val[:, 0], p_val[:, 1:].sum(axis=1)])
    assert row["model"] == "cnn (3 classes)" and row["threshold"] == pytest.approx(expected)
    y_test, p_test = arrays["test"]
    pneumonia = y_test != 0
    assert row["test"]["AUC"][0] == pytest.approx(roc_auc_score(pneumonia, 1 - p_test[:, 0]), abs=5e-5)  # rounded
    decided = p_test[:, 1:].sum(axis=1) >= row["threshold"]
    assert row["test"]["accuracy"][0] == pytest.approx((decided == pneumonia).mean(), abs=5e-5)
    assert row["test"]["specificity"][0] == pytest.approx((~decided[~pneumonia]).mean(), abs=5e-5)


def test_adabn_takes_the_statistics_of_the_images_at_hand():
    """conv (valid padding) -> BatchNorm: images brightened by a constant shift every conv channel by a constant;
    after AdaBN on them the network answers as it did after AdaBN on the original images."""
    import keras

    from benchmarks.levers import adapt_batchnorm

    def model():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((12, 12, 3))
        x = keras.layers.Conv2D(4, 3, padding="valid")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))

    images = np.random.default_rng(0).normal(100, 20, (40, 12, 12, 3)).astype(np.float32)
    brighter = images + 30
    plain = model()
    assert adapt_batchnorm(plain, images) == 1
    bn = plain.layers[2]
    conv_out = keras.ops.convert_to_numpy(plain.layers[1](images))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), conv_out.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_variance), conv_out.var(axis=(0, 1, 2)), rtol=1e-3)
    assert not bn.trainable  # frozen again
    shifted = model()
    before = keras.ops.convert_to_numpy(shifted(brighter, training=False))
    adapt_batchnorm(shifted, brighter)
    after = keras.ops.convert_to_numpy(shifted(brighter, training=False))
    reference = keras.ops.convert_to_numpy(plain(images, training=False))
    np.testing.assert_allclose(after, reference, atol=1e-4)
    assert np.abs(before - reference).max() > 1e-2  # without AdaBN the shift did change the answers
    no_bn = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    weights = [w.copy() for w in no_bn.get_weights()]
    assert adapt_batchnorm(no_bn, np.ones((3, 4), np.float32)) == 0
    assert all((a == b).all() for a, b in zip(weights, no_bn.get_weights(), strict=True))


def test_class_offsets_are_the_best_on_validation_and_zero_when_the_argmax_is_best():
    """A model that under-calls class 2 (its log-probability 1.2 too low): the offsets chosen on validation are the
    grid's best for macro-F1 (checked against every grid point), favour class 2, and help an unseen split too."""
    from itertools import product

    from sklearn.metrics import f1_score

    from benchmarks.levers import OFFSET_GRID, class_offsets, shift_probs

    rng = np.random.default_rng(3)

    def split(n):
        y = np.arange(n) % 3
        logits = rng.normal(0, 1, (n, 3)) + 2.0 * np.eye(3)[y] - np.array([0, 0, 1.2])
        return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    (y_val, p_val), (y_test, p_test) = split(600), split(600)
    offsets = class_offsets(y_val, p_val)
    macro = lambda y, p: f1_score(y, p.argmax(axis=1), average="macro")  # noqa: E731
    best = max(macro(y_val, shift_probs(p_val, np.r_[0, b])) for b in product(OFFSET_GRID, repeat=2))
    assert offsets[0] == 0 and macro(y_val, shift_probs(p_val, offsets)) == pytest.approx(best)
    assert offsets[2] - offsets[1] > 0.5  # class 2 is lifted against class 1
    assert macro(y_test, shift_probs(p_test, offsets)) > macro(y_test, p_test) + 0.02
    np.testing.assert_allclose(shift_probs(p_val, offsets).sum(axis=1), 1)

    separable = np.eye(3)[y_val] * 0.9 + 0.05  # the argmax is already perfect: every offset ties, none is taken
    np.testing.assert_array_equal(class_offsets(y_val, separable), [0, 0, 0])


@pytest.mark.parametrize(("scale", "shift"), [(3.0, 1.0), (0.5, -0.5)])
def test_bcts_undoes_an_over_or_under_confident_and_biased_classifier(scale, shift):
    from benchmarks.levers import calibrate, fit_bias_corrected_temperature

    # Calibrated logits z (labels drawn from softmax(z)), seen through a model that outputs softmax(scale * z +
    # (0, shift)): the fit has to find T = scale and b = -shift / scale, and calibrate() gives softmax(z) back.
    rng = np.random.default_rng(0)
    z = np.c_[np.zeros(20_000), rng.normal(0.5, 2.0, 20_000)]
    true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (rng.random(20_000) < true[:, 1]).astype(int)
    seen = scale * z + [0, shift]
    probs = np.exp(seen) / np.exp(seen).sum(axis=1, keepdims=True)
    temperature, bias = fit_bias_corrected_temperature(y, probs)
    assert temperature == pytest.approx(scale, rel=0.05) and bias[0] == 0
    assert bias[1] == pytest.approx(-shift / scale, abs=0.05)
    assert np.abs(calibrate(probs, temperature, bias) - true).max() < 0.03
    assert np.allclose(calibrate(probs, 1.0, np.zeros(2)), probs)


def test_three_class_levers_score_the_argmax_the_offsets_and_em(tmp_path):
    from sklearn.metrics import f1_score

    from benchmarks.levers import shift_probs, three_class_levers

    names = ["NORMAL", "BACTERIA", "VIRUS"]
    config = {"model": "mobilenet_025", "class_names": names, "status": "complete"}
    save_json(tmp_path / "config.json", config)
    labels = ["NORMAL"] * 26 + ["BACTERIA"] * 48 + ["VIRUS"] * 26
    pd.DataFrame({"path": [f"{i}.png" for i in range(100)], "label": labels, "split": "train"}).to_csv(
        tmp_path / "manifest.csv", index=False
    )
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("val", 90), ("test", 60)):
        y = np.arange(n) % 3
        logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[y]
        arrays[split] = y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    run = Run(tmp_path, config)
    run.arrays = arrays.get
    rows, details = three_class_levers(run, n_boot=50)
    assert [r["lever"].split(" (")[0] for r in rows] == ["argmax", "per-class offsets chosen on val",
                                                         "EM prior shift", "EM prior shift", "BCTS on val"]  # fmt: skip
    # Calibrated by a fit on validation (T about 1: these probabilities come from their own generating logits);
    # EM then finds the test split's shares (a third each) from validation's (also a third each here).
    calibrated = details["calibrated_em"]
    assert calibrated["train_prior"] == pytest.approx([1 / 3] * 3, abs=1e-4) and 0.6 < calibrated["temperature"] < 1.6
    assert calibrated["test"]["estimated_prior"] == pytest.approx([1 / 3] * 3, abs=0.1)
    y_test, p_test = arrays["test"]
    assert rows[0]["test"]["macro-F1"][0] == pytest.approx(f1_score(y_test, p_test.argmax(1), average="macro"), abs=5e-5)
    shifted = shift_probs(p_test, np.array(details["offsets"]))
    assert rows[1]["test"]["F1 per class"] == pytest.approx(f1_score(y_test, shifted.argmax(1), average=None), abs=5e-5)
    em = details["em"]["manifest"]
    assert em["train_prior"] == pytest.approx([0.26, 0.48, 0.26]) and em["test"]["true_prior"] == pytest.approx([1 / 3] * 3, abs=1e-4)


def test_a_three_class_ensemble_averages_the_runs_on_the_images_they_share():
    from types import SimpleNamespace

    from sklearn.metrics import f1_score

    from benchmarks.levers import three_class_ensemble

    rng = np.random.default_rng(1)
    runs = []
    for seed, n_test in ((1, 30), (2, 33)):  # the second run scored three test images more: left out
        arrays, frames = {}, []
        for split, n in (("val", 45), ("test", n_test)):
            y = np.arange(n) % 3
            logits = rng.normal(0, 1.5, (n, 3)) + 1.0 * np.eye(3)[y]
            arrays[split] = y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            frames.append(pd.DataFrame({"path": [f"{split}/{i}.png" for i in range(n)], "split": split}))
        table = pd.concat(frames)
        runs.append(SimpleNamespace(model_name="mobilenet_025", class_names=["NORMAL", "BACTERIA", "VIRUS"],
                                    config={"seed": seed}, arrays=arrays.get, predictions=lambda t=table: t))  # fmt: skip
    row = three_class_ensemble(runs, n_boot=50)
    assert row["lever"].startswith("ensemble of 2 runs (seeds 1, 2") and row["lever"].endswith("val 45, test 30")
    y, mean = runs[0].arrays("test")[0], (runs[0].arrays("test")[1] + runs[1].arrays("test")[1][:30]) / 2
    assert row["test"]["macro-F1"][0] == pytest.approx(f1_score(y, mean.argmax(1), average="macro"), abs=5e-5)
    assert row["model"] == "mobilenet_025 (3 classes)"
    runs[0].model_name = "cnn"  # two models: the row names both, and each member by model and seed
    row = three_class_ensemble(runs, n_boot=50)
    assert row["model"] == "cnn+mobilenet_025 (3 classes)"
    assert row["lever"].startswith("ensemble of 2 runs (cnn seed 1, mobilenet_025 seed 2; mean probability)")

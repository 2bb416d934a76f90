"""utils.metrics against independent computations: scikit-learn, SciPy, exact binomial quantiles, hand-worked
examples. The bootstrap tests pin its percentiles and its resampling (every image can be drawn)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from sklearn import metrics as skm

from utils.metrics import (
    apply_temperature,
    bootstrap_ci,
    calibration_error,
    choose_threshold,
    fit_temperature,
    mcnemar,
    predict_classes,
    rank_auc,
    roc_auc,
    scores,
    scores_with_ci,
    shared_predictions,
    table,
)


def binary_probs(p1: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - p1, p1])


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == y))


def known_accuracy(n: int = 400, correct: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images, half of each class, exactly ``correct`` of them predicted right (argmax)."""
    y = np.tile([0, 1], n // 2)
    right = np.zeros(n, dtype=bool)
    right[np.random.default_rng(1).permutation(n)[:correct]] = True
    p1 = np.where(right == (y == 1), 0.8, 0.2)
    return y, binary_probs(p1)


# --- The bootstrap -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_bootstrap_interval_matches_the_exact_binomial_quantiles(alpha):
    """Resampling 400 images of which 320 are right makes the number right Binomial(400, 0.8): the percentile
    interval's ends must be that distribution's alpha/2 and 1 - alpha/2 quantiles (steps of 1/400)."""
    n, p = 400, 0.8
    y, probs = known_accuracy(n, int(p * n))
    assert accuracy(y, probs) == p
    low, high = bootstrap_ci(y, probs, accuracy, n_boot=4000, alpha=alpha, seed=0)
    exact_low, exact_high = stats.binom.ppf([alpha / 2, 1 - alpha / 2], n, p) / n
    assert low == pytest.approx(exact_low, abs=1.5 / n)
    assert high == pytest.approx(exact_high, abs=1.5 / n)


def test_bootstrap_95_interval_width_matches_the_normal_approximation():
    n, p = 400, 0.8
    y, probs = known_accuracy(n, int(p * n))
    low, high = bootstrap_ci(y, probs, accuracy, n_boot=4000, seed=0)
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert high - low == pytest.approx(2 * half, rel=0.15)
    assert low == pytest.approx(p - half, abs=0.006)
    assert high == pytest.approx(p + half, abs=0.006)


def test_bootstrap_can_draw_every_image_including_the_last():
    """The max of p(class 1) is 0.99 exactly when the last image is drawn (63% of resamples): the upper end of the
    interval must reach it, and some resample must miss it (the lower end stays below)."""
    n = 20
    y = np.tile([0, 1], n // 2)
    p1 = np.linspace(0.1, 0.5, n)
    p1[-1] = 0.99
    low, high = bootstrap_ci(y, binary_probs(p1), lambda yy, pp: pp[:, 1].max(), n_boot=500, seed=0)
    assert high == 0.99
    assert low < 0.99


def test_bootstrap_can_draw_the_first_image():
    n = 20
    y = np.tile([0, 1], n // 2)
    p1 = np.linspace(0.5, 0.1, n)
    p1[0] = 0.99
    _, high = bootstrap_ci(y, binary_probs(p1), lambda yy, pp: pp[:, 1].max(), n_boot=500, seed=0)
    assert high == 0.99


def test_bootstrap_is_seeded_and_vector_valued():
    y, probs = known_accuracy(100, 70)
    both = lambda yy, pp: [accuracy(yy, pp), rank_auc(yy, pp)]  # noqa: E731
    a = bootstrap_ci(y, probs, both, n_boot=200, seed=5)
    b = bootstrap_ci(y, probs, both, n_boot=200, seed=5)
    c = bootstrap_ci(y, probs, both, n_boot=200, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.shape(a) == (2, 2)
    # the first column is the accuracy's interval, computed alone from the same resamples
    np.testing.assert_allclose(np.asarray(a)[:, 0], bootstrap_ci(y, probs, accuracy, n_boot=200, seed=5))


def test_bootstrap_skips_resamples_with_one_class():
    """With one image of class 1, about a third of resamples lack it: those are skipped, never scored."""
    y = np.array([0] * 9 + [1])
    probs = binary_probs(np.linspace(0.1, 0.9, 10))
    seen = []

    def metric(yy, pp):
        seen.append(len(np.unique(yy)))
        return rank_auc(yy, pp)

    low, high = bootstrap_ci(y, probs, metric, n_boot=300, seed=0)
    assert set(seen) == {2} and 150 < len(seen) < 250
    assert not np.isnan(low) and not np.isnan(high)


def test_scores_with_ci_uses_the_point_scores_and_the_same_resamples():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 300), 0, 1)
    probs = binary_probs(p1)
    result = scores_with_ci(y, probs, 0.5, n_boot=300, seed=2)
    point = scores(y, probs, 0.5)
    assert list(result) == list(point)
    assert {k: v[0] for k, v in result.items()} == point
    auc_low, auc_high = bootstrap_ci(y, probs, lambda yy, pp: scores(yy, pp, 0.5)["AUC"], 300, seed=2)
    assert result["AUC"][1:] == (round(float(auc_low), 4), round(float(auc_high), 4))
    for value, low, high in result.values():
        assert low < value < high  # 300 images: every interval has width around the point estimate


# --- AUC -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_rank_auc_equals_sklearn_binary_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p1 = np.round(rng.uniform(0, 1, 200) * 0.6 + 0.4 * y, 1)  # rounded: many ties, within and across classes
    assert len(np.unique(p1)) < 20
    probs = binary_probs(p1)
    expected = skm.roc_auc_score(y, p1)
    assert rank_auc(y, probs) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(y, probs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_rank_auc_equals_sklearn_macro_one_vs_rest(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + 1.5 * np.eye(3)[y]
    probs = np.round(special.softmax(logits, axis=1), 2)  # ties again
    expected = skm.roc_auc_score(y, probs / probs.sum(1, keepdims=True), multi_class="ovr", average="macro")
    per_class = np.mean([skm.roc_auc_score(y == k, probs[:, k]) for k in range(3)])
    assert rank_auc(y, probs) == pytest.approx(per_class, abs=1e-12)
    assert roc_auc(y, probs / probs.sum(1, keepdims=True)) == pytest.approx(expected, abs=1e-12)


def test_rank_auc_of_perfect_inverted_and_one_class():
    y = np.array([0, 0, 1, 1])
    assert rank_auc(y, binary_probs(np.array([0.1, 0.2, 0.8, 0.9]))) == 1.0
    assert rank_auc(y, binary_probs(np.array([0.9, 0.8, 0.2, 0.1]))) == 0.0
    assert rank_auc(y, binary_probs(np.array([0.5, 0.5, 0.5, 0.5]))) == 0.5
    assert np.isnan(rank_auc(np.array([1, 1, 1]), binary_probs(np.array([0.1, 0.5, 0.9]))))


# --- Decisions and scores -------------------------------------------------------------------------------------


def test_choose_threshold_maximises_youden_j():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    threshold = choose_threshold(y, binary_probs(p1))

    def youden(t: float) -> float:
        pred = p1 >= t
        return pred[y == 1].mean() - pred[y == 0].mean()

    best = max(youden(t) for t in np.unique(p1))
    assert youden(threshold) == pytest.approx(best)
    assert threshold in set(p1)


def test_choose_threshold_is_never_infinite():
    y = np.array([0, 0, 1, 1])
    probs = binary_probs(np.array([1.0, 0.8, 0.2, 0.1]))  # inverted: nothing beats "none"; a NORMAL at p = 1.0
    threshold = choose_threshold(y, probs)
    assert 1.0 < threshold < 1.001 and not predict_classes(probs, threshold).any()
    assert not predict_classes(probs.astype(np.float32), threshold).any()  # float32 softmax outputs too


def test_predict_classes():
    probs = binary_probs(np.array([0.2, 0.3, 0.31, 0.9]))
    np.testing.assert_array_equal(predict_classes(probs, 0.3), [0, 1, 1, 1])  # >= the threshold
    np.testing.assert_array_equal(predict_classes(probs, None), [0, 0, 0, 1])  # argmax
    three = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]])
    np.testing.assert_array_equal(predict_classes(three, 0.05), [1, 0, 2])  # a threshold is for two classes only


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.72])
def test_binary_scores_equal_sklearn(threshold):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 250)
    p1 = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    pred = (p1 >= threshold).astype(int)
    got = scores(y, binary_probs(p1), threshold)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced accuracy": skm.balanced_accuracy_score(y, pred),
        "macro-F1": skm.f1_score(y, pred, average="macro"),
        "AUC": skm.roc_auc_score(y, p1),
        "sensitivity": skm.recall_score(y, pred, pos_label=1),
        "specificity": skm.recall_score(y, pred, pos_label=0),
    }
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=5e-5), name


def test_three_class_scores_equal_sklearn_and_have_no_sensitivity():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 200)
    probs = special.softmax(rng.normal(size=(200, 3)) + np.eye(3)[y], axis=1)
    pred = probs.argmax(1)
    got = scores(y, probs, threshold=None)
    assert set(got) == {"accuracy", "balanced accuracy", "macro-F1", "AUC"}
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=5e-5)
    assert got["balanced accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=5e-5)
    assert got["macro-F1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=5e-5)
    assert got["AUC"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"), abs=5e-5)


def test_scores_when_a_class_is_never_predicted():
    y = np.array([0, 0, 0, 1])
    got = scores(y, binary_probs(np.array([0.1, 0.2, 0.3, 0.4])), 0.9)  # everything predicted 0
    assert got["sensitivity"] == 0.0 and got["specificity"] == 1.0 and got["accuracy"] == 0.75
    assert got["macro-F1"] == pytest.approx(skm.f1_score(y, np.zeros(4, int), average="macro", zero_division=0), abs=5e-5)


def test_table_formats_intervals_and_plain_numbers():
    frame = table({"cnn": {"AUC": (0.91234, 0.8711, 0.94712), "images": 48}, "vgg16": {"AUC": (0.5, 0.4, 0.6), "images": 48}})
    assert isinstance(frame, pd.DataFrame)
    assert frame.loc["cnn", "AUC"] == "0.912 [0.871, 0.947]"
    assert frame.loc["vgg16", "AUC"] == "0.500 [0.400, 0.600]"
    assert frame.loc["cnn", "images"] == 48
    assert table({"m": {"AUC": (0.91234, 0.8711, 0.94712)}}, digits=2).loc["m", "AUC"] == "0.91 [0.87, 0.95]"


# --- Calibration ---------------------------------------------------------------------------------------------


def reference_ece(y: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Written out with a loop over the bins, from the definition."""
    if probs.shape[1] == 2:
        score, hit = probs[:, 1], (y == 1).astype(float)
    else:
        score, hit = probs.max(1), (probs.argmax(1) == y).astype(float)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (score >= lo) & ((score < hi) if b < n_bins - 1 else (score <= hi))
        if inside.any():
            total += inside.sum() / len(score) * abs(hit[inside].mean() - score[inside].mean())
    return total


def test_calibration_error_by_hand():
    y = np.array([0, 0, 1, 0])
    probs = binary_probs(np.array([0.05, 0.15, 0.95, 0.95]))
    # bins 0, 1 and 9: |0 - 0.05| + |0 - 0.15| + 2 * |0.5 - 0.95|, over 4 images
    assert calibration_error(y, probs) == pytest.approx((0.05 + 0.15 + 0.9) / 4)


@pytest.mark.parametrize("classes", [2, 3])
def test_calibration_error_equals_the_definition(classes):
    rng = np.random.default_rng(classes)
    y = rng.integers(0, classes, 500)
    probs = special.softmax(rng.normal(size=(500, classes)) * 2 + np.eye(classes)[y], axis=1)
    probs[0] = np.eye(classes)[1]  # a probability of exactly 1 goes into the last bin
    assert calibration_error(y, probs) == pytest.approx(reference_ece(y, probs), abs=1e-12)


def test_calibration_error_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p1).astype(int)
    assert calibration_error(y, binary_probs(p1)) < 0.02
    overconfident = np.where(p1 > 0.5, 0.99, 0.01)
    assert calibration_error(y, binary_probs(overconfident)) > 0.2


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    """Labels drawn from softmax(z); the model reports softmax(z / T): the fit must find T."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(20000, 3))
    y = np.array([rng.choice(3, p=p) for p in special.softmax(z, axis=1)])
    reported = special.softmax(z / true_temperature, axis=1)
    fitted = fit_temperature(y, reported)
    # softmax(log(softmax(z / T)) / t) = softmax(z / (T t)): calibrated at T t = 1
    assert fitted * true_temperature == pytest.approx(1.0, rel=0.05)
    recalibrated = apply_temperature(reported, fitted)
    np.testing.assert_allclose(recalibrated, special.softmax(z / (true_temperature * fitted), axis=1), atol=1e-6)
    np.testing.assert_array_equal(recalibrated.argmax(1), reported.argmax(1))  # the ranking does not change
    assert calibration_error(y, recalibrated) < calibration_error(y, reported)


def test_apply_temperature_by_hand():
    probs = np.array([[0.2, 0.8]])
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs)
    # T = 2: softmax(log p / 2) = sqrt(p) normalised
    np.testing.assert_allclose(apply_temperature(probs, 2.0), [np.sqrt([0.2, 0.8]) / np.sqrt([0.2, 0.8]).sum()])


# --- McNemar ---------------------------------------------------------------------------------------------------


def paired(b: int, c: int, both_right: int = 30, both_wrong: int = 5):
    """Predictions of two models with b images only A gets right and c only B gets right."""
    y = np.zeros(b + c + both_right + both_wrong, dtype=int)
    a = np.concatenate([np.zeros(b), np.ones(c), np.zeros(both_right), np.ones(both_wrong)]).astype(int)
    bb = np.concatenate([np.ones(b), np.zeros(c), np.zeros(both_right), np.ones(both_wrong)]).astype(int)
    return y, a, bb


def test_mcnemar_exact_for_few_disagreements():
    result = mcnemar(*paired(7, 2))
    assert (result["b"], result["c"]) == (7, 2)
    assert result["p_value"] == round(stats.binomtest(7, 9, 0.5).pvalue, 4)
    assert result["p_value"] == round(2 * (1 + 9 + 36) / 2**9, 4)  # by hand: 2 P(X <= 2), X ~ Bin(9, 1/2)


def test_mcnemar_chi_square_for_many_disagreements():
    result = mcnemar(*paired(20, 10))
    assert (result["b"], result["c"]) == (20, 10)
    assert result["p_value"] == round(stats.chi2.sf((10 - 1) ** 2 / 30, df=1), 4)
    assert result["p_value"] == round(float(special.erfc(np.sqrt(2.7 / 2))), 4)  # chi2(1) tail by hand


def test_mcnemar_switches_to_chi_square_at_25_disagreements():
    exact, chi2 = mcnemar(*paired(16, 8)), mcnemar(*paired(17, 8))  # 24 and 25 disagreements
    assert exact["p_value"] == round(stats.binomtest(16, 24, 0.5).pvalue, 4) == 0.1516  # chi-square would say 0.153
    assert chi2["p_value"] == round(stats.chi2.sf((17 - 8 - 1) ** 2 / 25, df=1), 4) == 0.1096  # exact: 0.1078


def test_mcnemar_without_disagreement_and_symmetry():
    assert mcnemar(*paired(0, 0))["p_value"] == 1.0
    y, a, b = paired(6, 1)
    assert mcnemar(y, a, b)["p_value"] == mcnemar(y, b, a)["p_value"]
    assert (mcnemar(y, b, a)["b"], mcnemar(y, b, a)["c"]) == (1, 6)


def test_shared_predictions_scores_every_run_on_the_same_images():
    """A recipe's run validated on more images than a profile's sample: both come back on the images they share,
    in one order, labels mapped to each run's class indices."""

    def fake_run(paths, labels, p_pneumonia, class_names=("NORMAL", "PNEUMONIA")):
        rows = pd.DataFrame({"path": paths, "label": labels, "split": "val", "p_NORMAL": 1 - np.array(p_pneumonia),
                             "p_PNEUMONIA": p_pneumonia})  # fmt: skip
        test_row = rows.iloc[:1].assign(split="test", path="t.png")
        return SimpleNamespace(class_names=list(class_names), predictions=lambda: pd.concat([rows, test_row]))

    runs = {"all": fake_run(["a", "b", "c", "d"], ["NORMAL", "PNEUMONIA", "NORMAL", "NORMAL"], [0.1, 0.9, 0.2, 0.8]),
            "sample": fake_run(["d", "b"], ["NORMAL", "PNEUMONIA"], [0.7, 0.6], ("PNEUMONIA", "NORMAL"))}  # fmt: skip
    shared = shared_predictions(runs, "val")
    np.testing.assert_array_equal(shared["all"][0], [1, 0])  # b (PNEUMONIA) and d (NORMAL), sorted by path
    np.testing.assert_allclose(shared["all"][1], [[0.1, 0.9], [0.2, 0.8]])
    np.testing.assert_array_equal(shared["sample"][0], [0, 1])  # the same images in this run's class order
    np.testing.assert_allclose(shared["sample"][1], [[0.6, 0.4], [0.7, 0.3]])  # columns p_PNEUMONIA, p_NORMAL
    assert shared_predictions(runs, "test")["sample"][1].shape == (1, 2)  # the split given, not validation


def test_threshold_when_no_cutoff_beats_calling_nothing_positive():
    """roc_curve's first threshold is inf (nothing positive); clipped to 1.0, saturated probabilities of exactly
    1.0 would still be called positive and score below chance."""
    y, p1 = np.array([0, 1, 0, 1]), np.array([1.0, 0.2, 1.0, 0.3], np.float32)
    probs = np.stack([1 - p1, p1], axis=1)
    threshold = choose_threshold(y, probs)
    assert threshold > 1.0 and predict_classes(probs, threshold).tolist() == [0, 0, 0, 0]
    s = scores(y, probs, threshold)
    assert s["sensitivity"] + s["specificity"] - 1 == 0  # Youden's J of the rule: 0, not -1


@pytest.mark.filterwarnings("ignore:A single label was found")  # sklearn's, on the one-class reference
def test_scores_and_intervals_on_images_of_one_class():
    """A folder of NORMAL images only: balanced accuracy over the classes present (as sklearn), and no interval
    (every resample lacks a class) instead of a crash."""
    y = np.zeros(10, int)
    probs = np.tile([[0.8, 0.2]], (10, 1))
    s = scores(y, probs, 0.5)
    assert s["balanced accuracy"] == skm.balanced_accuracy_score(y, predict_classes(probs, 0.5)) == 1.0
    assert s["macro-F1"] == skm.f1_score(y, predict_classes(probs, 0.5), average="macro") == 1.0  # was 0.5
    wrong = scores(y, np.tile([[0.2, 0.8]], (10, 1)), 0.5)  # every NORMAL called PNEUMONIA: F1 0 for both classes
    assert wrong["macro-F1"] == skm.f1_score(y, np.ones(10, int), average="macro", zero_division=0) == 0.0
    assert np.isnan(s["AUC"])
    ci = scores_with_ci(y, probs, 0.5, n_boot=50)
    assert ci["accuracy"][0] == 1.0 and np.isnan(ci["accuracy"][1:]).all() and np.isnan(ci["AUC"]).all()

"""Tests for utils.evaluation (metrics, bootstrap, thresholds, calibration, McNemar, leaderboard) and utils.plots."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from utils import evaluation as ev
from utils.runs import list_latest_runs

NAMES = ["NORMAL", "PNEUMONIA"]


def binary_probs(p1) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.column_stack([1 - p1, p1])


def noisy_binary(n: int, seed: int, signal: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, binary_probs(np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1))


def noisy_multi(n: int, seed: int, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p = rng.dirichlet(np.ones(n_classes), n)
    p[np.arange(n), y] += 0.4
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def plots():
    matplotlib.use("Agg")
    from utils import plots

    return plots


# ------------------------------------------------------------------------------------------ metrics
def test_binary_metrics_hand_worked_confusion():
    # TP=3, FN=1 (positives), TN=4, FP=2 (negatives)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    m = ev.compute_metrics(y, binary_probs(p1), NAMES)
    assert m["confusion_matrix"].tolist() == [[4, 2], [1, 3]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 4 / 6) / 2)
    f1_pos = 2 * 3 / (2 * 3 + 2 + 1)
    f1_neg = 2 * 4 / (2 * 4 + 1 + 2)
    assert m["per_class"]["PNEUMONIA"]["f1"] == pytest.approx(f1_pos)
    assert m["macro_f1"] == pytest.approx((f1_pos + f1_neg) / 2)
    assert m["per_class"]["NORMAL"]["support"] == 6
    assert m["confusion_matrix_normalized"][1].tolist() == pytest.approx([0.25, 0.75])
    assert m["brier"] == pytest.approx(np.mean((p1 - y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log(np.where(y == 1, p1, 1 - p1))))
    assert m["prediction_rule"] == "argmax" and m["threshold"] is None


def test_threshold_changes_binary_predictions():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    m = ev.compute_metrics(y, binary_probs(p1), NAMES, threshold=0.15)
    assert m["sensitivity"] == pytest.approx(1.0)  # 0.2 >= 0.15 now counts as PNEUMONIA
    assert m["specificity"] == pytest.approx(1 / 6)
    assert m["threshold"] == 0.15 and "PNEUMONIA" in m["prediction_rule"]
    assert m["roc_auc"] == ev.compute_metrics(y, binary_probs(p1), NAMES)["roc_auc"]  # threshold-free


def test_three_class_macro_f1_and_auc():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    probs = np.full((9, 3), 0.1)
    probs[np.arange(9), pred] = 0.8
    m = ev.compute_metrics(y, probs, ["NORMAL", "BACTERIA", "VIRUS"])
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/6, class 1: 2/4, class 2: 6/8
    assert m["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 6 / 8) / 3)
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert math.isnan(m["sensitivity"]) and any("two classes" in note for note in m["notes"])
    assert np.asarray(m["confusion_matrix"]).sum() == 9


@pytest.mark.parametrize("n_classes", [2, 3])
def test_auc_perfect_and_reversed_ranking(n_classes):
    y = np.repeat(np.arange(n_classes), 4)
    good = np.eye(n_classes)[y] * 0.9 + 0.1 / n_classes
    reversed_ = (1 - np.eye(n_classes)[y]) / (n_classes - 1)
    assert ev.compute_metrics(y, good)["roc_auc"] == pytest.approx(1.0)
    assert ev.compute_metrics(y, reversed_)["roc_auc"] == pytest.approx(0.0)
    assert ev.compute_metrics(y, good)["pr_auc"] == pytest.approx(1.0)


def test_absent_class_gives_nan_auc_with_note_and_valid_json():
    y = np.array([0, 0, 1, 1, 0])  # class 2 never occurs
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    m = ev.compute_metrics(y, probs, ["A", "B", "C"])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["per_class"]["C"]["roc_auc"])
    assert m["per_class"]["A"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, probs[:, 0]))
    assert any("absent" in note and "C" in note for note in m["notes"])
    text = json.dumps(ev.to_jsonable(m), allow_nan=False)
    assert json.loads(text)["roc_auc"] is None
    single = ev.compute_metrics(np.ones(4, int), binary_probs([0.2, 0.6, 0.7, 0.9]), NAMES)
    assert (
        math.isnan(single["roc_auc"]) and math.isnan(single["specificity"]) and single["sensitivity"] == 0.75
    )


def test_input_errors_are_explained():
    with pytest.raises(ValueError, match="sum to 1"):
        ev.compute_metrics([0, 1], [[0.9, 0.9], [0.1, 0.2]])
    with pytest.raises(ValueError, match="logits"):
        ev.compute_metrics([0, 1], [[2.0, -1.0], [0.1, 0.9]])
    with pytest.raises(ValueError, match="outside 0..1"):
        ev.compute_metrics([0, 2], binary_probs([0.1, 0.9]))
    with pytest.raises(ValueError, match="class names"):
        ev.compute_metrics([0, 1], binary_probs([0.1, 0.9]), ["A", "B", "C"])
    with pytest.raises(ValueError, match="integer class indices"):
        ev.compute_metrics(["NORMAL", "PNEUMONIA"], binary_probs([0.1, 0.9]))
    with pytest.raises(ValueError, match="two classes"):
        ev.predict(np.full((2, 3), 1 / 3), threshold=0.5)


# --------------------------------------------------------------------------------------- thresholds
Y_VAL = np.array([0, 0, 0, 1, 1, 1, 1])
P_VAL = np.array([0.1, 0.2, 0.55, 0.5, 0.6, 0.8, 0.9])


def test_youden_threshold_on_hand_example():
    # thresholds 0.9, 0.8, 0.6 give (sens, spec) = (.25, 1), (.5, 1), (.75, 1); 0.55 -> (.75, 2/3); 0.5 -> (1, 2/3)
    assert ev.choose_threshold(Y_VAL, P_VAL) == pytest.approx(0.6)
    assert ev.choose_threshold(Y_VAL, binary_probs(P_VAL), method="youden") == pytest.approx(0.6)
    table = ev.threshold_table(Y_VAL, P_VAL)
    assert len(table) == len(P_VAL) and np.isfinite(table["threshold"]).all()
    assert table.loc[table["youden_j"].idxmax(), "sensitivity"] == pytest.approx(0.75)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95])
def test_sensitivity_threshold_reaches_target(target):
    t = ev.choose_threshold(Y_VAL, P_VAL, method="sensitivity", target_sensitivity=target)
    m = ev.compute_metrics(Y_VAL, binary_probs(P_VAL), NAMES, threshold=t)
    assert m["sensitivity"] >= target
    higher = P_VAL[np.greater(P_VAL, t)]
    if len(higher):  # the next higher threshold misses the target: t is the most specific choice
        assert ev.compute_metrics(Y_VAL, binary_probs(P_VAL), threshold=higher.min())["sensitivity"] < target
    assert ev.choose_threshold(Y_VAL, P_VAL, "sensitivity", 0.95) == pytest.approx(0.5)


def test_threshold_errors():
    with pytest.raises(ValueError, match="single class"):
        ev.choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="Unknown method"):
        ev.choose_threshold(Y_VAL, P_VAL, method="f1")
    with pytest.raises(ValueError, match="two classes"):
        ev.threshold_table([0, 1, 2], np.full((3, 3), 1 / 3))


# -------------------------------------------------------------------------------------- calibration
def test_ece_hand_example():
    # confidence (correct?): bin [0.9,1): .95 (yes), .92 (no); bin [0.6,0.7): .65, .62 (yes); bin [0.5,0.6): .55 (no)
    conf = np.array([0.95, 0.92, 0.65, 0.62, 0.55])
    y = np.array([1, 0, 1, 1, 0])
    expected = 2 / 5 * abs(0.5 - 0.935) + 2 / 5 * abs(1 - 0.635) + 1 / 5 * abs(0 - 0.55)
    assert expected == pytest.approx(0.43)
    assert ev.expected_calibration_error(y, binary_probs(conf)) == pytest.approx(expected)
    assert ev.compute_metrics(y, binary_probs(conf))["ece"] == pytest.approx(expected)
    assert ev.expected_calibration_error([0, 1, 2], np.eye(3)) == pytest.approx(0.0)


def test_reliability_curve_binary_and_multiclass():
    y, probs = noisy_binary(300, seed=1)
    curve = ev.reliability_curve(y, probs, n_bins=5)
    assert curve.attrs["kind"] == "positive" and curve["count"].sum() == 300
    assert list(curve.columns) == ["predicted", "observed", "count"]
    assert ((curve["predicted"] >= 0) & (curve["predicted"] <= 1)).all()
    first = probs[:, 1] < 0.2
    assert curve["observed"].iloc[0] == pytest.approx(y[first].mean())
    y3, p3 = noisy_multi(200, seed=2)
    curve3 = ev.reliability_curve(y3, p3, n_bins=10)
    assert curve3.attrs["kind"] == "top_label" and curve3["predicted"].min() >= 1 / 3 - 1e-9


# ------------------------------------------------------------------------------------------ mcnemar
def test_mcnemar_exact_for_few_discordant_pairs():
    y = np.zeros(20, int)
    a = np.zeros(20, int)
    b = np.zeros(20, int)
    b[:1] = 1  # b=1: A right, B wrong
    a[1:7] = 1  # c=6: A wrong, B right
    res = ev.mcnemar(y, a, b)
    assert (res["b"], res["c"], res["method"]) == (1, 6, "exact binomial")
    assert res["p_value"] == pytest.approx(2 * (1 + 7) / 2**7)  # 2 * P(X <= 1 | n=7, 1/2) = 0.125
    assert ev.mcnemar(y, y, y)["p_value"] == 1.0


def test_mcnemar_chi_square_matches_hand_formula():
    y = np.zeros(100, int)
    a = np.zeros(100, int)
    b = np.zeros(100, int)
    b[:30] = 1  # b=30
    a[30:42] = 1  # c=12
    res = ev.mcnemar(y, a, b)
    statistic = (abs(30 - 12) - 1) ** 2 / 42
    assert res["statistic"] == pytest.approx(statistic)
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(statistic / 2)))  # chi2(1) survival function
    assert res["method"].startswith("chi-square")
    with pytest.raises(ValueError, match="same length"):
        ev.mcnemar(y, a, b[:5])


# ---------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_point_and_is_deterministic():
    y, probs = noisy_binary(300, seed=3)
    point, low, high = ev.bootstrap_ci(y, probs, "auc", n_boot=300, seed=7)
    assert point == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    assert low < point < high
    assert ev.bootstrap_ci(y, probs, "auc", n_boot=300, seed=7) == (point, low, high)
    assert ev.bootstrap_ci(y, probs, "auc", n_boot=300, seed=8) != (point, low, high)


def test_bootstrap_narrows_with_more_images():
    y, probs = noisy_binary(100, seed=4)
    _, low_small, high_small = ev.bootstrap_ci(y, probs, "accuracy", n_boot=400)
    _, low_big, high_big = ev.bootstrap_ci(np.tile(y, 10), np.tile(probs, (10, 1)), "accuracy", n_boot=400)
    assert high_big - low_big < 0.6 * (high_small - low_small)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fast_bootstrap_matches_sklearn_on_every_resample(n_classes):
    y, probs = noisy_binary(80, seed=5) if n_classes == 2 else noisy_multi(80, seed=5)
    labels = list(range(n_classes))
    reference = {
        "accuracy": lambda t, p: skm.accuracy_score(t, p.argmax(1)),
        "balanced_accuracy": lambda t, p: skm.balanced_accuracy_score(t, p.argmax(1)),
        "macro_f1": lambda t, p: skm.f1_score(
            t, p.argmax(1), labels=labels, average="macro", zero_division=0
        ),
        "roc_auc": (lambda t, p: skm.roc_auc_score(t, p[:, 1]))
        if n_classes == 2
        else (lambda t, p: skm.roc_auc_score(t, p, multi_class="ovr", labels=labels)),
    }
    if n_classes == 2:
        reference["sensitivity"] = lambda t, p: skm.recall_score(t, p.argmax(1), pos_label=1)
        reference["specificity"] = lambda t, p: skm.recall_score(t, p.argmax(1), pos_label=0)
    fast = ev.bootstrap_metrics(y, probs, list(reference), n_boot=40, seed=11)
    m = ev.compute_metrics(y, probs)
    for name, fn in reference.items():
        assert fast[name]["point"] == pytest.approx(m[name])
        assert fast[name]["point"] == pytest.approx(fn(y, probs))
        slow = ev.bootstrap_ci(y, probs, fn, n_boot=40, seed=11)
        assert (fast[name]["low"], fast[name]["high"]) == pytest.approx(slow[1:]), name


def test_bootstrap_skips_single_class_resamples_and_uses_threshold():
    y = np.array([1] + [0] * 19)
    probs = binary_probs(np.linspace(0.05, 0.6, 20)[::-1])
    res = ev.bootstrap_metrics(y, probs, ["auc", "sensitivity"], n_boot=300, seed=0)
    assert 0 < res["roc_auc"]["n_valid"] < 300  # about (19/20)^20 = 36% of resamples have no positive
    assert np.isfinite([res["roc_auc"]["low"], res["roc_auc"]["high"]]).all()
    strat = ev.bootstrap_metrics(y, probs, ["auc"], n_boot=50, stratify=True)
    assert strat["roc_auc"]["n_valid"] == 50
    high_t = ev.bootstrap_metrics(y, probs, ["sensitivity"], threshold=0.99, n_boot=20)
    assert high_t["sensitivity"]["point"] == 0.0
    with pytest.raises(ValueError, match="Unknown metric"):
        ev.bootstrap_ci(y, probs, "kappa")
    with pytest.raises(ValueError, match="two classes"):
        ev.bootstrap_metrics([0, 1, 2], np.eye(3), ["sensitivity"])


# ------------------------------------------------------------------------------------- leaderboard
def write_run(root, model, run, y_names, p1, splits, config_extra=None):
    run_dir = root / "runs" / "pneumonia" / model / run
    run_dir.mkdir(parents=True)
    config = {
        "dataset": "pneumonia",
        "class_names": NAMES,
        "image_size": 64,
        "weights_used": "none",
        "params": 1234,
        "train_time_s": 12.5,
        "wall_time_s": 30.0,  # the whole run: not what the leaderboard calls training time
        **(config_extra or {}),
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    df = pd.DataFrame(
        {
            "path": [f"/x/{i}.jpg" for i in range(len(y_names))],
            "split": splits,
            "label": y_names,
            "p_NORMAL": 1 - np.asarray(p1),
            "p_PNEUMONIA": p1,
        }
    )
    df.to_csv(run_dir / "predictions.csv", index=False)
    (run_dir.parent / "LATEST").write_text(run)
    return run_dir


def test_leaderboard_on_two_fake_runs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    names = np.array(NAMES)[y]
    splits = ["val"] * 40 + ["test"] * 80
    good = np.clip(0.5 * y + 0.5 * rng.random(120), 0, 1)
    weak = np.clip(0.15 * y + 0.85 * rng.random(120), 0, 1)
    run_good = write_run(
        tmp_path, "efficientnet", "20250101-120000", names, good, splits, {"inference_images_per_s": 250.0}
    )
    run_weak = write_run(tmp_path, "mobilenet", "20250101-130000", names, weak, splits)

    board = ev.leaderboard([run_weak, run_good], n_boot=200)
    assert list(board["model"]) == ["efficientnet", "mobilenet"]  # sorted by AUC
    assert board["auc"].is_monotonic_decreasing
    row = board.iloc[0]
    test = np.array(splits) == "test"
    assert row["auc"] == pytest.approx(skm.roc_auc_score(y[test], good[test]))
    assert row["auc_low"] <= row["auc"] <= row["auc_high"]
    assert row["threshold"] == pytest.approx(ev.choose_threshold(y[:40], good[:40]))
    assert row["n"] == 80 and row["params"] == 1234 and row["train_time_s"] == 12.5
    assert row["inference_images_per_s"] == 250.0 and math.isnan(board.iloc[1]["inference_images_per_s"])
    for column in [
        "accuracy",
        "macro_f1",
        "sensitivity",
        "specificity",
        "f1_NORMAL",
        "f1_PNEUMONIA",
        "weights_used",
        "image_size",
        "sensitivity_low",
        "specificity_high",
        "run_dir",
    ]:
        assert column in board.columns

    via_latest = ev.leaderboard([run_good.parent], n_boot=50)  # a model folder resolves through LATEST
    assert via_latest.loc[0, "run"] == "20250101-120000"
    assert sorted(p.name for p in list_latest_runs(tmp_path, "pneumonia")) == [
        run_good.name,
        run_weak.name,
    ]


def test_evaluate_predictions_threshold_sources(tmp_path):
    y = np.array([0, 1, 0, 1, 0, 1, 1, 0])
    p1 = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.35, 0.8, 0.1])
    run = write_run(tmp_path, "m", "r1", np.array(NAMES)[y], p1, ["val"] * 4 + ["test"] * 4)
    df = ev.read_predictions(run)
    res = ev.evaluate_predictions(df, NAMES)
    assert res["split"] == "test" and res["threshold_source"] == "val (youden)"
    assert res["threshold"] == pytest.approx(ev.choose_threshold(y[:4], p1[:4]))
    argmax = ev.evaluate_predictions(df, None, threshold_from=None)
    assert argmax["threshold"] is None and argmax["class_names"] == NAMES and argmax["n"] == 4
    no_val = ev.evaluate_predictions(df[df["split"] == "test"], NAMES)
    assert no_val["threshold"] is None and "argmax predictions used" in no_val["notes"][0]
    with pytest.raises(ValueError, match="not among the classes"):
        ev.evaluate_predictions(df.assign(label="COVID"), NAMES)
    with pytest.raises(ValueError, match="No 'train' rows"):
        ev.evaluate_predictions(df, NAMES, split="train")
    with pytest.raises(FileNotFoundError, match="predictions.csv"):
        ev.read_predictions(tmp_path)
    with pytest.raises(ValueError, match="No run folders"):
        ev.leaderboard([])


# -------------------------------------------------------------------------------------------- plots
def test_roc_and_pr_plots(plots):
    curves = {"a": noisy_binary(100, 1), "b": noisy_binary(100, 2, signal=0.1)}
    fig = plots.plot_roc_curves(curves, NAMES)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3  # two models + chance
    assert "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert len(plots.plot_pr_curves(curves, NAMES).axes[0].lines) == 3
    multi = plots.plot_roc_curves({"one": noisy_multi(90, 3)}, ["A", "B", "C"])
    assert len(multi.axes[0].lines) == 3 + 1 + 1  # per class, micro-average, chance
    two_multi = plots.plot_pr_curves({"x": noisy_multi(90, 3), "y": noisy_multi(90, 4)})
    assert len(two_multi.axes[0].lines) == 2 + 1


def test_confusion_bars_reliability_threshold_plots(plots):
    cms = {
        name: ev.compute_metrics(*noisy_binary(50, s))["confusion_matrix"] for s, name in enumerate("abcd")
    }
    fig = plots.plot_confusion_matrices(cms, NAMES)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a"
    assert len(fig.axes[0].texts) == 4 and "(" in fig.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="expected 3 classes"):
        plots.plot_confusion_matrices({"a": np.eye(2)}, ["A", "B", "C"])

    board = pd.DataFrame({"model": ["m1", "m2"], "f1_NORMAL": [0.8, 0.6], "f1_PNEUMONIA": [0.9, 0.7]})
    bars = plots.plot_per_class_bars(board)
    assert len(bars.axes) == 1 and len(bars.axes[0].containers) == 2
    heights = sorted(round(p.get_height(), 3) for p in bars.axes[0].patches if p.get_height() > 0)
    assert heights == [0.6, 0.7, 0.8, 0.9]

    rel = plots.plot_reliability({"a": noisy_binary(200, 1), "b": noisy_binary(200, 2)})
    assert len(rel.axes[0].lines) == 3 and "ECE" in rel.axes[0].get_legend().get_texts()[0].get_text()

    trade = plots.plot_threshold_tradeoff(Y_VAL, P_VAL, chosen=0.6)
    assert len(trade.axes[0].lines) == 3
    assert len(plots.plot_threshold_tradeoff(Y_VAL, P_VAL).axes[0].lines) == 2


def test_plot_history_with_phases_and_missing_columns(plots):
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2, 0, 1],
            "phase": ["head"] * 3 + ["finetune"] * 2,
            "loss": [0.9, 0.7, 0.6, 0.5, 0.4],
            "val_loss": [0.8, 0.7, 0.65, 0.6, 0.55],
            "auc": [0.6, 0.7, 0.75, 0.8, 0.85],  # no val_auc, no accuracy columns
        }
    )
    fig = plots.plot_history(history)
    assert len(fig.axes) == 2
    loss_ax, auc_ax = fig.axes
    assert len(loss_ax.lines) == 3 and len(auc_ax.lines) == 2  # train, val, boundary / train, boundary
    boundary = loss_ax.lines[-1].get_xdata()[0]
    assert boundary == pytest.approx(3.5)  # epochs restart per phase -> running index 1..5
    assert list(loss_ax.lines[0].get_xdata()) == [1, 2, 3, 4, 5]
    continuous = plots.plot_history(history.assign(epoch=range(5)).drop(columns=["phase"]))
    assert len(continuous.axes[0].lines) == 2
    with pytest.raises(ValueError, match="none of the columns"):
        plots.plot_history(pd.DataFrame({"epoch": [0], "lr": [0.1]}))

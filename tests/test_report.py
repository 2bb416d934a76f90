"""Model comparison from saved run folders (notebook 09): no training, run folders written by the tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils.plots import plot_per_class_bars
from utils.report import compare_runs, find_runs, threshold_report

CLASSES = ["NORMAL", "PNEUMONIA"]


def write_run(
    output: Path,
    model: str,
    val: tuple,
    test: tuple,
    classes=CLASSES,
    dataset="toy",
    reverse: bool = False,
    test_prefix: str = "test",
) -> Path:
    """A complete run folder: config.json, predictions.csv (val + test rows) and the LATEST pointer."""
    run_dir = output / "runs" / dataset / model / "20260101-000000"
    run_dir.mkdir(parents=True)
    rows = []
    for split, (labels, p1) in (("val", val), ("test", test)):
        for i, (label, p) in enumerate(zip(labels, p1, strict=True)):
            name = test_prefix if split == "test" else split
            row = {"path": f"/data/{name}/{i}.png", "split": split, "label": classes[label]}
            rows.append(row | {f"p_{classes[0]}": 1 - p, f"p_{classes[1]}": p})
    table = pd.DataFrame(rows)
    (table.iloc[::-1] if reverse else table).to_csv(run_dir / "predictions.csv", index=False)
    config = {
        "model": model,
        "dataset": dataset,
        "class_names": classes,
        "image_size": 64,
        "params": 1_234_567,
        "weights_used": "none",
        "train_time_s": 12.34,
        "wall_time_s": 99.0,  # the whole run, not the training time
        "inference_images_per_s": 250.0,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir.parent / "LATEST").write_text(run_dir.name)
    return run_dir


# Validation: Youden's J picks 0.7 (sensitivity 4/5, specificity 1); sensitivity >= 0.95 needs 0.3 (the low
# positive), where specificity drops to 2/4. On TEST alone both rules would pick 0.68 (a perfect cut).
VAL = ([0, 0, 0, 0, 1, 1, 1, 1, 1], [0.1, 0.6, 0.6, 0.2, 0.8, 0.9, 0.7, 0.75, 0.3])
TEST = ([0, 0, 0, 1, 1, 1], [0.2, 0.65, 0.3, 0.8, 0.9, 0.68])
WORSE_TEST = ([0, 0, 0, 1, 1, 1], [0.8, 0.65, 0.3, 0.2, 0.9, 0.68])


@pytest.fixture
def two_runs(tmp_path) -> Path:
    write_run(tmp_path, "worse", VAL, WORSE_TEST, reverse=True)  # rows in another order: matched by path
    write_run(tmp_path, "good", VAL, TEST)
    return tmp_path


def test_leaderboard_orders_by_auc_with_ci_strings(two_runs):
    comparison = compare_runs(two_runs, "toy", n_boot=200)
    assert comparison.best_model == "good"
    assert list(comparison.runs) == list(comparison.curves) == list(comparison.results) == ["good", "worse"]
    assert comparison.runs["good"].parent.name == "good"
    table = comparison.leaderboard_table()
    assert list(table.index) == ["good", "worse"]
    assert table.loc["good", "AUC"] == "1.00 [1.00, 1.00]"  # TEST is perfectly ranked
    row = comparison.board.set_index("model").loc["worse"]
    expected = f"{row['auc']:.2f} [{row['auc_low']:.2f}, {row['auc_high']:.2f}]"
    assert table.loc["worse", "AUC"] == expected
    for column in ("accuracy", "macro-F1", "sensitivity", "specificity"):
        assert re.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", table.loc["worse", column]), column
    assert table.loc["good", "parameters"] == "1.2 M" and table.loc["good", "weights used"] == "none"
    assert table.loc["good", "training time (s)"] == 12.3  # train_time_s, not the run's wall time
    assert table.loc["good", "inference images/s"] == 250.0 and table.loc["good", "image size"] == 64
    assert comparison.leaderboard_table(digits=3).loc["good", "AUC"] == "1.000 [1.000, 1.000]"


def test_threshold_is_chosen_on_val_and_confusion_counts_match_hand_count(two_runs):
    comparison = compare_runs(two_runs, "toy", n_boot=50)
    assert comparison.results["good"]["threshold"] == pytest.approx(0.7)  # on TEST alone: 0.68
    # TEST at t=0.7: negatives 0.2, 0.65, 0.3 -> all NORMAL; positives 0.8, 0.9 -> PNEUMONIA, 0.68 -> missed
    matrices = comparison.confusion_matrices()
    np.testing.assert_array_equal(matrices["good"], [[3, 0], [1, 2]])
    # worse at 0.7: 0.8 -> false positive; 0.2 and 0.68 -> missed
    np.testing.assert_array_equal(matrices["worse"], [[2, 1], [2, 1]])

    recall = comparison.per_class("recall")
    assert list(recall.index) == ["good", "worse"] and list(recall.columns) == CLASSES
    assert recall.loc["good"].tolist() == pytest.approx([1.0, 2 / 3])
    bars = plot_per_class_bars(comparison.per_class("f1"), metric="F1")
    assert len(bars.axes[0].containers) == 2  # one bar group per model
    with pytest.raises(ValueError, match="Unknown per-class metric"):
        comparison.per_class("auc")

    y_val, p_val = comparison.val_curve("good")
    assert len(y_val) == len(VAL[0]) and p_val.shape == (len(VAL[0]), 2)
    with pytest.raises(KeyError, match="models are"):
        comparison.val_curve("resnet")


def test_threshold_report_applies_val_thresholds_to_test(two_runs):
    report = threshold_report(compare_runs(two_runs, "toy", n_boot=50), "good")
    assert list(report.index) == ["0.5 (argmax)", "Youden's J on val", "sensitivity >= 0.95 on val"]
    assert report["threshold"].tolist() == pytest.approx([0.5, 0.7, 0.3])
    argmax, youden, sensitive = (report.iloc[i] for i in range(3))
    assert (argmax["sensitivity"], argmax["specificity"]) == pytest.approx((1.0, 2 / 3), abs=1e-3)
    # chosen on TEST, both rules would have given sensitivity = specificity = 1
    assert (youden["sensitivity"], youden["specificity"]) == pytest.approx((2 / 3, 1.0), abs=1e-3)
    assert (sensitive["sensitivity"], sensitive["specificity"]) == pytest.approx((1.0, 1 / 3), abs=1e-3)


def test_mcnemar_between_the_top_two_and_none_with_one_model(two_runs, tmp_path_factory, capsys):
    result = compare_runs(two_runs, "toy", n_boot=50).mcnemar_top_two()
    # at t=0.7, right/wrong per test image: good T T T T T F, worse F T T F T F
    assert result["models"] == ("good", "worse") and (result["b"], result["c"]) == (2, 0)
    assert (
        result["n"] == 6 and result["method"] == "exact binomial" and result["p_value"] == pytest.approx(0.5)
    )

    single = tmp_path_factory.mktemp("single")
    write_run(single, "only", VAL, TEST)
    assert compare_runs(single, "toy", n_boot=50).mcnemar_top_two() is None
    assert "needs two trained models" in capsys.readouterr().out


def test_mcnemar_refuses_runs_tested_on_other_images(tmp_path):
    write_run(tmp_path, "good", VAL, TEST)
    write_run(tmp_path, "worse", VAL, WORSE_TEST, test_prefix="elsewhere")
    with pytest.raises(ValueError, match="not tested on the same test images"):
        compare_runs(tmp_path, "toy", n_boot=50).mcnemar_top_two()


def test_no_runs_names_the_training_notebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"04_custom_cnn\.ipynb.*python -m utils train --dataset toy"):
        compare_runs(tmp_path, "toy")
    run_dir = write_run(tmp_path, "cnn", VAL, TEST)
    (run_dir / "predictions.csv").unlink()  # an unfinished run does not count
    with pytest.raises(FileNotFoundError, match="08_densenet121"):
        find_runs(tmp_path, "toy")


def test_runs_with_different_classes_are_refused(tmp_path):
    write_run(tmp_path, "a", VAL, TEST)
    write_run(tmp_path, "b", VAL, TEST, classes=["NORMAL", "VIRUS"])
    with pytest.raises(ValueError, match="different classes"):
        compare_runs(tmp_path, "toy", n_boot=50)


def test_threshold_report_refuses_more_than_two_classes(tmp_path):
    classes = ["A", "B", "C"]
    run_dir = write_run(tmp_path, "m", VAL, TEST)
    df = pd.read_csv(run_dir / "predictions.csv")
    df["label"] = df["label"].map({"NORMAL": "A", "PNEUMONIA": "B"})
    df = df.rename(columns={"p_NORMAL": "p_A", "p_PNEUMONIA": "p_B"}).assign(p_C=0.0)
    df.to_csv(run_dir / "predictions.csv", index=False)
    config = json.loads((run_dir / "config.json").read_text()) | {"class_names": classes}
    (run_dir / "config.json").write_text(json.dumps(config))
    comparison = compare_runs(tmp_path, "toy", n_boot=50)
    assert comparison.results["m"]["threshold"] is None  # argmax for three classes
    table = comparison.leaderboard_table()
    assert "sensitivity" not in table.columns and table.loc["m", "AUC"] == "n/a"  # class C never occurs
    with pytest.raises(ValueError, match="two classes"):
        threshold_report(comparison, "m")

"""Model comparison from saved run folders (notebook 09): no training, run folders written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils.report import compare_runs, find_runs, threshold_report

CLASSES = ["NORMAL", "PNEUMONIA"]


def write_run(output: Path, model: str, val: tuple, test: tuple, classes=CLASSES, dataset="toy") -> Path:
    """A complete run folder: config.json, predictions.csv (val + test rows) and the LATEST pointer."""
    run_dir = output / "runs" / dataset / model / "20260101-000000"
    run_dir.mkdir(parents=True)
    rows = []
    for split, (labels, p1) in (("val", val), ("test", test)):
        for i, (label, p) in enumerate(zip(labels, p1, strict=True)):
            row = {"path": f"{split}/{i}.png", "split": split, "label": classes[label]}
            rows.append(row | {f"p_{classes[0]}": 1 - p, f"p_{classes[1]}": p})
    pd.DataFrame(rows).to_csv(run_dir / "predictions.csv", index=False)
    config = {"model": model, "dataset": dataset, "class_names": classes, "image_size": 64, "params": 1e6}
    (run_dir / "config.json").write_text(json.dumps(config | {"weights_used": "none", "wall_time_s": 1.0}))
    (run_dir.parent / "LATEST").write_text(run_dir.name)
    return run_dir


# validation: Youden's J picks 0.7 (between the two groups); 0.5 would call the 0.6s positive
VAL = ([0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.6, 0.6, 0.2, 0.8, 0.9, 0.7, 0.75])
TEST = ([0, 0, 0, 1, 1, 1], [0.2, 0.65, 0.3, 0.8, 0.9, 0.68])
WORSE_TEST = ([0, 0, 0, 1, 1, 1], [0.8, 0.65, 0.3, 0.2, 0.9, 0.68])


@pytest.fixture
def two_runs(tmp_path) -> Path:
    write_run(tmp_path, "good", VAL, TEST)
    write_run(tmp_path, "worse", VAL, WORSE_TEST)
    return tmp_path


def test_leaderboard_orders_by_auc_with_ci_strings(two_runs):
    comparison = compare_runs(two_runs, "toy", n_boot=200)
    assert list(comparison.runs) == ["good", "worse"] and comparison.best_model == "good"
    table = comparison.leaderboard_table()
    assert list(table.index) == ["good", "worse"]
    auc = table.loc["good", "AUC"]
    assert auc.startswith("1.000 [") and auc.endswith("]")  # TEST is perfectly ranked
    assert {"sensitivity", "specificity", "weights used", "parameters"} <= set(table.columns)


def test_threshold_is_chosen_on_val_and_confusion_counts_match_hand_count(two_runs):
    comparison = compare_runs(two_runs, "toy", n_boot=50)
    threshold = comparison.results["good"]["threshold"]
    assert 0.6 < threshold <= 0.7  # chosen on VAL; on TEST alone any cut in (0.65, 0.68] would be perfect
    # TEST at t=0.7: negatives 0.2, 0.65, 0.3 -> all NORMAL; positives 0.8, 0.9 -> PNEUMONIA, 0.68 -> missed
    np.testing.assert_array_equal(comparison.confusion_matrices()["good"], [[3, 0], [1, 2]])
    assert comparison.per_class("recall")["good"] == {"NORMAL": 1.0, "PNEUMONIA": pytest.approx(2 / 3)}


def test_threshold_report_applies_val_thresholds_to_test(two_runs):
    report = threshold_report(compare_runs(two_runs, "toy", n_boot=50), "good")
    assert list(report.index) == ["0.5 (argmax)", "Youden's J on val", "sensitivity >= 0.95 on val"]
    assert report.loc["0.5 (argmax)", "specificity"] == pytest.approx(2 / 3, abs=1e-3)  # 0.65 crosses 0.5
    assert report.loc["Youden's J on val", "specificity"] == 1.0
    assert report.loc["Youden's J on val", "sensitivity"] == pytest.approx(2 / 3, abs=1e-3)


def test_mcnemar_between_the_top_two_and_none_with_one_model(two_runs, tmp_path_factory, capsys):
    result = compare_runs(two_runs, "toy", n_boot=50).mcnemar_top_two()
    assert result["models"] == ("good", "worse") and 0 <= result["p_value"] <= 1
    single = tmp_path_factory.mktemp("single")
    write_run(single, "only", VAL, TEST)
    assert compare_runs(single, "toy", n_boot=50).mcnemar_top_two() is None
    assert "needs two trained models" in capsys.readouterr().out


def test_no_runs_names_the_training_notebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"04_custom_cnn\.ipynb.*python -m utils train --dataset toy"):
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
    with pytest.raises(ValueError, match="two classes"):
        threshold_report(comparison, "m")

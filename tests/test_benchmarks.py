"""The benchmarks' ``--quick`` paths on the synthetic set: real measurements, checked against what they claim."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_image
from sklearn.metrics import roc_auc_score

from utils.course.config import PROJECT_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown table(s) in ``text``, as lists of cells."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    return [r for r in rows if not set(r[0]) <= {"-"} and r[0] not in ("loader", "model")]


@pytest.mark.parametrize("name", ["pipeline", "real_data"])
def test_benchmark_skips_with_a_message_when_the_images_are_absent(name, tmp_path, capsys):
    assert load_script(name).main(["--source", str(tmp_path / "missing")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Skipped: ") and str(tmp_path / "missing") in out


def test_real_data_needs_the_weights_file_for_mobilenet(tmp_path, capsys):
    real_data = load_script("real_data")
    args = ["--quick", "--output", str(tmp_path), "--weights", str(tmp_path / "absent.h5")]
    assert real_data.main([*args, "--models", "mobilenet_025"]) == 2
    assert "absent.h5 is missing" in capsys.readouterr().err


def test_seeds_loader_yields_every_image_once_in_unit_range(tmp_path):
    from benchmarks.seeds_loader import inverse_matrix, seeds_loader, timed_epoch

    np.testing.assert_allclose(inverse_matrix(0.0, 1.0, 0.0, 0.0, size=10), np.eye(3), atol=1e-12)
    centre = np.array([4.5, 4.5, 1.0])  # a rotation about the centre keeps the centre fixed
    np.testing.assert_allclose(inverse_matrix(90.0, 1.0, 0.0, 0.0, size=10) @ centre, centre, atol=1e-12)
    paths = [str(write_image(tmp_path / f"{i}.png", size=(16, 16), seed=i)) for i in range(5)]
    for pil_affine in (False, True):
        batches = [x for x, _ in seeds_loader(paths, 16, batch=2, pil_affine=pil_affine)]
        assert [len(b) for b in batches] == [2, 2, 1]
        images = np.concatenate(batches)
        assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1
    with pytest.raises(RuntimeError, match="gave 5 images, expected 6"):
        timed_epoch(seeds_loader(paths, 16, batch=2), 6)


def test_pipeline_quick_measures_every_loader_on_the_synthetic_set(capsys):
    pipeline = load_script("pipeline")
    assert pipeline.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("32 training images of the course's synthetic set, 224 px")
    rows = {r[0]: [float(c) for c in r[1:]] for r in table_rows(out)}
    assert list(rows) == list(pipeline.LOADERS.values())
    for label, (best, median, cpu_ms) in rows.items():
        assert math.isfinite(best) and best > 0 and best >= median > 0 and cpu_ms > 0, label
    cpu = dict(zip(pipeline.LOADERS, (r[2] for r in rows.values()), strict=True))
    assert cpu["first"] > cpu["cached"]  # the first epoch also decodes (and traces); the cache skips both
    assert len({r[0] for r in rows.values()}) > 3  # different pipelines, different rates
    assert out.count("speed-up") == 2


@pytest.fixture(scope="module")
def quick_real_data(tmp_path_factory):
    """One ``real_data.py --quick`` run of both default models: its output folder and printed text."""
    output = tmp_path_factory.mktemp("benchmarks")
    capture = output / "stdout.txt"
    with open(capture, "w") as handle, contextlib.redirect_stdout(handle):
        status = load_script("real_data").main(["--quick", "--output", str(output)])
    assert status == 0
    return output, capture.read_text()


def test_real_data_quick_trains_each_model_into_its_own_folders(quick_real_data):
    output, out = quick_real_data
    summary = json.loads((output / "real_data.json").read_text())
    assert [row["model"] for row in summary] == ["cnn", "mobilenet_025"]
    weights = {row["model"]: row["weights_used"] for row in summary}
    assert weights == {"cnn": "none (trained from scratch)", "mobilenet_025": "file mobilenet_2_5_224_tf_no_top.h5"}
    for row in summary:
        assert Path(row["run_dir"]).parent.parent == output / "runs" / "synthetic"
        assert row["profile"] == "smoke" and row["image_size"] == 64 and row["epochs_run"] == 2
        assert 0 < row["train_minutes"] < 5 and 0 < row["threshold"] <= 1
        assert json.loads((Path(row["run_dir"]) / "config.json").read_text())["threshold"] == row["threshold"]


def test_real_data_scores_match_the_runs_saved_predictions(quick_real_data):
    output, out = quick_real_data
    printed = {(r[0], r[2]): r for r in table_rows(out)}
    for row in json.loads((output / "real_data.json").read_text()):
        predictions = pd.read_csv(Path(row["run_dir"]) / "predictions.csv")
        for split in ("val", "test"):
            rows = predictions[predictions["split"] == split]
            y, p = (rows["label"] == "PNEUMONIA").to_numpy(int), rows["p_PNEUMONIA"].to_numpy()
            pred = (p >= row["threshold"]).astype(int)
            scores = row[split]
            assert sum(row["images"][split].values()) == len(rows) > 0
            for name, expected in [("AUC", roc_auc_score(y, p)), ("accuracy", (pred == y).mean()),
                                   ("sensitivity", pred[y == 1].mean()), ("specificity", 1 - pred[y == 0].mean())]:  # fmt: skip
                value, low, high = scores[name]
                assert value == pytest.approx(expected, abs=1e-4), (row["model"], split, name)
                assert 0 <= low <= value <= high <= 1, (row["model"], split, name)
            cells = printed[(row["model"], split)]
            auc = scores["AUC"]
            assert cells[1] == str(row["seed"]) == "42" and cells[3] == str(len(rows))
            assert cells[4] == f"{scores['accuracy'][0]:.3f}" and cells[5] == f"{auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}]"
            assert cells[6] == f"{scores['macro-F1'][0]:.3f}"
            assert cells[9] == f"{row['threshold']:.3f}" and cells[12] == row["weights_used"]


def test_real_data_seeds_train_one_run_each_on_one_split_and_score_their_ensemble(tmp_path, capsys):
    """``--seeds 1 2``: two runs of the CNN with those training seeds on the same patient split, then a row for
    their mean probability, its threshold chosen on validation, scored like any run."""
    from utils.metrics import choose_threshold, scores

    output = tmp_path / "bench"
    assert load_script("real_data").main(["--quick", "--output", str(output), "--models", "cnn", "--seeds", "1", "2"]) == 0
    rows = json.loads((output / "real_data.json").read_text())
    assert [(r["model"], r["seed"]) for r in rows] == [("cnn", 1), ("cnn", 2), ("cnn ensemble", "1+2")]
    single, ensemble = rows[:2], rows[2]
    assert ensemble["run_dir"] == [r["run_dir"] for r in single] and len(set(ensemble["run_dir"])) == 2
    frames = [pd.read_csv(Path(r["run_dir"]) / "predictions.csv") for r in single]
    assert frames[0]["path"].tolist() == frames[1]["path"].tolist()  # one split for both seeds
    assert not np.allclose(frames[0]["p_PNEUMONIA"], frames[1]["p_PNEUMONIA"])  # two different models
    mean = (frames[0]["p_PNEUMONIA"] + frames[1]["p_PNEUMONIA"]).to_numpy() / 2
    y = (frames[0]["label"] == "PNEUMONIA").to_numpy(int)
    probs = np.c_[1 - mean, mean]
    is_val = (frames[0]["split"] == "val").to_numpy()
    threshold = choose_threshold(y[is_val], probs[is_val])
    assert ensemble["threshold"] == pytest.approx(threshold, abs=1e-6)
    test = (frames[0]["split"] == "test").to_numpy()
    expected = scores(y[test], probs[test], threshold)
    for name in ("accuracy", "AUC", "sensitivity", "specificity", "macro-F1"):
        assert ensemble["test"][name][0] == pytest.approx(expected[name], abs=2e-4), name
    assert sum(ensemble["images"]["test"].values()) == int(test.sum())
    assert ensemble["train_minutes"] == pytest.approx(sum(r["train_minutes"] for r in single), abs=0.02)
    assert "| cnn ensemble | 1+2 | test |" in capsys.readouterr().out


def test_real_data_json_keeps_other_models_rows(tmp_path):
    save = load_script("real_data").save
    path = tmp_path / "real_data.json"
    row = {"model": "cnn", "dataset": "pneumonia", "profile": "laptop", "image_size": 128, "auc": 0.5}
    save(path, [row, row | {"model": "mobilenet_025", "profile": "full", "image_size": 224}])
    save(path, [row | {"auc": 0.9}])
    assert [(r["model"], r["auc"]) for r in json.loads(path.read_text())] == [("mobilenet_025", 0.5), ("cnn", 0.9)]


def test_calibration_skips_when_nothing_was_trained(tmp_path, capsys):
    """`make benchmarks` without ../shared: real_data.py skips, so the run folders calibration.py is given are not
    there; it says so and exits 0, as levers.py does."""
    calibration = load_script("calibration")
    assert calibration.main([str(tmp_path / "runs" / "pneumonia" / "cnn")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Skipped: ") and "is not a run folder" in out and "|" not in out


def test_calibration_prints_each_runs_corrections_as_measured_here(quick_real_data, capsys):
    """benchmarks/calibration.py's table against the ECE and log-loss computed here from the run's predictions."""
    from sklearn.metrics import log_loss

    from utils.course.runs import load_run
    from utils.data import class_weights
    from utils.metrics import apply_temperature, calibration_error, fit_temperature

    output, _ = quick_real_data
    run_dirs = [Path(row["run_dir"]) for row in json.loads((output / "real_data.json").read_text())]
    calibration = load_script("calibration")
    capsys.readouterr()
    assert calibration.main([str(d) for d in run_dirs]) == 0
    rows = [r for r in table_rows(capsys.readouterr().out) if not r[0].startswith("run ")]  # no header
    assert len(rows) == 4 * len(run_dirs)
    for run_dir in run_dirs:
        run = load_run(run_dir)
        y, saved = run.arrays("val")
        p = saved / saved.sum(axis=1, keepdims=True)
        train = run.manifest().query("split == 'train'")["label"]
        shares = np.array([(train == name).mean() for name in run.class_names])
        weights = class_weights(train, run.class_names)  # the loss saw shares x weights: move from that to shares
        seen = shares * np.array([weights[i] for i in range(len(shares))])
        ratio = shares / (seen / seen.sum())
        moved = p * ratio / (p * ratio).sum(axis=1, keepdims=True)
        t = fit_temperature(y, p)
        expected = {"as trained": p, "temperature": apply_temperature(p, t), "training prior": moved}
        mine = {r[1]: r for r in rows if r[0] == f"{run.model_name}, synthetic, seed 42"}
        assert set(mine) == {*expected, "prior, then temperature"}
        assert mine["temperature"][2] == f"{t:.2f}" and mine["as trained"][2] == "1.00"
        for name, probs in expected.items():
            assert mine[name][3] == f"{calibration_error(y, probs):.3f}"
            assert mine[name][4] == f"{log_loss(y, probs, labels=range(p.shape[1])):.3f}"
        assert float(mine["temperature"][4]) <= float(mine["as trained"][4])  # T minimises the log-loss

"""The command line: every user mistake is one line ``error: ...`` with exit 2; one end-to-end pass on a small
synthetic dataset (prepare -> train -> evaluate -> predict -> results); an interrupted run resumed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_line_error
from sklearn import metrics as skm

from utils.course.cli import main
from utils.course.config import PROJECT_ROOT
from utils.course.runs import load_run
from utils.data import load_images

TRAIN = ["--profile", "smoke", "--model", "cnn", "--epochs", "1", "--image-size", "64"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prepare", "--dataset", "nope"], "Unknown dataset 'nope'"),
        (["prepare"], "no dataset"),
        (["prepare", "--dataset", "pneumonia", "--profile", "giant"], "invalid choice: 'giant'"),
        (["prepare", "--dataset", "folder:/definitely/not/here"], "is not there"),
        (["train", "--dataset", "synthetic"], "train needs --model"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--epochs", "1", "2", "3"], "--epochs takes one number"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--epochs", "1", "1"], "one number for the CNN"),
        (["train", "--dataset", "synthetic", "--model", "mobilenet_025", "--epochs", "3"], "two for a pretrained"),
        (["train", "--dataset", "pneumonia", "--model", "resnet"], "Unknown model 'resnet'"),  # before any download
        (["train", "--resume", "/no/run", "--model", "cnn", "--epochs", "2"], "own settings: drop --model, --epochs"),
        (["prepare", "--dataset", "folder:"], "folder: needs a path"),
        (["notebooks", "--only", "99"], "--only 99: no such notebook; the numbers are 01, 02"),
        (["notebooks", "--only"], "expected at least one argument"),
        (["notebooks", "--timeout", "0"], "--timeout must be at least 1"),
        (["results", "--dataset", "synthetic", "--readme", "/no/README.md"], "--readme /no/README.md is not a file"),
        (["demo", "/no/run", "--port", "99999"], "'99999' is not a port number"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--epochs", "x"], "invalid int value"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--epochs", "0"], "leave at least one epoch"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--image-size", "8"], "at least 32 px"),
        (["train", "--dataset", "synthetic", "--model", "cnn", "--weights", "/no/file.h5"], "neither one of"),
        (["evaluate", "/no/such/run"], "is not a run folder"),
        (["predict", "/no/such/run", "x.png"], "is not a run folder"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, says, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "out"))
    assert main(args) == 2
    assert says in one_line_error(capsys)


def test_bad_profile_and_seed_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "huge")
    assert main(["prepare", "--dataset", "synthetic"]) == 2
    assert "Unknown profile 'huge'" in one_line_error(capsys)
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_SEED", "seven")
    assert main(["prepare", "--dataset", "synthetic"]) == 2
    assert "CXR_SEED must be a whole number" in one_line_error(capsys)


def test_a_real_process_prints_no_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")} | {"CXR_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "utils", "prepare", "--dataset", "nope"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: Unknown dataset")


# --- End to end -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(synthetic_source, tmp_path_factory):
    """prepare + train (tiny CNN, 64 px, 1 epoch) once for the module, with every setting in a temporary folder."""
    root = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.startswith("CXR_")]:
            mp.delenv(name)
        mp.setenv("CXR_DATA_DIR", str(root / "data"))
        mp.setenv("CXR_OUTPUT_DIR", str(root / "out"))
        mp.setenv("CXR_DATASET", "synthetic")
        assert main(["prepare", "--profile", "smoke", "--source", str(synthetic_source)]) == 0
        assert main(["train", *TRAIN]) == 0
        yield root, Path(root / "out" / "runs" / "synthetic" / "cnn")


@pytest.fixture
def cli_env(trained, monkeypatch):
    root, model_dir = trained
    monkeypatch.setenv("CXR_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(root / "out"))
    monkeypatch.setenv("CXR_DATASET", "synthetic")
    return model_dir


def test_train_writes_a_complete_run(cli_env):
    latest = (cli_env / "LATEST").read_text().strip()
    run = cli_env / latest
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete" and config["model"] == "cnn" and config["image_size"] == 64
    assert config["class_names"] == ["NORMAL", "PNEUMONIA"] and 0 <= config["threshold"] <= 1
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["split"]) == {"val", "test"}
    np.testing.assert_allclose(predictions[["p_NORMAL", "p_PNEUMONIA"]].sum(axis=1), 1.0, atol=1e-5)
    val = predictions[predictions["split"] == "val"]
    assert config["val_auc"] == round(skm.roc_auc_score(val["label"] == "PNEUMONIA", val["p_PNEUMONIA"]), 4)
    assert not (run / "backup").exists() and (run / "model.keras").is_file()
    assert len(pd.read_csv(run / "history.csv")) == 1


def test_evaluate_matches_sklearn_on_the_saved_predictions(cli_env, capsys):
    assert main(["evaluate", str(cli_env)]) == 0
    result = json.loads(capsys.readouterr().out)
    run = cli_env / (cli_env / "LATEST").read_text().strip()
    test = pd.read_csv(run / "predictions.csv").query("split == 'test'")
    y = (test["label"] == "PNEUMONIA").to_numpy().astype(int)
    pred = (test["p_PNEUMONIA"] >= result["threshold"]).astype(int)
    s = result["scores"]
    assert result["images"] == len(test)
    assert s["AUC"]["value"] == pytest.approx(skm.roc_auc_score(y, test["p_PNEUMONIA"]), abs=2e-4)
    assert s["accuracy"]["value"] == pytest.approx(skm.accuracy_score(y, pred), abs=2e-4)
    assert s["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, pred), abs=2e-4)
    assert s["specificity"]["value"] == pytest.approx(skm.recall_score(y, pred, pos_label=0), abs=2e-4)
    assert s["macro-F1"]["value"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=2e-4)
    assert list((run / "evaluations").glob("*-test.json"))


def test_predict_prints_probabilities_that_sum_to_one(cli_env, capsys, synthetic_source, tmp_path):
    image = next((synthetic_source / "test" / "PNEUMONIA").glob("*.png"))
    assert main(["predict", str(cli_env), str(image)]) == 0
    path, cells, decision = capsys.readouterr().out.strip().split("\t")
    values = dict(zip(cells.split()[::2], map(float, cells.split()[1::2]), strict=True))
    assert path == str(image) and set(values) == {"NORMAL", "PNEUMONIA"}
    assert sum(values.values()) == pytest.approx(1.0, abs=2e-3)
    run = load_run(cli_env)
    p = float(run.load_model().predict(load_images([image], int(run.config["image_size"])), verbose=0)[0, 1])
    assert values["PNEUMONIA"] == pytest.approx(p, abs=5e-4)
    assert decision == f"-> {run.class_names[int(p >= run.threshold)]}"  # the run's validation threshold decides
    for threshold, expected in ((p + 0.01, "NORMAL"), (p - 0.01, "PNEUMONIA")):  # the same run, other thresholds
        moved = tmp_path / f"run-{expected}"
        shutil.copytree(run.path, moved)
        (moved / "config.json").write_text(json.dumps(run.config | {"threshold": threshold}))
        assert main(["predict", str(moved), str(image)]) == 0
        assert capsys.readouterr().out.strip().endswith(f"-> {expected}")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", str(cli_env), str(text)]) == 2
    assert "not an image the course can read" in one_line_error(capsys)


def test_results_table_lists_the_run(cli_env, capsys, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nOLD TABLE\n<!-- results:end -->\nend\n")
    assert main(["results", "--readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "| cnn | smoke | none | 64 |" in out
    assert "OLD TABLE" not in readme.read_text() and "| cnn | smoke |" in readme.read_text()


def test_training_on_a_dataset_that_cannot_be_had_is_one_line_error(cli_env, capsys):
    assert main(["train", "--model", "cnn", "--dataset", "pneumonia"]) == 2
    assert "No Kaggle credentials found" in one_line_error(capsys)


def test_interrupted_run_resumes(trained, synthetic_source, monkeypatch, capsys):
    """A run stopped after its first epoch (KeyboardInterrupt) is marked interrupted; `train --resume` continues it
    in the same folder from epoch 2, not from the start."""
    import keras

    import utils.training as training

    root, model_dir = trained
    monkeypatch.setenv("CXR_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(root / "resume"))
    monkeypatch.setenv("CXR_DATASET", "synthetic")

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    real = training.make_callbacks
    monkeypatch.setattr(training, "make_callbacks", lambda *a, **k: [*real(*a, **k), Stop()])
    assert main(["train", "--profile", "smoke", "--model", "cnn", "--epochs", "2", "--image-size", "64"]) == 130
    monkeypatch.setattr(training, "make_callbacks", real)
    (run,) = (root / "resume" / "runs" / "synthetic" / "cnn").iterdir()
    assert json.loads((run / "config.json").read_text())["status"] == "interrupted"
    assert (run / "backup").is_dir()
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "complete"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1]
    assert [p.name for p in run.parent.iterdir() if p.is_dir()] == [run.name]
    assert main(["train", "--resume", str(run)]) == 2
    assert "nothing to resume" in one_line_error(capsys)


def test_train_takes_the_profiles_recipe_for_the_model_and_the_options_win(cli_env, capsys):
    """`train --profile laptop --model mobilenet_025` starts from the laptop recipe for that model (every image,
    patience 6); the command's own --image-size and --epochs win over it."""
    args = ["train", "--profile", "laptop", "--model", "mobilenet_025", "--image-size", "64", "--epochs", "1", "1",
            "--weights", "none"]  # fmt: skip
    assert main(args) == 0
    model_dir = cli_env.parent / "mobilenet_025"
    config = json.loads((model_dir / (model_dir / "LATEST").read_text().strip() / "config.json").read_text())
    profile = config["profile"]
    assert (profile["name"], profile["patience"], profile["images"]) == ("laptop", 6, {"train": None, "val": None, "test": None})
    assert (config["image_size"], profile["head_epochs"], profile["finetune_epochs"]) == (64, 1, 1)


def test_notebooks_runs_the_numbers_given_under_the_profile_given(monkeypatch, tmp_path, capsys):
    """--only picks notebooks by number (1 = 01) and --profile reaches the kernels, which read CXR_PROFILE."""
    import nbclient

    executed = []

    class RecordingClient:  # stands in for nbclient's: records what would run, and under which profile
        def __init__(self, notebook, **options):
            self.notebook = notebook

        def execute(self):
            executed.append((self.notebook.metadata.get("colab", {}).get("name"), os.environ.get("CXR_PROFILE")))

    monkeypatch.setattr(nbclient, "NotebookClient", RecordingClient)
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("CXR_PROFILE", "laptop")  # the shell's choice; --profile wins
    assert main(["notebooks", "--only", "1", "03", "--profile", "smoke"]) == 0
    written = sorted(p.name for p in (tmp_path / "executed").glob("*.ipynb"))
    assert written == ["01_download_data.ipynb", "03_augmentation_and_pipeline.ipynb"]
    assert [profile for _, profile in executed] == ["smoke", "smoke"]
    assert capsys.readouterr().out.count(" s -> ") == 2


def test_a_file_where_a_folder_belongs_is_one_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    assert main(["prepare", "--dataset", "synthetic"]) == 2
    assert f"CXR_DATA_DIR={tmp_path / 'data'} is a file, not a folder" in one_line_error(capsys)


def test_evaluate_a_missing_source_folder(cli_env, capsys):
    assert main(["evaluate", str(cli_env), "--source", "/no/folder"]) == 2
    assert "--source /no/folder is not a folder" in one_line_error(capsys)

"""The instructor CLI round trip: train a tiny model, evaluate it, predict with it, write the results table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils.cli import main
from utils.cli_models import read_images
from utils.config import PROJECT_ROOT
from utils.runs import load_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """`train --dataset synthetic --model cnn` in the smoke profile, in-process; returns paths and stdout."""
    root = tmp_path_factory.mktemp("cli")
    env = {"CXR_DATA_DIR": str(root / "data"), "CXR_OUTPUT_DIR": str(root / "out"), "CXR_PROFILE": "smoke"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("CXR_WEIGHTS", raising=False)
        import io
        from contextlib import redirect_stdout

        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["train", "--dataset", "synthetic", "--model", "cnn", "--epochs", "1", "0"]) == 0
    return {"root": root, "env": env, "stdout": out.getvalue(), "run_dir": Path(out.getvalue().split()[-1])}


@pytest.fixture
def cli_env(trained, monkeypatch):
    for key, value in trained["env"].items():
        monkeypatch.setenv(key, value)
    return trained


def test_train_prints_the_run_folder_last(trained):
    run_dir = trained["run_dir"]
    assert trained["stdout"].strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "model.keras").is_file() and (run_dir / "predictions.csv").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["profile"] == "smoke" and config["epochs_run"] == {"all_layers": 1, "all_layers_low_lr": 0}


def test_evaluate_writes_and_prints_metrics_without_overwriting(cli_env, capsys):
    run_dir = cli_env["run_dir"]
    assert main(["evaluate", str(run_dir.parent)]) == 0  # a model folder resolves through LATEST
    result = json.loads(capsys.readouterr().out)
    manifest = pd.read_csv(cli_env["root"] / "data" / "synthetic" / "manifest.csv")
    assert result["n"] == (manifest["split"] == "test").sum() and result["split"] == "test"  # all, not capped
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert 0.0 <= result[key] <= 1.0
    assert set(result["per_class"]) == {"NORMAL", "BACTERIA", "VIRUS"}
    assert {"precision", "recall", "f1"} <= set(result["per_class"]["VIRUS"])
    assert main(["evaluate", str(run_dir)]) == 0
    capsys.readouterr()
    written = sorted((run_dir / "evaluations").glob("*.json"))
    assert len(written) == 2 and json.loads(written[0].read_text())["n"] == result["n"]


def test_evaluate_on_any_class_folder(cli_env, capsys, tmp_path):
    source = cli_env["root"] / "data" / "raw" / "synthetic" / "test"
    folder = tmp_path / "mine"
    for label, pattern in (("NORMAL", "NORMAL/*.png"), ("VIRUS", "PNEUMONIA/*virus*.png")):
        (folder / label).mkdir(parents=True)
        for path in sorted(source.glob(pattern))[:3]:
            (folder / label / path.name).write_bytes(path.read_bytes())
    assert main(["evaluate", str(cli_env["run_dir"]), "--source", str(folder)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 6 and result["dataset"].startswith("folder:")


def test_predict_matches_the_model_on_the_same_images(cli_env, capsys):
    paths = sorted((cli_env["root"] / "data" / "raw" / "synthetic" / "test" / "NORMAL").glob("*.png"))[:2]
    assert main(["predict", str(cli_env["run_dir"]), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    printed = np.array([[float(cell.split("=")[1]) for cell in line.split("\t")[1:4]] for line in lines])
    np.testing.assert_allclose(printed.sum(axis=1), 1.0, atol=2e-4)
    model = load_run(cli_env["run_dir"]).load_model()
    expected = np.asarray(model(read_images(paths, 64), training=False))
    np.testing.assert_allclose(printed, expected, atol=1e-4)


def test_results_table_replaces_only_the_marked_block(cli_env, capsys, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold table\n<!-- results:end -->\noutro\n")
    assert main(["results", "--dataset", "synthetic", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:start -->\n| model |") and text.endswith(
        "<!-- results:end -->\noutro\n"
    )
    assert "old table" not in text and "| cnn | synthetic | smoke | none | 64 |" in text
    wall_time = load_run(cli_env["run_dir"]).config["wall_time_s"]
    assert f"| {wall_time / 60:.1f} min |" in text  # run time: the whole run, not only the fit
    capsys.readouterr()
    readme.write_text("no markers\n")
    assert main(["results", "--dataset", "synthetic", "--readme", str(readme)]) == 2
    assert "markers" in capsys.readouterr().err and readme.read_text() == "no markers\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "synthetic", "--model", "nope"], "Unknown model 'nope'"),
        (["evaluate", "/no/such/run"], "No run folder at /no/such/run"),
        (["predict", "RUN", "/no/such.png"], "No image at /no/such.png"),
        (["predict", "RUN", "GARBAGE"], "Cannot decode"),
    ],
)
def test_mistakes_give_one_line_errors(cli_env, capsys, tmp_path, args, message):
    garbage = tmp_path / "x.jpeg"
    garbage.write_bytes(b"not an image at all")
    args = [str(cli_env["run_dir"]) if a == "RUN" else str(garbage) if a == "GARBAGE" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_no_traceback_reaches_the_user(cli_env, tmp_path):
    broken = tmp_path / "broken.png"
    Image.new("L", (8, 8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:20])  # a truncated PNG
    result = subprocess.run(
        [sys.executable, "-m", "utils", "predict", str(cli_env["run_dir"]), str(broken)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **cli_env["env"]},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Cannot decode")

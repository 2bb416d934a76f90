"""Run folders (utils/course/runs.py): never reused, written atomically, finished with LATEST pointing at them,
read back with clear errors when something is missing or damaged, titled so that no figure hides synthetic
images or random weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils.course import runs
from utils.course.config import get_settings
from utils.course.runs import (
    LATEST,
    Run,
    RunError,
    finish_run,
    latest_runs,
    load_run,
    mark_run,
    save_json,
    save_model,
    start_run,
    training_lock,
)

CLASSES = ["NORMAL", "PNEUMONIA"]


@pytest.fixture
def settings(tmp_path):
    return get_settings("smoke").with_(dataset="synthetic", output_dir=tmp_path / "outputs", seed=7)


@pytest.fixture
def manifest():
    labels = ["NORMAL", "PNEUMONIA"] * 6
    splits = ["train"] * 6 + ["val"] * 4 + ["test"] * 2
    return pd.DataFrame({"path": [f"/data/img{i}.png" for i in range(12)], "label": labels, "split": splits,
                         "patient_id": [f"p{i}" for i in range(12)], "width": 40})  # fmt: skip


def _run(path: Path, **config) -> Run:
    """A run folder written by hand (status, model, dataset...)."""
    path.mkdir(parents=True)
    config = {"model": path.parent.name, "dataset": "synthetic", "class_names": CLASSES, "weights_used": "imagenet",
              "status": "complete"} | config  # fmt: skip
    save_json(path / "config.json", config)
    return Run(path, config)


# --- start_run -----------------------------------------------------------------------------------------------------


def test_start_run_writes_config_and_its_own_manifest(settings, manifest):
    run = start_run(settings, "cnn", manifest, CLASSES, "none (trained from scratch)")
    assert run.path.parent == settings.output_dir / "runs" / "synthetic" / "cnn"
    config = json.loads((run.path / "config.json").read_text())
    assert config["status"] == "running" and config["model"] == "cnn" and config["dataset"] == "synthetic"
    assert config["class_names"] == CLASSES and config["seed"] == 7 and config["image_size"] == 64
    assert config["profile"]["name"] == "smoke" and config["weights_used"] == "none (trained from scratch)"
    assert config["versions"]["keras"].startswith("3.")
    saved = pd.read_csv(run.path / "manifest.csv")
    pd.testing.assert_frame_equal(saved, manifest[["path", "label", "split"]])  # only what scoring needs
    assert run.manifest()["split"].tolist() == manifest["split"].tolist()
    assert load_run(run.path).config == config


def test_two_runs_in_the_same_second_get_distinct_folders(settings, manifest, monkeypatch):
    monkeypatch.setattr(runs, "time", SimpleNamespace(strftime=lambda fmt: "20250101-120000"))
    made = [start_run(settings, "cnn", manifest, CLASSES, "none").path.name for _ in range(3)]
    assert made == ["20250101-120000", "20250101-120000-1", "20250101-120000-2"]
    folder = settings.output_dir / "runs" / "synthetic" / "cnn"
    assert all(json.loads((folder / name / "config.json").read_text())["status"] == "running" for name in made)


def test_runs_on_a_folder_dataset_go_to_its_hashed_folder(settings, manifest, tmp_path):
    (tmp_path / "xr").mkdir()
    run = start_run(settings.with_(dataset=f"folder:{tmp_path / 'xr'}"), "cnn", manifest, CLASSES, "none")
    assert run.path.parent.parent.name.startswith("folder-xr-")


# --- save_json -----------------------------------------------------------------------------------------------------


def test_save_json_round_trip_with_paths(tmp_path):
    save_json(tmp_path / "c.json", {"path": Path("/a/b"), "n": 1.5, "names": ["x"]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"path": "/a/b", "n": 1.5, "names": ["x"]}


def test_save_json_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    save_json(path, {"status": "running"})

    class Unprintable:
        def __str__(self):
            raise RuntimeError("cannot be written")

    with pytest.raises(RuntimeError):
        save_json(path, {"status": "complete", "bad": Unprintable()})
    assert json.loads(path.read_text()) == {"status": "running"}

    def crash(src, dst):  # the process dies between writing and renaming
        raise OSError("killed")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError):
        save_json(path, {"status": "complete"})
    assert json.loads(path.read_text()) == {"status": "running"}


def test_mark_run_keeps_everything_else(settings, manifest):
    run = start_run(settings, "cnn", manifest, CLASSES, "none")
    mark_run(run, "interrupted")
    config = load_run(run.path).config
    assert config["status"] == "interrupted" and config["seed"] == 7 and config["class_names"] == CLASSES


# --- load_run and the errors ------------------------------------------------------------------------------------


def test_load_run_on_a_model_folder_follows_latest(tmp_path):
    model_dir = tmp_path / "runs" / "synthetic" / "cnn"
    _run(model_dir / "20250101-100000", val_auc=0.6)
    _run(model_dir / "20250102-100000", val_auc=0.7)
    (model_dir / LATEST).write_text("20250101-100000\n")
    assert load_run(model_dir).path == model_dir / "20250101-100000"
    assert load_run(str(model_dir)).config["val_auc"] == 0.6


def test_load_run_of_a_missing_folder_or_a_stale_latest(tmp_path):
    with pytest.raises(RunError) as caught:
        load_run(tmp_path / "nope")
    assert str(caught.value) == (f"{tmp_path / 'nope'} is not a run folder (no config.json): "
                                 "pass outputs/runs/<dataset>/<model>[/<run>].")  # fmt: skip
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / LATEST).write_text("20250101-000000")  # the run it names was deleted
    with pytest.raises(RunError, match="20250101-000000 is not a run folder"):
        load_run(tmp_path / "cnn")
    assert isinstance(caught.value, FileNotFoundError)


def test_missing_model_file(tmp_path):
    run = _run(tmp_path / "cnn" / "r1", status="interrupted")
    with pytest.raises(RunError) as caught:
        run.load_model()
    assert str(caught.value) == (f"{run.path} has no model.keras (status interrupted): resume it with "
                                 f"`python -m utils train --resume {run.path}`.")  # fmt: skip
    done = _run(tmp_path / "cnn" / "r2", status="complete")
    with pytest.raises(RunError, match=r"has no model.keras \(status complete\): train it again."):
        done.load_model()


@pytest.mark.parametrize("content", ["{", "", "\udcff"])
def test_damaged_config_is_one_clear_error(tmp_path, content):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "config.json").write_text(content, errors="surrogateescape")
    with pytest.raises(RunError, match=r"config.json is damaged \(not JSON\): this run cannot be used"):
        load_run(tmp_path / "r1")


def test_training_lock_refuses_a_second_process_and_takes_over_a_dead_ones(tmp_path):
    run = _run(tmp_path / "cnn" / "r1", status="running")
    lock = run.path / runs.TRAINING_LOCK
    with training_lock(run):
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(RunError, match=f"is being trained by process {os.getpid()}"), training_lock(run):
            pass  # a second trainer of the same folder, while the first lives
    assert not lock.exists()  # released
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    lock.write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname()}))  # its process died
    with training_lock(run):
        assert json.loads(lock.read_text())["pid"] == os.getpid()  # taken over
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine"}))  # cannot be checked from here
    with pytest.raises(RunError, match=f"on another-machine.*delete {lock}"), training_lock(run):
        pass
    assert lock.exists()  # not ours to remove
    lock.unlink()
    with pytest.raises(ValueError), training_lock(run):
        raise ValueError("training failed")
    assert not lock.exists()  # released on failure too


@pytest.mark.parametrize("content", [b"", b"\x00garbage\xff" * 100, b"PK\x03\x04 truncated zip"])
def test_damaged_model_file(tmp_path, content):
    run = _run(tmp_path / "cnn" / "r1")
    (run.path / "model.keras").write_bytes(content)
    with pytest.raises(RunError) as caught:
        run.load_model()
    message = str(caught.value)
    assert message.startswith(f"{run.path / 'model.keras'} cannot be read as a Keras model (")
    assert message.endswith("it is damaged; train the model again.")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one clear message, no chain


def test_missing_split_predictions(tmp_path):
    run = _run(tmp_path / "cnn" / "r1")
    pd.DataFrame({"path": ["a", "b"], "label": ["NORMAL", "PNEUMONIA"], "split": ["val", "val"],
                  "p_NORMAL": [0.8, 0.3], "p_PNEUMONIA": [0.2, 0.7]}).to_csv(run.path / "predictions.csv", index=False)  # fmt: skip
    y, probs = run.arrays("val")
    assert y.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [[0.8, 0.2], [0.3, 0.7]])
    with pytest.raises(RunError, match="has no 'test' predictions"):
        run.arrays("test")


# --- Titles --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "dataset", "weights_used", "title"),
    [
        ("cnn", "synthetic", "none (trained from scratch)", "cnn on synthetic (SYNTHETIC images)"),
        ("cnn", "pneumonia", "none (trained from scratch)", "cnn on pneumonia"),
        ("vgg16", "synthetic3", "random (ImageNet weights unavailable: x not on disk, no download)",
         "vgg16 on synthetic3 (SYNTHETIC images, random weights)"),
        ("resnet50", "pneumonia", "none (random weights, as asked)", "resnet50 on pneumonia (random weights)"),
        ("mobilenet_025", "pneumonia", "imagenet (the 224 px file, at 128 px)", "mobilenet_025 on pneumonia"),
        ("densenet121", "pneumonia3", "file chexnet.h5", "densenet121 on pneumonia3"),
    ],
)
def test_title_names_synthetic_images_and_random_weights(tmp_path, model, dataset, weights_used, title):
    run = _run(tmp_path / model / "r1", dataset=dataset, weights_used=weights_used)
    assert run.title == title


# --- latest_runs ---------------------------------------------------------------------------------------------------


def test_latest_runs_skips_incomplete_runs(tmp_path):
    root = tmp_path / "runs" / "synthetic"
    _run(root / "cnn" / "r1")
    (root / "cnn" / LATEST).write_text("r1")
    _run(root / "vgg16" / "r1", status="running")  # still training (or it crashed)
    (root / "vgg16" / LATEST).write_text("r1")
    _run(root / "resnet50" / "r1")  # complete, but never marked LATEST
    _run(root / "mobilenet_025" / "r1", status="interrupted")
    (root / "mobilenet_025" / LATEST).write_text("r1")
    found = latest_runs(tmp_path, "synthetic")
    assert list(found) == ["cnn"] and found["cnn"].path == root / "cnn" / "r1"


def test_latest_runs_when_nothing_was_trained(tmp_path):
    _run(tmp_path / "runs" / "synthetic" / "cnn" / "r1", status="failed")
    (tmp_path / "runs" / "synthetic" / "cnn" / LATEST).write_text("r1")
    with pytest.raises(RunError) as caught:
        latest_runs(tmp_path, "synthetic")
    message = str(caught.value)
    assert message.startswith("No trained model on synthetic under")
    assert "run notebooks 04-08 first" in message and "python -m utils train --dataset synthetic --model cnn" in message


# --- finish_run: the whole round trip -------------------------------------------------------------------------------


def test_finish_run_saves_everything_and_load_run_reads_it_back(settings, manifest, monkeypatch):
    import keras

    from utils.metrics import choose_threshold
    from utils.models import build_cnn

    keras.utils.set_random_seed(0)
    model = build_cnn(2, 32, filters=(4,))
    rng = np.random.default_rng(0)
    images = {s: rng.uniform(0, 255, ((manifest["split"] == s).sum(), 32, 32, 3)).astype(np.float32) for s in ("val", "test")}
    data = SimpleNamespace(manifest=manifest, class_names=CLASSES, val=images["val"], test=images["test"])
    monkeypatch.setattr(runs, "time", SimpleNamespace(strftime=lambda fmt: "20250101-120000"))
    old = start_run(settings, "cnn", manifest, CLASSES, "none (trained from scratch)")
    finish_run(old, model, data, "block1_relu2", 1.0)  # an earlier run of the same model
    run = start_run(settings, "cnn", manifest, CLASSES, "none (trained from scratch)")
    (run.path / "backup").mkdir()
    (run.path / "head.weights.h5").write_bytes(b"x")
    pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.6], "val_auc": [0.5, 0.6]}).to_csv(run.path / "history-train.csv", index=False)
    finish_run(run, model, data, "block1_relu2", 12.34)

    model_dir = run.path.parent
    assert (model_dir / LATEST).read_text() == "20250101-120000-1"
    loaded = load_run(model_dir)
    assert loaded.path == run.path
    c = loaded.config
    assert c["status"] == "complete" and c["gradcam_layer"] == "block1_relu2" and c["train_time_s"] == 12.3
    assert c["train_images"] == 6 and c["params"] == model.count_params()
    assert c["image_size"] == 32 and c["profile"]["image_size"] == 64  # the model's input size, whatever the settings
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "history-train.csv", "history.csv", "manifest.csv",
                                                         "model.keras", "predictions.csv"]  # backup and head gone
    predictions = loaded.predictions()
    assert predictions[["path", "label", "split"]].values.tolist() == \
        manifest.loc[manifest["split"] != "train", ["path", "label", "split"]].values.tolist()  # fmt: skip
    expected = np.concatenate([model.predict(images["val"], verbose=0), model.predict(images["test"], verbose=0)])
    np.testing.assert_allclose(predictions[["p_NORMAL", "p_PNEUMONIA"]].to_numpy(), expected, atol=1e-6)
    y_val, p_val = loaded.arrays("val")
    assert c["threshold"] == choose_threshold(y_val, p_val)
    assert loaded.history()["val_auc"].tolist() == [0.5, 0.6]
    reloaded = loaded.load_model()
    np.testing.assert_allclose(reloaded.predict(images["test"], verbose=0), expected[4:], atol=1e-6)


def test_save_model_drops_the_optimizer_and_replaces_atomically(tmp_path):
    import io
    import zipfile

    import h5py
    import keras

    from utils.models import build_cnn

    model = build_cnn(2, 32, filters=(4,))
    model.compile("adam", "categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    model.fit(x, np.eye(2)[[0, 1, 0, 1]], verbose=0)  # the optimizer now has state
    (tmp_path / "model.keras").write_bytes(b"old")
    save_model(model, tmp_path / "model.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temporary file left
    with zipfile.ZipFile(tmp_path / "model.keras") as saved, h5py.File(io.BytesIO(saved.read("model.weights.h5"))) as h5:
        assert "optimizer" not in h5 and "layers" in h5
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_resuming_restores_the_runs_profile_but_keeps_the_weights_choice(settings, manifest):
    from utils.course.config import ConfigError
    from utils.course.experiment import resume_settings

    started = settings.with_(image_size=48, epochs=3, batch_size=4, weights="none", seed=11)
    run = start_run(started, "vgg16", manifest, CLASSES, "none (random weights, as asked)")
    mark_run(run, "interrupted")
    later = get_settings("laptop").with_(weights="none", output_dir=settings.output_dir)  # a new session
    resumed = resume_settings(later, load_run(run.path))
    p = resumed.profile
    assert (p.image_size, p.epochs, p.batch_size, resumed.seed, resumed.dataset) == (48, 3, 4, 11, "synthetic")
    assert resumed.weights == "none"  # not the profile's default ("cached" for smoke), which would load ImageNet
    finished = _run(run.path.parent / "done")
    with pytest.raises(ConfigError, match="is complete: there is nothing to resume"):
        resume_settings(later, finished)


def test_a_run_without_predictions_says_how_to_finish_it(tmp_path):
    """An interrupted run has no predictions.csv yet: one RunError naming the run and the resume command."""
    run = Run(tmp_path, {"status": "interrupted"})
    with pytest.raises(RunError) as error:
        run.arrays("val")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "status interrupted" in message
    assert f"python -m utils train --resume {tmp_path}" in message

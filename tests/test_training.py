"""Training phases, callbacks, strategies and run folders, on tiny synthetic data (bright vs dark images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.conftest import SHARED
from utils import runs, training
from utils.config import PROJECT_ROOT
from utils.models import build_model, count_params

CLASSES = ["dark", "bright"]
MOBILENET_025_FILE = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def toy_split(
    split: str, n: int, size: int = 32, batch: int = 8, seed: int = 0
) -> tuple[tf.data.Dataset, pd.DataFrame]:
    """``n`` images, alternating dark (0-100) and bright (150-250) noise, and their manifest rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.uniform(0, 100, (n, size, size, 3)) + 150 * y[:, None, None, None]).astype("float32")
    rows = pd.DataFrame(
        {
            "path": [f"/toy/{split}/{i}.png" for i in range(n)],
            "label": [CLASSES[k] for k in y],
            "split": split,
        }
    )
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 2)))
    if split == "train":
        ds = ds.shuffle(n, seed=seed)
    return ds.batch(batch), rows


def toy_data(n_train: int = 32, n_eval: int = 16, size: int = 32, batch: int = 8):
    parts = {
        s: toy_split(s, n, size, batch, seed)
        for s, n, seed in [("train", n_train, 0), ("val", n_eval, 1), ("test", n_eval, 2)]
    }
    manifest = pd.concat([rows for _, rows in parts.values()], ignore_index=True)
    return parts["train"][0], parts["val"][0], parts["test"][0], manifest


def run(model: str, tmp_path: Path, epochs=(1, 1), n_train: int = 32, **kwargs) -> training.RunResult:
    """A tiny ``train_run``; the smoke profile runs eagerly (no graph tracing), the mirrored test runs graphs."""
    train, val, test, manifest = toy_data(n_train)
    options = (
        dict(
            class_names=CLASSES,
            dataset="toy",
            profile="smoke",
            image_size=32,
            weights="none",
            epochs=epochs,
            output_dir=tmp_path,
            test_ds=test,
            manifest=manifest,
            verbose=0,
            seed=1,
        )
        | kwargs
    )
    return training.train_run(model, train, val, **options)


# ----------------------------------------------------------------------------------------- pure logic
def test_pick_strategy_kind():
    assert training.pick_strategy_kind(True, 0) == "tpu"
    assert training.pick_strategy_kind(False, 2) == "mirrored"
    assert training.pick_strategy_kind(False, 1) == "default"
    assert training.pick_strategy_kind(False, 0) == "default"
    if len(tf.config.list_logical_devices("GPU")) <= 1:
        assert training.get_strategy("auto").num_replicas_in_sync == 1  # one device: the default strategy


def test_plan_phases():
    head, tune = training.plan_phases(True, (2, 3), 1e-3)
    assert (head.name, head.epochs, head.learning_rate) == ("head", 2, 1e-3)
    assert (tune.name, tune.epochs) == ("finetune", 3) and tune.learning_rate == pytest.approx(1e-4)
    assert [p.name for p in training.plan_phases(False, (1, 1), 1e-3)] == ["all_layers", "all_layers_low_lr"]


def test_class_weight_by_index_name_list_or_balanced():
    assert training.resolve_class_weight({"bright": 2.0, "dark": 0.5}, CLASSES) == {1: 2.0, 0: 0.5}
    assert training.resolve_class_weight([0.5, 2], CLASSES) == {0: 0.5, 1: 2.0}
    assert training.resolve_class_weight(None, CLASSES) is None
    manifest = pd.DataFrame(
        {"label": ["dark"] * 3 + ["bright"] + ["dark"] * 5, "split": ["train"] * 4 + ["val"] * 5}
    )
    assert training.resolve_class_weight("balanced", CLASSES, manifest) == {0: 4 / (2 * 3), 1: 4 / (2 * 1)}
    for bad in ({5: 1.0}, {"grey": 1.0}):
        with pytest.raises(ValueError, match="not a class"):
            training.resolve_class_weight(bad, CLASSES)
    with pytest.raises(ValueError, match="needs the manifest"):
        training.resolve_class_weight("balanced", CLASSES)


@pytest.mark.slow
def test_freeze_and_unfreeze_top_keep_batchnorm_frozen():
    built = build_model("mobilenet_025", 2, 32, "none")
    backbone = built.backbone_layers()
    training.freeze_backbone(built)
    head_only = count_params(built.model)["trainable"]
    assert head_only == 256 * 2 + 2  # GAP(256) -> Dense(2): only the head trains
    assert not any(layer.trainable for layer in backbone)

    unfrozen = training.unfreeze_top(built, 0.3)
    top = backbone[-int(np.ceil(0.3 * len(backbone))) :]
    assert unfrozen and set(unfrozen) <= {layer.name for layer in top}
    assert all(not layer.trainable for layer in top if isinstance(layer, keras.layers.BatchNormalization))
    assert all(layer.trainable for layer in top if not isinstance(layer, keras.layers.BatchNormalization))
    assert not any(layer.trainable for layer in backbone[: len(backbone) - len(top)])
    assert count_params(built.model)["trainable"] > head_only

    last_two = backbone[-2:]  # conv_pw_13_bn, conv_pw_13_relu: an int counts layers, BN ones stay frozen
    assert training.unfreeze_top(built, 2) == [
        layer.name for layer in last_two if not isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert training.unfreeze_top(built, 0) == [] and count_params(built.model)["trainable"] == head_only
    with pytest.raises(ValueError):
        training.unfreeze_top(built, 1.5)
    with pytest.raises(TypeError):
        training.unfreeze_top(built, True)


@pytest.mark.slow
def test_predict_split_checks_the_order_against_the_manifest():
    model = build_model("cnn", 2, 32, "none", seed=0).model
    ds, rows = toy_split("val", 12, batch=5)
    table = training.predict_split(model, ds, rows, CLASSES)
    assert list(table.columns) == ["path", "split", "label", "p_dark", "p_bright"]
    assert table["path"].tolist() == rows["path"].tolist()
    np.testing.assert_allclose(table[["p_dark", "p_bright"]].sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="not in the manifest's order"):
        training.predict_split(model, ds, rows.iloc[::-1], CLASSES)
    with pytest.raises(ValueError, match="12 images but the manifest rows 11"):
        training.predict_split(model, ds, rows.iloc[:11], CLASSES)


# ------------------------------------------------------------------------------------------ train_run
@pytest.mark.slow
def test_train_run_writes_every_artefact_and_never_overwrites(tmp_path):
    first = run("cnn", tmp_path, epochs=(1, 1), class_weight={"dark": 1.0, "bright": 2.0})
    folder = first.run_dir
    assert folder.parent == tmp_path / "runs" / "toy" / "cnn"
    for name in ("model.keras", "history.csv", "config.json", "predictions.csv", "metrics.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "backup").exists()
    assert (folder.parent / "LATEST").read_text().strip() == folder.name

    config = json.loads((folder / "config.json").read_text())
    assert config["status"] == "complete" and config["model"] == "cnn" and config["dataset"] == "toy"
    assert config["class_names"] == CLASSES and config["image_size"] == 32 and config["profile"] == "smoke"
    assert config["weights_requested"] == "none" and config["weights_used"] == "none" and config["seed"] == 1
    assert set(config["versions"]) == {"python", "tensorflow", "keras", "numpy"} and config["git_commit"]
    assert config["params"] == first.model.count_params() and config["train_images"] == 32
    assert (
        config["wall_time_s"] > 0
        and config["train_images_per_s"] > 0
        and config["class_weight"] == {"0": 1.0, "1": 2.0}
    )
    assert [p["name"] for p in config["phases"]] == ["all_layers", "all_layers_low_lr"] and config[
        "run_eagerly"
    ]

    history = pd.read_csv(folder / "history.csv")
    assert history["phase"].tolist() == [1, 2] and {"loss", "auc", "val_auc", "learning_rate"} <= set(history)
    assert history.loc[1, "learning_rate"] == pytest.approx(history.loc[0, "learning_rate"] / 10)
    assert first.history.equals(history)

    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == ["path", "split", "label", "p_dark", "p_bright"]
    assert predictions["split"].value_counts().to_dict() == {"val": 16, "test": 16}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc"} <= set(metrics["test"])
    assert metrics["val"]["n"] == 16

    # the saved model is the best checkpoint, and the returned model holds the same weights
    saved = keras.models.load_model(folder / "model.keras")
    assert not saved.compiled  # no optimizer state: a third of the checkpoint's size
    x = next(iter(toy_split("val", 16, seed=1)[0]))[0]  # the first val batch (8 images)
    np.testing.assert_allclose(saved(x, training=False), first.model(x, training=False), rtol=1e-5, atol=1e-6)
    val_rows = predictions[predictions["split"] == "val"].head(8)
    np.testing.assert_allclose(
        val_rows[["p_dark", "p_bright"]], saved(x, training=False), rtol=1e-4, atol=1e-5
    )

    second = run("cnn", tmp_path, epochs=(1, 0), n_train=16)
    assert second.run_dir != folder and (folder / "model.keras").is_file()
    assert (folder.parent / "LATEST").read_text().strip() == second.run_dir.name
    assert runs.latest_run(tmp_path, "toy", "cnn") == second.run_dir
    loaded = runs.load_run(folder.parent)
    assert loaded.path == second.run_dir and loaded.complete and len(loaded.predictions) == 32


@pytest.mark.slow
def test_random_weight_mobilenet_does_not_predict_a_single_class(tmp_path):
    """Without the BatchNorm re-estimation (bn_recalibration_batches=0) this exact setup predicts one class for
    every validation image (checked with seeds 1-4); lagging moving statistics are the cause."""
    result = run("mobilenet_025", tmp_path, epochs=(2, 0), patience=5, bn_recalibration_batches=4)
    assert not result.config["pretrained"] and result.config["bn_recalibration_batches"] > 0
    val = result.predictions[result.predictions["split"] == "val"]
    predicted = val[["p_dark", "p_bright"]].to_numpy().argmax(axis=1)
    assert len(set(predicted)) == 2, f"a single class predicted: {np.bincount(predicted)}"


@pytest.mark.slow
def test_recalibration_gives_exact_batch_statistics():
    built = build_model("cnn", 2, 32, "none", seed=0)
    ds, _ = toy_split("train", 16, batch=8)
    assert training.recalibrate_batchnorm(built.model, ds, max_batches=2) == 2
    bn = built.model.get_layer("cnn_block1_1_bn")
    features = keras.Model(built.model.input, bn.input)
    batch_means = [np.asarray(features(x)).mean(axis=(0, 1, 2)) for x, _ in ds]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.9  # restored afterwards


@pytest.mark.slow
def test_two_phase_transfer_with_real_weights_keeps_batchnorm_frozen(tmp_path):
    if not MOBILENET_025_FILE.is_file():
        pytest.skip(f"{MOBILENET_025_FILE} is absent")
    result = run("mobilenet_025", tmp_path, epochs=(1, 1), n_train=16, weights=str(MOBILENET_025_FILE))
    config = result.config
    assert config["pretrained"] and config["weights_used"] == str(MOBILENET_025_FILE)
    head, tune = config["phases"]
    assert (head["name"], tune["name"]) == ("head", "finetune")
    assert head["trainable_params"] == 256 * 2 + 2 < tune["trainable_params"] and tune["unfrozen_layers"] > 0
    bns = [layer for layer in result.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(layer.trainable for layer in bns)
    assert result.history["phase_name"].tolist() == ["head", "finetune"]


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt("simulated interruption")

    class Epochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen: list[int] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    with pytest.raises(KeyboardInterrupt):
        run("cnn", tmp_path, epochs=(3, 0), n_train=16, patience=10, callbacks=[Interrupt()])
    (interrupted,) = runs.list_runs(tmp_path, "toy", "cnn")
    assert json.loads((interrupted / "config.json").read_text())["status"] == "running"
    with pytest.raises(runs.RunNotFoundError):
        runs.latest_run(tmp_path, "toy", "cnn")  # an unfinished run is never LATEST

    epochs = Epochs()
    result = run("cnn", tmp_path, epochs=(3, 0), n_train=16, patience=10, callbacks=[epochs], resume=True)
    assert result.run_dir == interrupted and result.config["resumed"]
    assert epochs.seen == [1, 2]  # epoch 0 was restored, not re-run
    assert result.history["epoch"].tolist() == [0, 1, 2]
    assert runs.list_runs(tmp_path, "toy", "cnn") == [interrupted]


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, json
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from utils import training
        from tests.test_training import run
        from pathlib import Path
        assert training.get_strategy("auto").num_replicas_in_sync == 1  # two CPUs are not worth mirroring
        result = run("cnn", Path({str(tmp_path)!r}), epochs=(1, 0), strategy="mirrored", run_eagerly=False)
        print("RESULT" + json.dumps({{"replicas": result.config["replicas"], "strategy": result.config["strategy"],
                                     "status": result.config["status"], "rows": len(result.predictions)}}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=PROJECT_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result == {"replicas": 2, "strategy": "MirroredStrategy", "status": "complete", "rows": 32}


# ---------------------------------------------------------------------------------------------- runs
def test_run_folders_never_collide(tmp_path):
    now = 1_700_000_000.0
    made = [runs.new_run_dir(tmp_path, "folder:/x/y", "cnn", now=now) for _ in range(3)]
    stamp = made[0].name
    assert [p.name for p in made] == [stamp, f"{stamp}-1", f"{stamp}-2"]
    assert all(p.is_dir() for p in made) and made[0].parent.parent.parent == tmp_path / "runs"


def test_safe_names():
    assert runs.safe_name("kermany") == "kermany"
    odd = runs.safe_name("folder:/x/y")
    assert "/" not in odd and ":" not in odd and odd.startswith("folder_x_y-")
    assert odd != runs.safe_name("folder:/x_y")  # cleaned names differ by their hash
    with pytest.raises(ValueError):
        runs.safe_name("  ")


def test_latest_run_errors_and_listing(tmp_path):
    with pytest.raises(runs.RunNotFoundError, match=r"No run of cnn on kermany yet.*python -m utils train"):
        runs.latest_run(tmp_path, "kermany", "cnn")
    for model in ("vgg16", "cnn"):
        run_dir = runs.new_run_dir(tmp_path, "kermany", model)
        runs.save_json(run_dir / "config.json", {"model": model, "status": "complete"})
        runs.set_latest(run_dir)
    latest = runs.list_latest_runs(tmp_path, "kermany")
    assert [p.parent.name for p in latest] == ["cnn", "vgg16"]
    assert runs.latest_run(tmp_path, "kermany", "vgg16") == latest[1]
    assert runs.list_latest_runs(tmp_path, "other") == []
    assert runs.resolve_run_dir(latest[1].parent) == latest[1]  # a model folder gives its LATEST run
    assert runs.resolve_run_dir(latest[1]) == latest[1]  # a run folder is itself
    (latest[0].parent / "LATEST").write_text("gone\n")
    with pytest.raises(runs.RunNotFoundError, match="missing folder 'gone'"):
        runs.latest_run(tmp_path, "kermany", "cnn")
    with pytest.raises(FileNotFoundError, match="predictions.csv is missing"):
        _ = runs.load_run(latest[1]).predictions


def test_save_json_handles_numpy_paths_and_nan(tmp_path):
    path = runs.save_json(
        tmp_path / "a" / "x.json",
        {"n": np.int64(3), "v": np.array([1.5]), "p": tmp_path, "nan": float("nan")},
    )
    assert json.loads(path.read_text()) == {"n": 3, "v": [1.5], "p": str(tmp_path), "nan": None}
    assert not list(path.parent.glob(".*tmp"))  # the temporary file was renamed away

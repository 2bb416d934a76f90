"""Training: the callbacks (one validation AUC), compile-and-fit, the two phases of fine-tuning (what is frozen,
what changes), resuming after phase 1, and the learning curves read back from the CSV logs. Tiny in-memory data
(dark vs bright noise, 32 px) and MobileNet 0.25 with random weights keep it fast."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from keras import layers
from sklearn.metrics import roc_auc_score

from utils.course.config import PROFILES
from utils.course.weights import SHIPPED
from utils.data import Data
from utils.models import MOBILENET_025, build_cnn, build_transfer_model
from utils.training import (
    EpochLog,
    ValidationAUC,
    compile_and_fit,
    fit_two_phase,
    freeze_backbone,
    kept_epoch,
    kept_val_auc,
    make_callbacks,
    read_history,
    unfreeze_top,
)

SIZE = 32
CLASSES = ["dark", "bright"]


def toy_split(n: int, seed: int, shuffle: bool = False) -> tuple[tf.data.Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = (rng.uniform(0, 100, (n, SIZE, SIZE, 3)) + 150 * y[:, None, None, None]).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 2)))
    return (ds.shuffle(n, seed=seed) if shuffle else ds).batch(8), y


def toy_data(n_train: int = 24, n_eval: int = 12) -> Data:
    train, _ = toy_split(n_train, 0, shuffle=True)
    val, y_val = toy_split(n_eval, 1)
    test, _ = toy_split(n_eval, 2)
    manifest = pd.DataFrame({"path": [f"/toy/{i}.png" for i in range(n_train + 2 * n_eval)],
                             "label": [CLASSES[i % 2] for i in range(n_train)] + [CLASSES[k] for k in y_val] * 2,
                             "split": ["train"] * n_train + ["val"] * n_eval + ["test"] * n_eval})  # fmt: skip
    return Data(manifest, CLASSES, {0: 1.0, 1: 1.0}, train, val, test)


@pytest.fixture(scope="module")
def data() -> Data:
    return toy_data()


def weights_by_layer(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Every layer's weights, trainable and not (BatchNorm statistics included), copied."""
    return {layer.name: [np.array(w) for w in layer.weights] for layer in model.layers if layer.weights}


def mobilenet() -> keras.Model:
    """MobileNet 0.25 with the shipped ImageNet weights (random weights give it all-zero features at 32 px)."""
    keras.utils.set_random_seed(0)
    return build_transfer_model(MOBILENET_025, 2, SIZE, weights=str(SHIPPED / "mobilenet_2_5_224_tf_no_top.h5"))


# --- Phase 1 and phase 2: what trains ----------------------------------------------------------------------------


def test_freeze_backbone_trains_only_the_head(data, tmp_path):
    model = mobilenet()
    freeze_backbone(model)
    head = {"head_pool", "head_dropout", "head_output"}
    assert {layer.name for layer in model.layers if layer.trainable} == head
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"head_output"}
    before = weights_by_layer(model)
    compile_and_fit(model, data, tmp_path, epochs=1, learning_rate=0.05, patience=1, phase="head")
    after = weights_by_layer(model)
    changed = {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name], strict=True))}
    assert changed == {"head_output"}, f"phase 1 changed backbone layers: {sorted(changed - {'head_output'})[:5]}"


def test_unfreeze_top_trains_from_the_backbones_first_layer_with_batchnorm_frozen():
    model = mobilenet()
    freeze_backbone(model)
    unfreeze_top(model, "conv_dw_12")  # width 1.0's choice: the last two blocks
    names = [layer.name for layer in model.layers]
    start = names.index("conv_dw_12")
    for layer in model.layers[:start]:
        assert not layer.trainable, f"{layer.name} is below conv_dw_12: it must stay frozen"
    top = model.layers[start:]
    assert any(isinstance(layer, layers.BatchNormalization) for layer in top)
    for layer in top:
        assert layer.trainable == (not isinstance(layer, layers.BatchNormalization)), layer.name
    assert model.get_layer("head_output").trainable and model.get_layer("conv_pw_13").trainable
    assert not model.get_layer("conv_pw_11").trainable  # below conv_dw_12
    with pytest.raises(ValueError):
        unfreeze_top(model, "no_such_layer")


def test_mobilenet_025_fine_tunes_every_convolution():
    """Width 0.25 starts fine-tuning at its first convolution: every conv layer trains, no BatchNorm does."""
    model = mobilenet()
    freeze_backbone(model)
    unfreeze_top(model, MOBILENET_025.unfreeze_from)
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D)]
    assert len(convs) == 27 and all(layer.trainable for layer in convs)
    assert not any(layer.trainable for layer in model.layers if isinstance(layer, layers.BatchNormalization))


# --- Callbacks and one fit ---------------------------------------------------------------------------------------


def test_validation_auc_is_sklearns_auc_of_the_validation_predictions(data):
    model = build_cnn(2, SIZE, filters=(4,))
    callback = ValidationAUC(data.val)
    callback.set_model(model)
    np.testing.assert_array_equal(callback.y_true, np.arange(12) % 2)
    logs = {}
    callback.on_epoch_end(0, logs)
    probs = model.predict(data.val, verbose=0)
    assert logs["val_auc"] == pytest.approx(roc_auc_score(callback.y_true, probs[:, 1]))


def test_epoch_log_prints_one_line(capsys):
    log = EpochLog("head")
    log.set_params({"epochs": 12})
    log.on_epoch_begin(2)
    log.on_epoch_end(2, {"loss": 0.51234, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.5, "val_auc": 0.8766})
    out = capsys.readouterr().out
    assert out.startswith("epoch  3/12 head     loss 0.512 acc 0.750 | val loss 0.600 acc 0.500 AUC 0.877 | ")
    assert out.endswith(" s\n") and out.count("\n") == 1


def test_make_callbacks_read_the_validation_auc(data, tmp_path):
    callbacks = make_callbacks(data.val, tmp_path, patience=4, phase="head")
    kinds = [type(c) for c in callbacks]
    assert kinds[0] is ValidationAUC  # the others read the val_auc it adds
    early, plateau = (next(c for c in callbacks if isinstance(c, k))
                      for k in (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau))  # fmt: skip
    assert (early.monitor, early.mode, early.patience, early.restore_best_weights) == ("val_auc", "max", 4, True)
    assert (plateau.monitor, plateau.mode, plateau.patience) == ("val_auc", "max", 2)
    assert make_callbacks(data.val, tmp_path, patience=1, phase="x")[2].patience == 1
    logger = next(c for c in callbacks if isinstance(c, keras.callbacks.CSVLogger))
    assert str(logger.filename) == str(tmp_path / "history-head.csv")
    backup = next(c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore))
    assert str(backup.backup_dir) == str(tmp_path / "backup" / "head")


def test_compile_and_fit_logs_every_epoch_with_the_auc(data, tmp_path, capsys):
    keras.utils.set_random_seed(1)
    model = build_cnn(2, SIZE, filters=(4, 8))
    weighted = replace(data, class_weight={0: 3.0, 1: 0.5})
    passed, fit = {}, model.fit
    model.fit = lambda *args, **kwargs: passed.update(kwargs) or fit(*args, **kwargs)  # records what fit was given
    history = compile_and_fit(model, weighted, tmp_path, epochs=2, learning_rate=1e-2, patience=5, first_epoch=3)
    assert passed["class_weight"] == {0: 3.0, 1: 0.5} and passed["validation_data"] is data.val
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-2)  # Adam at the rate given
    assert history.epoch == [3, 4]
    table = read_history(tmp_path)
    assert table["epoch"].tolist() == [3, 4] and table["phase"].tolist() == ["train", "train"]
    np.testing.assert_allclose(table["val_auc"], history.history["val_auc"], rtol=1e-5)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:13] for line in lines] == ["epoch  4/5 tr", "epoch  5/5 tr"]


# --- Two phases ----------------------------------------------------------------------------------------------------


def profile(**changes):
    return replace(PROFILES["smoke"], **({"image_size": SIZE, "head_epochs": 1, "finetune_epochs": 1} | changes))


def recording_fit(log: list):
    """A stand-in for compile_and_fit that records what each phase trains, and logs one epoch."""

    def fit(model, data, run_dir, *, epochs, learning_rate, patience, phase="train", first_epoch=0):
        log.append({"phase": phase, "lr": learning_rate, "epochs": epochs, "first_epoch": first_epoch,
                    "trainable": {layer.name for layer in model.layers if layer.trainable}})  # fmt: skip
        rows = pd.DataFrame({"epoch": range(first_epoch, first_epoch + epochs), "val_auc": 0.5 + 0.1 * len(log)})
        rows.to_csv(run_dir / f"history-{phase}.csv", index=False)

    return fit


def test_fit_two_phase_pretrained_freezes_then_unfreezes_the_top(tmp_path, monkeypatch):
    import utils.training as training

    log: list[dict] = []
    monkeypatch.setattr(training, "compile_and_fit", recording_fit(log))
    model = mobilenet()
    fit_two_phase(model, MOBILENET_025, None, tmp_path, profile(head_epochs=2, finetune_epochs=3, learning_rate=0.004), pretrained=True)
    names = [layer.name for layer in model.layers]
    start = names.index(MOBILENET_025.unfreeze_from)
    top = {layer.name for layer in model.layers[start:] if not isinstance(layer, layers.BatchNormalization)}
    assert [entry["phase"] for entry in log] == ["head", "finetune"]
    assert log[0]["trainable"] == {"head_pool", "head_dropout", "head_output"}
    assert log[1]["trainable"] == top
    assert (log[0]["lr"], log[0]["epochs"], log[0]["first_epoch"]) == (0.004, 2, 0)
    assert (log[1]["lr"], log[1]["epochs"], log[1]["first_epoch"]) == (pytest.approx(0.0004), 3, 2)
    assert (tmp_path / "head.weights.h5").is_file()
    assert read_history(tmp_path)["epoch"].tolist() == [0, 1, 2, 3, 4]


def test_fit_two_phase_random_weights_trains_everything(tmp_path, monkeypatch):
    import utils.training as training

    log: list[dict] = []
    monkeypatch.setattr(training, "compile_and_fit", recording_fit(log))
    model = mobilenet()
    fit_two_phase(model, MOBILENET_025, None, tmp_path, profile(), pretrained=False)
    everything = {layer.name for layer in model.layers}
    assert [entry["trainable"] for entry in log] == [everything, everything]
    assert all(layer.momentum == 0.9 for layer in model.layers if isinstance(layer, layers.BatchNormalization))


def test_fit_two_phase_resumed_after_phase_1_skips_it(tmp_path, monkeypatch):
    """A run interrupted in phase 2: phase 1's weights are reloaded, its epochs are not trained again, and phase 2's
    epochs are numbered after them."""
    import utils.training as training

    saved = mobilenet()
    saved.get_layer("head_output").set_weights([np.full((256, 2), 0.25, np.float32), np.array([1.0, -1.0], np.float32)])
    saved.save_weights(tmp_path / "head.weights.h5")
    pd.DataFrame({"epoch": [0, 1, 2], "val_auc": [0.5, 0.6, 0.7]}).to_csv(tmp_path / "history-head.csv", index=False)
    log: list[dict] = []
    monkeypatch.setattr(training, "compile_and_fit", recording_fit(log))
    model = mobilenet()
    fit_two_phase(model, MOBILENET_025, None, tmp_path, profile(head_epochs=3, finetune_epochs=1), pretrained=True)
    assert [(e["phase"], e["first_epoch"]) for e in log] == [("finetune", 3)]
    np.testing.assert_array_equal(model.get_layer("head_output").get_weights()[1], [1.0, -1.0])
    assert read_history(tmp_path)["phase"].tolist() == ["head"] * 3 + ["finetune"]


# --- Reading the logs ----------------------------------------------------------------------------------------------


def test_read_history_joins_phases_and_drops_a_resumed_epoch(tmp_path):
    pd.DataFrame({"epoch": [0, 1], "val_auc": [0.6, 0.7]}).to_csv(tmp_path / "history-head.csv", index=False)
    pd.DataFrame({"epoch": [2, 3, 3], "val_auc": [0.65, 0.66, 0.8]}).to_csv(tmp_path / "history-finetune.csv", index=False)
    (tmp_path / "history-train.csv").write_text("")  # an empty log (a run stopped before its first epoch)
    table = read_history(tmp_path)
    assert table["epoch"].tolist() == [0, 1, 2, 3]
    assert table["phase"].tolist() == ["head", "head", "finetune", "finetune"]
    assert table["val_auc"].tolist() == [0.6, 0.7, 0.65, 0.8]  # the epoch logged twice: its last line
    assert read_history(tmp_path, "head")["val_auc"].tolist() == [0.6, 0.7]
    assert kept_val_auc(tmp_path, "head") == 0.7 and kept_val_auc(tmp_path, "finetune") == 0.8
    assert kept_val_auc(tmp_path, "train") == float("-inf")
    pd.DataFrame({"epoch": [0, 1, 2], "val_auc": [0.90, 0.95, 0.9505]}).to_csv(tmp_path / "history-head.csv", index=False)
    assert kept_val_auc(tmp_path, "head") == 0.95  # EarlyStopping kept epoch 1: epoch 2 gained less than min_delta
    assert read_history(tmp_path / "nothing").empty


@pytest.mark.parametrize(("finetune_auc", "kept_weight"), [(0.7, 1.0), (0.95, 2.0)])
def test_fit_two_phase_keeps_the_better_phase(finetune_auc, kept_weight, tmp_path, monkeypatch):
    """The choice between the phases, with the fits replaced: when phase 2 scores lower than phase 1 (0.9), phase 1's
    weights come back; when higher, phase 2's stay."""
    import utils.training as training

    model = build_cnn(2, SIZE, filters=(4,))
    marks = {}

    def fake_fit(model, data, run_dir, *, epochs, learning_rate, patience, phase="train", first_epoch=0):
        auc = {"head": 0.9, "finetune": finetune_auc}[phase]
        pd.DataFrame({"epoch": [first_epoch], "val_auc": [auc]}).to_csv(run_dir / f"history-{phase}.csv", index=False)
        marks[phase] = learning_rate
        model.get_layer("head_output").set_weights([np.full((4, 2), {"head": 1.0, "finetune": 2.0}[phase]), np.zeros(2)])

    monkeypatch.setattr(training, "compile_and_fit", fake_fit)
    backbone = SimpleNamespace(unfreeze_from="block1_conv1")
    fit_two_phase(model, backbone, None, tmp_path, profile(learning_rate=0.002), pretrained=True)
    assert marks == {"head": 0.002, "finetune": pytest.approx(0.0002)}  # phase 2 at a 10x smaller rate
    np.testing.assert_array_equal(model.get_layer("head_output").get_weights()[0], kept_weight)


@pytest.mark.parametrize("aucs", [[0.90, 0.95, 0.9505, 0.9508, 0.94], [0.5, 0.6, 0.7], [0.8, 0.8, 0.8],
                                  [0.90, 0.9009, 0.9018, 0.9027, 0.9036]])  # fmt: skip
def test_kept_epoch_is_the_epoch_early_stopping_restores(aucs, tmp_path):
    """The course's EarlyStopping (from make_callbacks) fed these validation AUCs, with the model's one weight set to
    the epoch number: the weight it restores at the end is the epoch kept_epoch names."""
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 1)), np.eye(2))).batch(2)
    [stopping] = [c for c in make_callbacks(ds, tmp_path, patience=99, phase="t")
                  if isinstance(c, keras.callbacks.EarlyStopping)]  # fmt: skip
    model = keras.Sequential([keras.Input((1,)), layers.Dense(1, use_bias=False)])
    stopping.set_model(model)
    stopping.on_train_begin()
    for epoch, auc in enumerate(aucs):
        model.set_weights([np.full((1, 1), float(epoch))])
        stopping.on_epoch_end(epoch, {"val_auc": auc})
    stopping.on_train_end()
    assert kept_epoch(aucs) == int(model.get_weights()[0][0, 0])
    assert kept_epoch([0.90, 0.95, 0.9505]) == 1 != int(np.argmax([0.90, 0.95, 0.9505]))  # the highest is not kept

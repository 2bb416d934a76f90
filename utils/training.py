"""Training (notebooks 04 and 05): the callbacks, one compile-and-fit, and the two-phase fine-tuning recipe.

One AUC everywhere: :class:`ValidationAUC` computes scikit-learn's ROC-AUC of the validation predictions after
every epoch (:func:`utils.metrics.roc_auc`: of p(class 1) for two classes, the macro average of one-vs-rest AUCs
for more) and adds it to the logs as ``val_auc``, which early stopping, the learning-rate schedule and the choice
between the two phases all read. Training prints one line per epoch, numbered across both phases.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers

from .data import Data
from .metrics import roc_auc
from .models import Backbone


# saved in utils/training.py
class ValidationAUC(keras.callbacks.Callback):
    """Adds ``val_auc`` to the logs after every epoch: the course's one AUC, on the validation predictions."""

    def __init__(self, val_ds: tf.data.Dataset) -> None:
        super().__init__()
        self.val_ds = val_ds
        self.y_true = np.concatenate([np.argmax(labels, axis=1) for _, labels in val_ds])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probs = self.model.predict(self.val_ds, verbose=0)
        logs["val_auc"] = roc_auc(self.y_true, probs)


# saved in utils/training.py
class EpochLog(keras.callbacks.Callback):
    """One short line per epoch, numbered across phases: losses, accuracies and the validation AUC."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.start
        print(f"epoch {epoch + 1:>2}/{self.params['epochs']} {self.phase:<8} loss {logs['loss']:.3f} "
              f"acc {logs['accuracy']:.3f} | val loss {logs['val_loss']:.3f} acc {logs['val_accuracy']:.3f} "
              f"AUC {logs['val_auc']:.3f} | {seconds:.0f} s")  # fmt: skip


# saved in utils/training.py
def make_callbacks(val_ds: tf.data.Dataset, run_dir: Path, patience: int, phase: str) -> list[keras.callbacks.Callback]:
    """The callbacks of one training phase; ``ValidationAUC`` first, because the others read its ``val_auc``."""
    return [
        ValidationAUC(val_ds),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=patience, min_delta=0.001,  # a real gain
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.3, patience=max(1, patience // 2)),
        keras.callbacks.CSVLogger(run_dir / f"history-{phase}.csv", append=True),  # the learning curves
        keras.callbacks.BackupAndRestore(run_dir / "backup" / phase),  # an interrupted run resumes from here
        EpochLog(phase),
    ]


# saved in utils/training.py
def kept_epoch(val_aucs: list[float], min_delta: float = 0.001) -> int:
    """The epoch (0-based) whose weights EarlyStopping restores: the last one that beat the best AUC before it by at
    least ``min_delta`` (``make_callbacks``'s gain), not necessarily the highest AUC."""
    kept = 0
    for epoch, auc in enumerate(val_aucs):
        if auc - min_delta > val_aucs[kept]:
            kept = epoch
    return kept


# saved in utils/training.py
def compile_and_fit(
    model: keras.Model,
    data: Data,
    run_dir: Path,
    *,
    epochs: int,
    learning_rate: float,
    patience: int,
    phase: str = "train",
    first_epoch: int = 0,
) -> keras.callbacks.History:
    """Adam and cross-entropy, then ``fit`` on the training split with class weights, validating every epoch."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy", metrics=["accuracy"])
    return model.fit(
        data.train,
        validation_data=data.val,
        epochs=first_epoch + epochs,
        initial_epoch=first_epoch,
        class_weight=data.class_weight,
        callbacks=make_callbacks(data.val, run_dir, patience, phase),
        verbose=0,
    )


# saved in utils/training.py
def freeze_backbone(model: keras.Model) -> None:
    """Phase 1: only the new head (the ``head_*`` layers) trains; the ImageNet features stay as they are."""
    for layer in model.layers:
        layer.trainable = layer.name.startswith("head_")


# saved in utils/training.py
def unfreeze_top(model: keras.Model, first_layer: str) -> None:
    """Phase 2: ``first_layer`` and every layer above it train, except BatchNormalization layers: frozen, they
    run in inference mode and keep their ImageNet statistics, which small batches of X-rays would wreck."""
    names = [layer.name for layer in model.layers]
    for layer in model.layers[names.index(first_layer):]:
        layer.trainable = not isinstance(layer, layers.BatchNormalization)


# saved in utils/training.py
def fit_two_phase(model: keras.Model, backbone: Backbone, data: Data, run_dir: Path, profile, pretrained: bool) -> None:
    """Phase 1 trains the new head on the frozen backbone; phase 2 also the backbone's top layers, at a 10x
    smaller learning rate. Phase 1's weights stay when fine-tuning does not raise the validation AUC. Random
    weights have nothing to protect: then both phases train every layer."""
    if pretrained:
        freeze_backbone(model)
    else:
        for layer in model.layers:  # BatchNorm statistics must follow the fast-changing random-start weights
            layer.trainable = True
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = 0.9
    head_file = run_dir / "head.weights.h5"
    if head_file.is_file():  # a resumed run: phase 1 had finished
        model.load_weights(head_file)
    else:
        compile_and_fit(model, data, run_dir, epochs=profile.head_epochs, learning_rate=profile.learning_rate,
                        patience=profile.patience, phase="head")  # fmt: skip
        model.save_weights(head_file)
    if pretrained:
        unfreeze_top(model, backbone.unfreeze_from)
    compile_and_fit(model, data, run_dir, epochs=profile.finetune_epochs, learning_rate=profile.learning_rate / 10,
                    patience=profile.patience, phase="finetune", first_epoch=len(read_history(run_dir, "head")))  # fmt: skip
    if kept_val_auc(run_dir, "finetune") < kept_val_auc(run_dir, "head"):
        model.load_weights(head_file)


def read_history(run_dir: Path, phase: str | None = None) -> pd.DataFrame:
    """The learning curves of one phase, or of every phase in order (``phase`` column), from the CSV logs."""
    phases = [phase] if phase else ["train", "head", "finetune"]
    frames = [pd.read_csv(f).assign(phase=p) for p in phases if (f := Path(run_dir) / f"history-{p}.csv").is_file()
              and f.stat().st_size]  # fmt: skip
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["epoch", "phase"])
    return table.drop_duplicates("epoch", keep="last").reset_index(drop=True)  # a resumed epoch is logged twice


def kept_val_auc(run_dir: Path, phase: str) -> float:
    """The validation AUC of the weights one phase kept: its ``kept_epoch``'s (-inf when it ran no epoch)."""
    history = read_history(run_dir, phase)
    if history.empty:
        return float("-inf")
    aucs = history["val_auc"].tolist()
    return float(aucs[kept_epoch(aucs)])

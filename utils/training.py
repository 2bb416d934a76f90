"""Training: phases, callbacks, distribution strategy and the run artefacts.

:func:`train_run` is the one function the notebooks and ``python -m utils train`` call. It trains in two
phases and writes a run folder (see :mod:`utils.runs`):

- **Pretrained backbone** (ImageNet or a weights file): phase 1 ``head`` trains the head with the backbone
  frozen; phase 2 ``finetune`` unfreezes the top part of the backbone (``unfreeze``: a fraction of its layers,
  or a number of layers) at a 10x smaller learning rate. BatchNormalization layers stay frozen in phase 2
  (``trainable=False`` = inference mode in Keras 3), so the small fine-tuning batches do not wreck their
  ImageNet statistics.
- **Random weights** (the custom CNN, ``weights=none``, or ``auto`` without ImageNet weights): freezing a
  random backbone would train a head on random features, so phase 1 ``all_layers`` trains the whole network
  and phase 2 ``all_layers_low_lr`` continues at the 10x smaller learning rate. BatchNormalization layers train
  in both phases (momentum 0.9, set by :func:`utils.models.build_model`), and their moving statistics are
  re-estimated on training batches before every validation (:class:`BatchNormRecalibration`, "precise BN").
  Measured: a MobileNet trained from random weights predicted a single class on validation for 4 epochs
  (peer run, momentum 0.99); in the tests' tiny bright-vs-dark problem it still does with momentum 0.9 alone
  (validation accuracy 0.5), and no longer does with the re-estimation.

Each phase: Adam, categorical cross-entropy (optional label smoothing), metrics accuracy and ``auc``;
callbacks ModelCheckpoint (weights of the best ``val_auc`` over both phases; ``model.keras`` is saved from them
when the run ends), EarlyStopping (restores the phase's best weights), ReduceLROnPlateau, CSVLogger, BackupAndRestore (an interrupted run resumes with
``resume=True``) and optionally TensorBoard. After training, the model holds the best checkpoint's weights.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from .config import PROJECT_ROOT, Profile, get_profile
from .models import BuiltModel, build_model, count_params, resolve_name
from .runs import list_runs, load_json, new_run_dir, save_json, set_latest

DEFAULT_LEARNING_RATE = 1e-3
FINETUNE_LR_FACTOR = 0.1
DEFAULT_UNFREEZE = 0.3  # top 30 % of the backbone layers in phase 2
MONITOR = "val_auc"
BEST_WEIGHTS = "backup/best.weights.h5"  # the checkpoint; model.keras is written from it when the run ends
PHASE_NAMES = {True: ("head", "finetune"), False: ("all_layers", "all_layers_low_lr")}


@dataclass
class RunResult:
    """What :func:`train_run` produced: the run folder, its history (with a ``phase`` column) and the model."""

    run_dir: Path
    history: pd.DataFrame
    built: BuiltModel
    config: dict[str, Any]
    predictions: pd.DataFrame | None = None
    metrics: dict[str, Any] | None = None

    @property
    def model(self) -> keras.Model:
        return self.built.model


# ------------------------------------------------------------------------------------------- strategy
def pick_strategy_kind(tpu_found: bool, n_gpus: int) -> str:
    """``"tpu"`` when a TPU answered, ``"mirrored"`` for more than one GPU, else ``"default"``."""
    if tpu_found:
        return "tpu"
    return "mirrored" if n_gpus > 1 else "default"


@functools.cache
def _tpu_resolver() -> Any | None:
    """A connected TPU cluster resolver on Colab/Cloud TPUs, else None (never probes a plain machine).

    Cached: the TPU system is initialised once per process, not once per run.
    """
    if not (os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or glob.glob("/dev/accel*")):
        return None
    try:
        addr = os.environ.get("COLAB_TPU_ADDR")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=f"grpc://{addr}" if addr else os.environ.get("TPU_NAME", "local")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        print(f"Note: a TPU seemed present but could not be used ({err}); continuing without it.")
        return None


def get_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy: ``auto`` = TPU if present, MirroredStrategy for >1 GPU, else default.

    ``mirrored`` forces a MirroredStrategy over all GPUs, or over all logical CPUs when there is no GPU
    (used by the tests with two logical CPU devices); ``default`` is the no-op single-device strategy.
    """
    kind = kind.lower()
    if kind == "auto":
        resolver = _tpu_resolver()
        kind = pick_strategy_kind(resolver is not None, len(tf.config.list_logical_devices("GPU")))
        if kind == "tpu":
            return tf.distribute.TPUStrategy(resolver)
    if kind == "tpu":
        resolver = _tpu_resolver()
        if resolver is None:
            raise RuntimeError("No TPU found: choose a TPU runtime (Colab: Runtime > Change runtime type).")
        return tf.distribute.TPUStrategy(resolver)
    if kind == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices)
    if kind == "default":
        return tf.distribute.get_strategy()
    raise ValueError(f"Unknown strategy {kind!r}: use auto, default, mirrored or tpu.")


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[str]:
    """Set Keras' global dtype policy (``mixed_float16`` or ``float32``) inside the block, then restore it."""
    previous = keras.config.dtype_policy()
    policy = "mixed_float16" if mixed else "float32"
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------------------------------------- phases
def freeze_backbone(built: BuiltModel) -> None:
    """Phase 1 of a pretrained model: backbone frozen, head trainable."""
    names = set(built.backbone_layer_names)
    for layer in built.model.layers:
        layer.trainable = layer.name not in names


def unfreeze_all(built: BuiltModel) -> None:
    """Every layer trainable (BatchNormalization included): training from random weights."""
    for layer in built.model.layers:
        layer.trainable = True


def unfreeze_top(
    built: BuiltModel, amount: float | int = DEFAULT_UNFREEZE, keep_bn_frozen: bool = True
) -> list[str]:
    """Phase 2 of a pretrained model: unfreeze the top of the backbone; returns the names made trainable.

    ``amount``: a float in (0, 1] is a fraction of the backbone layers (rounded up), an int is a number of
    layers (``1`` = one layer, ``1.0`` = all). BatchNormalization layers stay frozen (inference mode) when
    ``keep_bn_frozen``. Layers below the unfrozen part stay frozen; the head stays trainable.
    """
    names = list(built.backbone_layer_names)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"unfreeze must be a fraction (float) or a number of layers (int), got {amount!r}.")
    if isinstance(amount, float):
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"A fraction of layers to unfreeze must be in [0, 1], got {amount}.")
        count = math.ceil(amount * len(names))
    else:
        if amount < 0:
            raise ValueError(f"The number of layers to unfreeze must be >= 0, got {amount}.")
        count = min(amount, len(names))
    freeze_backbone(built)
    unfrozen = []
    for name in names[len(names) - count :]:
        layer = built.model.get_layer(name)
        if keep_bn_frozen and isinstance(layer, keras.layers.BatchNormalization):
            continue
        layer.trainable = True
        unfrozen.append(name)
    return unfrozen


def compile_model(
    model: keras.Model, learning_rate: float, label_smoothing: float = 0.0, **kwargs: Any
) -> None:
    """Adam + categorical cross-entropy, metrics ``accuracy`` and ``auc`` (recompile after changing trainable)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
        **kwargs,
    )


def recalibrate_batchnorm(model: keras.Model, ds: tf.data.Dataset, max_batches: int = 20) -> int:
    """Re-estimate the moving mean/variance of the trainable BatchNormalization layers ("precise BN").

    Runs up to ``max_batches`` batches of ``ds`` through the model in training mode with the momentum set so
    that each moving statistic becomes the plain average of the batch statistics. Frozen BN layers (inference
    mode) are left alone. Returns the number of batches used (0 when no BN layer is trainable).
    """
    bns = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not bns or max_batches <= 0:
        return 0
    momenta = [layer.momentum for layer in bns]
    used = 0
    try:
        for batch in ds.take(max_batches):
            used += 1
            for layer in bns:
                layer.momentum = 1.0 - 1.0 / used  # running average: batch 1 replaces, batch n weighs 1/n
            model(batch[0], training=True)
    finally:
        for layer, momentum in zip(bns, momenta, strict=True):
            layer.momentum = momentum
    return used


class BatchNormRecalibration(keras.callbacks.Callback):
    """Before each validation, :func:`recalibrate_batchnorm` on training batches (random-weight runs).

    Trained from random weights for a few hundred steps, the BN moving averages lag behind the quickly
    changing activations, and the model in inference mode can output one constant prediction (measured on
    MobileNet 0.25: validation accuracy 0.5, all one class, while training-mode accuracy was 0.78; after
    recalibration 0.78). Recalibrating makes validation, checkpoints and the saved model use exact statistics.
    """

    def __init__(self, ds: tf.data.Dataset, max_batches: int = 20) -> None:
        super().__init__()
        self.ds, self.max_batches = ds, max_batches

    def on_test_begin(self, logs: Any = None) -> None:
        recalibrate_batchnorm(self.model, self.ds, self.max_batches)


class _Throughput(keras.callbacks.Callback):
    """Seconds spent in training batches (validation excluded), summed over epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.train_seconds = 0.0
        self.epochs = 0
        self._start: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def _stop(self) -> None:
        if self._start is not None:
            self.train_seconds += time.perf_counter() - self._start
            self.epochs += 1
            self._start = None

    def on_test_begin(self, logs: Any = None) -> None:
        self._stop()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._stop()


def make_callbacks(
    run_dir: Path,
    phase: int,
    patience: int,
    best_so_far: float | None = None,
    tensorboard: bool = False,
    verbose: int = 1,
) -> list[keras.callbacks.Callback]:
    """The callbacks of one phase, writing into ``run_dir`` (see the module docstring)."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [
        # first, so that the learning rate it adds to the logs reaches the CSV file
        keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, mode="max", factor=0.3, patience=max(1, patience // 2), min_lr=1e-7
        ),
        keras.callbacks.CSVLogger(str(logs / f"history_phase{phase}.csv"), append=True),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / BEST_WEIGHTS),
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            save_weights_only=True,  # a weights file saves and loads several times faster than a .keras archive
            initial_value_threshold=best_so_far,
            verbose=min(verbose, 1),
        ),
        keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=patience, restore_best_weights=True, verbose=min(verbose, 1)
        ),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup" / f"phase{phase}")),
    ]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(logs / "tensorboard" / f"phase{phase}")))
    return callbacks


def read_history(run_dir: Path, phase_names: Sequence[str] = ()) -> pd.DataFrame:
    """The per-phase CSV logs merged into one table with ``phase`` (1, 2) and ``phase_name`` columns."""
    frames = []
    for phase in (1, 2):
        path = run_dir / "logs" / f"history_phase{phase}.csv"
        if path.is_file() and path.stat().st_size > 0:
            frame = pd.read_csv(path).drop_duplicates("epoch", keep="last")  # a resumed epoch is logged twice
            frame.insert(0, "phase_name", phase_names[phase - 1] if len(phase_names) >= phase else "")
            frame.insert(0, "phase", phase)
            frames.append(frame)
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["phase", "phase_name", "epoch"])
    )


def _best(history: pd.DataFrame) -> float | None:
    if MONITOR not in history or history[MONITOR].dropna().empty:
        return None
    return float(history[MONITOR].max())


# ----------------------------------------------------------------------------------------- predictions
def predict_split(
    model: keras.Model, ds: tf.data.Dataset, manifest_rows: pd.DataFrame, class_names: Sequence[str]
) -> pd.DataFrame:
    """Probabilities for every image of ``ds`` as ``path, split, label, p_<CLASS>...`` (manifest order).

    ``ds`` yields ``(images, one-hot labels)`` in the order of ``manifest_rows`` (an unshuffled evaluation
    dataset); its labels are checked against the manifest's, so a mismatched order fails loudly. The table's
    ``attrs["images_per_s"]`` holds the inference speed (including any graph tracing on a first call).
    """
    y = np.concatenate([np.asarray(labels).argmax(axis=-1) for labels in ds.map(lambda *batch: batch[1])])
    expected = manifest_rows["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy()
    if len(y) != len(manifest_rows):
        raise ValueError(
            f"The dataset has {len(y)} images but the manifest rows {len(manifest_rows)}: build the dataset "
            "from the same (limited) manifest."
        )
    if not np.array_equal(expected, y):
        raise ValueError(
            "The dataset's labels are not in the manifest's order: use an unshuffled evaluation dataset built "
            "from these manifest rows (make_dataset(..., training=False))."
        )
    start = time.perf_counter()
    probs = np.asarray(model.predict(ds.map(lambda *batch: batch[0]), verbose=0), dtype=np.float64)
    seconds = time.perf_counter() - start
    table = pd.DataFrame(
        {
            "path": manifest_rows["path"].astype(str).to_numpy(),
            "split": manifest_rows["split"].to_numpy() if "split" in manifest_rows else "",
            "label": manifest_rows["label"].to_numpy(),
        }
    )
    for k, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, k]
    table.attrs["images_per_s"] = len(table) / seconds if seconds > 0 else None
    return table


def compute_split_metrics(predictions: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics per split of a predictions table: ``utils.evaluation.compute_metrics`` (sklearn inside)."""
    from .evaluation import compute_metrics, to_jsonable

    result = {}
    for split, rows in predictions.groupby("split", sort=False):
        y = rows["label"].map({c: i for i, c in enumerate(class_names)}).to_numpy(int)
        probs = rows[[f"p_{c}" for c in class_names]].to_numpy(float)
        result[str(split)] = to_jsonable(compute_metrics(y, probs, list(class_names)))
    return result


# --------------------------------------------------------------------------------------------- helpers
def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The checked-out commit (``-dirty`` when files changed), or ``"unknown"``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


ClassWeight = Mapping[Any, float] | Sequence[float] | str | None


def resolve_class_weight(
    class_weight: ClassWeight, class_names: Sequence[str], manifest: pd.DataFrame | None = None
) -> dict[int, float] | None:
    """Keras' ``{class index: weight}`` from a dict keyed by index or class name, a list in class order, or
    ``"balanced"`` (sklearn's n / (C * n_class) over the manifest's train rows, via ``utils.pipeline``)."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be a dict, a list, 'balanced' or None, got {class_weight!r}."
            )
        if manifest is None:
            raise ValueError("class_weight='balanced' needs the manifest (its train rows are counted).")
        from .pipeline import class_weights

        return class_weights(manifest.loc[manifest["split"] == "train", "label"], class_names)
    items = class_weight.items() if isinstance(class_weight, Mapping) else enumerate(class_weight)
    result = {}
    for key, value in items:
        if isinstance(key, str) and key not in class_names:
            raise ValueError(f"class_weight key {key!r} is not a class of {list(class_names)}.")
        index = class_names.index(key) if isinstance(key, str) else int(key)
        if not 0 <= index < len(class_names):
            raise ValueError(f"class_weight key {key!r} is not a class of {list(class_names)}.")
        result[index] = float(value)
    return result


def _count_images(ds: tf.data.Dataset) -> int:
    return int(ds.reduce(np.int64(0), lambda n, batch: n + tf.cast(tf.shape(batch[1])[0], tf.int64)))


def _resumable_run(output_dir: Path, dataset: str, model: str) -> Path | None:
    """The newest run folder of ``model`` whose config says it is still running (interrupted)."""
    for run_dir in reversed(list_runs(output_dir, dataset, model)):
        config = run_dir / "config.json"
        if config.is_file() and load_json(config).get("status") == "running":
            return run_dir
    return None


# ------------------------------------------------------------------------------------------- train_run
@dataclass
class PhasePlan:
    """One training phase: which layers train, for how many epochs, at which learning rate."""

    phase: int
    name: str
    epochs: int
    learning_rate: float

    def apply(self, built: BuiltModel, pretrained: bool, unfreeze: float | int) -> dict[str, Any]:
        """Set the layers' ``trainable`` flags for this phase; returns a summary for config.json."""
        summary: dict[str, Any] = {"phase": self.phase, "name": self.name, "epochs": self.epochs}
        summary["learning_rate"] = self.learning_rate
        if not pretrained:
            unfreeze_all(built)
        elif self.phase == 1:
            freeze_backbone(built)
        else:
            summary["unfrozen_layers"] = len(unfreeze_top(built, unfreeze))
        return summary | {"trainable_params": count_params(built.model)["trainable"]}


def plan_phases(
    pretrained: bool,
    epochs: tuple[int, int],
    learning_rate: float,
    finetune_lr_factor: float = FINETUNE_LR_FACTOR,
) -> list[PhasePlan]:
    """The two phases: ``head``/``finetune`` for a pretrained backbone, else ``all_layers``/``all_layers_low_lr``."""
    names = PHASE_NAMES[pretrained]
    rates = (learning_rate, learning_rate * finetune_lr_factor)
    return [PhasePlan(k + 1, names[k], int(epochs[k]), rates[k]) for k in (0, 1)]


def train_run(
    model_name: str,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    *,
    class_names: Sequence[str],
    dataset: str,
    profile: Profile | str | None = None,
    weights: str | None = None,
    epochs: tuple[int, int] | None = None,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    finetune_lr_factor: float = FINETUNE_LR_FACTOR,
    unfreeze: float | int = DEFAULT_UNFREEZE,
    class_weight: ClassWeight = None,
    label_smoothing: float = 0.0,
    output_dir: str | Path | None = None,
    seed: int = 42,
    test_ds: tf.data.Dataset | None = None,
    manifest: pd.DataFrame | None = None,
    image_size: int | None = None,
    patience: int | None = None,
    dropout: float = 0.3,
    alpha: float | None = None,
    strategy: str | tf.distribute.Strategy = "auto",
    mixed_precision: bool | None = None,
    run_eagerly: bool | None = None,
    bn_recalibration_batches: int = 20,
    tensorboard: bool = False,
    resume: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
    extra_config: Mapping[str, Any] | None = None,
) -> RunResult:
    """Build ``model_name``, train it in two phases and write a complete run folder.

    ``profile`` (a Profile or its name; default ``$CXR_PROFILE``) gives the defaults for ``image_size``,
    ``epochs`` (head, finetune), ``patience`` and ``weights`` (after ``$CXR_WEIGHTS``). ``manifest`` (the same, possibly limited,
    manifest the datasets were built from) gives the paths and labels of ``predictions.csv`` for the val and
    test splits, in the datasets' order; without it no predictions/metrics are written. ``class_weight``: a dict
    by class index or name, a list in class order, or ``"balanced"`` (:func:`resolve_class_weight`).
    ``mixed_precision`` defaults to True on a GPU. Random-weight runs re-estimate BatchNorm statistics on
    ``bn_recalibration_batches`` training batches before each validation (:class:`BatchNormRecalibration`).
    ``run_eagerly`` (default: True in the ``smoke`` profile only) skips graph tracing: each step is slower, but
    tracing a big model costs tens of seconds on a CPU, so a run of a few steps is 2-3x faster eagerly. ``resume=True`` continues the newest interrupted run of this model and dataset from its last
    finished epoch instead of starting a new one. ``callbacks`` are added to every phase.
    """
    started = time.time()
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    class_names = list(class_names)
    size = image_size or prof.image_size
    epochs = epochs if epochs is not None else (prof.epochs_head, prof.epochs_finetune)
    patience = prof.patience if patience is None else patience
    output_dir = Path(output_dir) if output_dir is not None else _default_output_dir()
    _, _, canonical = resolve_name(model_name, alpha)
    cw = resolve_class_weight(class_weight, class_names, manifest)
    _check_image_size(train_ds, size)

    run_eagerly = prof.name == "smoke" if run_eagerly is None else run_eagerly
    keras.utils.set_random_seed(seed)
    dist = get_strategy(strategy) if isinstance(strategy, str) else strategy
    mixed = bool(tf.config.list_physical_devices("GPU")) if mixed_precision is None else mixed_precision
    resumed = _resumable_run(output_dir, dataset, canonical) if resume else None
    run_dir = resumed or new_run_dir(output_dir, dataset, canonical)
    with precision_policy(mixed), dist.scope():
        built = build_model(
            model_name,
            len(class_names),
            size,
            weights or os.environ.get("CXR_WEIGHTS") or prof.weights,
            dropout=dropout,
            seed=seed,
            alpha=alpha,
        )
    pretrained = built.is_transfer and built.pretrained
    # eager BatchNorm re-estimation is not attempted on TPUs (untested there)
    recalibrate = (
        not pretrained and bn_recalibration_batches > 0 and not isinstance(dist, tf.distribute.TPUStrategy)
    )
    plans = plan_phases(pretrained, epochs, learning_rate, finetune_lr_factor)
    config: dict[str, Any] = {
        "status": "running",
        "model": built.name,
        "dataset": dataset,
        "class_names": class_names,
        "profile": prof.name,
        "image_size": size,
        "weights_requested": built.weights_requested,
        "weights_used": built.weights_used,
        "weights_note": built.weights_note,
        "pretrained": pretrained,
        "seed": seed,
        "epochs": {plan.name: plan.epochs for plan in plans},
        "unfreeze": unfreeze if pretrained else "all layers (random weights)",
        "class_weight": cw,
        "label_smoothing": label_smoothing,
        "patience": patience,
        "dropout": dropout,
        "strategy": type(dist).__name__,
        "replicas": dist.num_replicas_in_sync,
        "mixed_precision": mixed,
        "run_eagerly": run_eagerly,
        "bn_recalibration_batches": bn_recalibration_batches if recalibrate else 0,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "resumed": resumed is not None,
        "extra": dict(extra_config or {}),
    }
    save_json(run_dir / "config.json", config)
    if verbose:
        print(f"Run folder: {run_dir}\nModel {built.name}: weights {built.weights_used}")

    timer = _Throughput()
    extra = [timer, *([BatchNormRecalibration(train_ds, bn_recalibration_batches)] if recalibrate else [])]
    extra += list(callbacks)
    phases = []
    for plan in plans:
        phases.append(plan.apply(built, pretrained, unfreeze))
        if plan.epochs > 0:
            with precision_policy(mixed), dist.scope():
                _fit_phase(
                    built,
                    plan,
                    run_dir,
                    train_ds,
                    val_ds,
                    cw,
                    label_smoothing,
                    patience,
                    run_eagerly,
                    tensorboard,
                    extra,
                    verbose,
                )

    history = read_history(run_dir, [plan.name for plan in plans])
    history.to_csv(run_dir / "history.csv", index=False)
    if (run_dir / BEST_WEIGHTS).is_file():
        built.model.load_weights(str(run_dir / BEST_WEIGHTS))  # the best epoch over both phases
    save_inference_model(built.model, run_dir / "model.keras")
    train_images = _count_train_images(train_ds, manifest)
    config |= {
        "phases": phases,
        "epochs_run": {plan.name: int((history["phase"] == plan.phase).sum()) for plan in plans},
        "best_val_auc": _best(history),
        "params": count_params(built.model)["total"],
        "train_images": train_images,
        "train_time_s": round(timer.train_seconds, 2),
        "train_images_per_s": round(train_images * timer.epochs / timer.train_seconds, 2)
        if timer.train_seconds > 0
        else None,
    }
    predictions, metrics = _write_predictions(built.model, run_dir, val_ds, test_ds, manifest, class_names)
    if predictions is not None:
        config["inference_images_per_s"] = predictions.attrs.get("images_per_s")
    config |= {
        "status": "complete",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_time_s": round(time.time() - started, 2),
    }
    save_json(run_dir / "config.json", config)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    set_latest(run_dir)
    if verbose:
        print(f"Saved {run_dir} (best val AUC {config['best_val_auc']}); LATEST updated.")
    return RunResult(run_dir, history, built, config, predictions, metrics)


def save_inference_model(model: keras.Model, path: Path) -> Path:
    """Save ``model`` without optimizer state or compile settings (a third of the checkpoint's size for a fully
    trained network), atomically: an uncompiled copy built from the model's config holds the same weights."""
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    tmp = path.with_name(f".{path.stem}.saving.keras")
    clean.save(tmp)
    os.replace(tmp, path)
    return path


def _fit_phase(
    built: BuiltModel,
    plan: PhasePlan,
    run_dir: Path,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    class_weight: dict[int, float] | None,
    label_smoothing: float,
    patience: int,
    run_eagerly: bool,
    tensorboard: bool,
    extra: list[keras.callbacks.Callback],
    verbose: int,
) -> None:
    """Compile and fit one phase; a phase finished before an interruption is reloaded instead of re-run."""
    done = run_dir / "backup" / f"phase{plan.phase}_done.weights.h5"
    if done.is_file():  # resumed run: this phase finished before the interruption
        built.model.load_weights(str(done))
        return
    compile_model(built.model, plan.learning_rate, label_smoothing, run_eagerly=run_eagerly)
    if verbose:
        trainable = count_params(built.model)["trainable"]
        print(
            f"Phase {plan.phase} ({plan.name}): {plan.epochs} epoch(s), learning rate {plan.learning_rate:g}, "
            f"{trainable:,} trainable parameters"
        )
    best = _best(read_history(run_dir))
    built.model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=plan.epochs,
        class_weight=class_weight,
        shuffle=False,  # the training dataset shuffles itself
        callbacks=[*make_callbacks(run_dir, plan.phase, patience, best, tensorboard, verbose), *extra],
        verbose=verbose,
    )
    done.parent.mkdir(parents=True, exist_ok=True)
    built.model.save_weights(str(done))


def _default_output_dir() -> Path:
    from .config import get_settings

    return get_settings().output_dir


def _check_image_size(ds: tf.data.Dataset, size: int) -> None:
    shape = ds.element_spec[0].shape
    if len(shape) == 4 and shape[1] is not None and (shape[1], shape[2], shape[3]) != (size, size, 3):
        raise ValueError(
            f"The dataset yields images of shape {tuple(shape[1:])} but the model expects ({size}, {size}, 3): "
            "build the dataset with the same image_size."
        )


def _count_train_images(train_ds: tf.data.Dataset, manifest: pd.DataFrame | None) -> int:
    if manifest is not None and "split" in manifest:
        return int((manifest["split"] == "train").sum())
    if train_ds.cardinality() == tf.data.INFINITE_CARDINALITY:
        return 0
    return _count_images(train_ds)


def _write_predictions(
    model: keras.Model,
    run_dir: Path,
    val_ds: tf.data.Dataset,
    test_ds: tf.data.Dataset | None,
    manifest: pd.DataFrame | None,
    class_names: list[str],
) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    if manifest is None:
        print("Note: no manifest given, so no predictions.csv / metrics.json were written.")
        return None, None
    tables = [
        predict_split(model, ds, manifest[manifest["split"] == split], class_names)
        for split, ds in (("val", val_ds), ("test", test_ds))
        if ds is not None
    ]
    predictions = pd.concat(tables, ignore_index=True)
    speed = tables[-1].attrs.get("images_per_s")  # the last split: its predict function is already traced
    predictions.attrs["images_per_s"] = round(speed, 2) if speed else None
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    metrics = compute_split_metrics(predictions, class_names)
    save_json(run_dir / "metrics.json", metrics)
    return predictions, metrics

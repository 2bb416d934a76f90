"""Retraining levers against the shifted Kermany test split (issue 13): intensity augmentation, histogram
equalisation, label smoothing, mixup, fine-tuning depth; several seeds of each.

Usage (from the repository root)::

    nice -n 5 python benchmarks/train_levers.py [--variants baseline strong-intensity equalize label-smoothing]
        [--seed N] [--model mobilenet_025|cnn] [--profile full] [--image-size 224] [--epochs 5 10]
        [--train-images N] [--weights FILE] [--source DIR] [--output DIR] [--n-boot N] [--hold-out-originals]
        [--teacher RUN]

Trains ``mobilenet_025`` (or, with ``--model cnn``, the custom CNN with the ``laptop`` profile's recipe: every
training image at 128 px since 2026-12-07, 2,000 before, and the whole validation split since that afternoon; its
folders ending in ``-cnn``) once per variant with the same settings as
``benchmarks/real_data.py`` (its
``make_settings`` and ``score_run`` are reused: ``utils.course.manifest.prepare_dataset`` then
``utils.course.experiment.train_model``). The split by patient always uses ``CXR_SEED`` (default 42), so every
variant and seed sees the same train / validation images; ``--seed`` (default 42) is the training seed (the new
head's initial weights, the order of the images, the augmentation). Each variant and seed has its data and runs
under ``<output>/<variant>/seed<N>/`` (``seed<N>-<S>px/`` for ``--image-size S`` other than 224, ``-pneumonia3``
appended for ``--dataset pneumonia3``, the three-class labels, ``-<N>img`` (``-allimg``) for ``--train-images N``
(0: every training image) instead of the profile's number; default ``outputs/benchmarks/train-levers/``). ``--image-size 320`` upsamples the 224 px images (more pixels per lung
detail for the network, no new information):

* ``baseline``: the course augmentation (``utils.data.build_augmentation``: rotation +-5 degrees, zoom 10%, shift
  5%, brightness +-0.1, contrast x0.8 to x1.2; the runs of 2026-12-02 before 03:00 predate that contrast fix:
  x1 to x1.2);
* ``strong-intensity``: the same geometric layers, then brightness +-0.3, contrast +-0.5, a random gamma in
  [0.7, 1.5] (log-uniform, per image) and a light Gaussian blur (sigma 1 px, blended in with a random strength in
  [0, 1] per image), clipped to [0, 255]. Contrast is passed as ``(0.5, 0.5)``: Keras 3 reads a single float
  ``f`` as factors in ``[1, 1 + f]``, the tuple gives ``[0.5, 1.5]``. ``utils.data.build_augmentation`` (the module attribute that
  ``utils.data.make_dataset`` calls) is replaced only while that model trains;
* ``strong-geometric``: rotation +-10 degrees, zoom 20%, shift 10% (twice the course's; the seed projects'
  ``ImageDataGenerator`` ranges), then the course's brightness and contrast: patients framed and positioned
  differently in the later test collection would look familiar;
* ``stretch``: the course augmentation, then height and width each zoomed in by its own random factor, up to
  1.33x (``RandomZoom(height_factor=(-0.25, 0), width_factor=(-0.25, 0))``: a random aspect ratio and framing,
  never an empty border). The shared images were squashed to 224 x 224 from their
  original aspect ratio, and in the training split that ratio depends on the class: width / height 1.22 +- 0.13
  for NORMAL, 1.52 +- 0.31 (bacterial) and 1.52 +- 0.23 (viral) for pneumonia (``../shared/data/real_cxr_sample``'s
  ``MANIFEST.csv``, 150 originals per class), so a squashed pneumonia chest looks about 20% narrower. A model
  that learned that shortcut calls a wide NORMAL image of another collection pneumonia; a random aspect ratio in
  training takes the cue away, and zooming in alone (up to 1.33x) takes away the framing as a cue too: the
  aspect-ratio probe of ``benchmarks/levers.py`` shows the course's models calling NORMAL images pneumonia more
  often when they are zoomed in at all, and most when made narrower. (A first version zoomed the width alone, in
  and out by up to 30%: it removed the aspect-ratio cue but not the framing one.);
* ``equalize``: every image (train, validation and test) histogram-equalised right after decoding
  (``loaders.equalize_histogram`` replaces ``utils.data.load_image`` while the model trains and predicts), so that
  exposure and contrast, which differ between the train and test collections, carry no information;
* ``crop``: every image (train, validation and test) cut to its central 80% and stretched back (``loaders.load_cropped``
  replaces ``utils.data.load_image``): the borders, where lead markers, text and the collimation edge sit, are
  gone, so the network cannot use them (shortcuts of that kind: Zech et al. 2018, DeGrave et al. 2021);
* ``label-smoothing``: the course recipe with ``CategoricalCrossentropy(label_smoothing=0.1)`` in every
  ``compile`` (less confident, possibly better-calibrated probabilities);
* ``mixup``: every training batch, after the course augmentation, mixed with a shuffled copy of itself
  (Zhang et al. 2018): ``lam * x_i + (1 - lam) * x_j`` and the same for the one-hot labels, one ``lam ~
  Beta(0.2, 0.2)`` per image (:func:`mixup`); Keras weighs each mixed image by the class weight of its larger
  share. Smoother decision boundaries, possibly a ranking that holds better on shifted images;
* ``weight-average``: Adam keeps an exponential moving average of the weights (Keras's ``use_ema=True``, momentum
  0.995: about the last 200 steps, 1.4 epochs) and ``keras.callbacks.SwapEMAWeights(swap_on_epoch=True)`` puts
  the averaged weights in the model for validation, early stopping and the saved model (:func:`weight_averaging`).
  Averaged weights sit in flatter regions of the loss, which generalise better to shifted domains (SWA, Izmailov
  et al. 2018; SWAD, Cha et al. 2021); the course's validation curves jump from epoch to epoch;
* ``distill`` (needs ``--teacher RUN``, a finished run of the same classes, e.g. MobileNet 0.25's): knowledge
  distillation (Hinton et al. 2015). Every training batch, after the course augmentation, goes through the
  teacher's model too (resized to its input size), and the target becomes half the one-hot label and half the
  teacher's probabilities softened by a temperature of 2 (:func:`soft_targets`). For the custom CNN: a
  student trained from scratch on 2,000 images that learns, besides the labels, how an ImageNet-pretrained
  model ranks them;
* ``stem``, ``no-stem`` (``--model cnn`` only): the custom CNN with its first convolution at stride 2 or 1
  (:func:`with_stem_stride`). At stride 2 (the "stem" of ResNet and MobileNet) every block works at half the
  resolution (the last feature map 8 x 8 at 128 px instead of 16 x 16), with the same weights and about a fifth
  of the computation (a training step of 32 images at 128 px: 0.76 s against 3.69 s on a 2-core AMD EPYC), so
  that the CNN can learn from every training image (``--train-images 0``) in less time than from 2,000 at
  stride 1. Measured on 2026-12-07 and adopted the same day: ``stem`` is now ``baseline``, and ``no-stem
  --train-images 2000`` is the CNN's ``laptop`` recipe of before;
* ``top-finetune``, ``deep-finetune``, ``full-finetune``: phase 2 trains MobileNet 0.25 from ``conv_dw_12`` (its
  last two blocks), ``conv_dw_6`` (its second half) or ``conv1`` (every layer), BatchNorm always frozen. The
  course fine-tuned from ``conv_dw_12`` until 2026-12-02 (the ``baseline`` runs of that day before 05:00) and
  fine-tunes every layer since, after these variants were measured: ``full-finetune`` is now ``baseline``.

``--hold-out-originals`` answers a question the validation split cannot: does a variant rank better once the
acquisition cues are taken away? ``../shared/data/real_cxr_sample/MANIFEST.csv`` lists 450 of the
official training images (150 per class, one per patient) with the width and height of their originals, which
the squashed 224 px copies no longer show. Every training and validation image of those patients (1,230 of the
5,216) is left out of training (:func:`without_patients`), and the finished run predicts the 450 squashed copies
(``originals.csv`` in the run folder). From the original aspect ratio and pixel count alone a logistic
regression tells pneumonia from NORMAL with an AUC of about 0.92; :func:`overlap_weights` weighs the images so
that both classes have the same mean of both cues, and the weighted AUC (95% bootstrap interval) and the
threshold of the weighted Youden's J are what a model earns by the lungs rather than by the squash. Folders end
in ``-heldout``; the output adds a table of validation, originals and test. Nothing here reads the test split
to choose: it reports the test split at the validation threshold and at the originals' threshold. With
``--dataset pneumonia3`` the weights balance the cues across NORMAL, BACTERIA and VIRUS (nearly: from the cues
alone a multinomial regression separates the three with a macro-AUC of about 0.81), and the table gives the
weighted macro-F1 of the argmax and the weighted macro-AUC instead of thresholds.

Hypothesis: the official test images differ from training in exposure and contrast, and a model that cannot rely
on them (augmented or equalised away) keeps its specificity on test. Every threshold comes from validation (``run.threshold``); nothing
is chosen on test, this only reports. Prints a Markdown table; writes ``<output>/../train_levers.json`` (default
``outputs/benchmarks/train_levers.json``) after each variant.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_data  # noqa: E402  (benchmarks/real_data.py: settings and scoring as there)
from loaders import LOADERS, images_loaded_as  # noqa: E402  (the equalize and crop variants' images)

OUTPUT = ROOT / "outputs" / "benchmarks" / "train-levers"
VARIANTS = ("baseline", "strong-intensity", "strong-geometric", "stretch", "equalize", "crop", "label-smoothing",
            "mixup", "weight-average", "distill", "stem", "no-stem", "top-finetune", "deep-finetune", "full-finetune")  # fmt: skip
LABEL_SMOOTHING = 0.1
MIXUP_ALPHA = 0.2
STRETCH = 0.25  # "stretch": height and width each zoomed in by up to 1 / (1 - 0.25) = 1.33x, independently
DISTILL_WEIGHT = 0.5  # "distill": the training target is half the one-hot label, half the teacher's soft one
DISTILL_TEMPERATURE = 2.0  # the teacher's probabilities softened as softmax(log p / T)
EMA_MOMENTUM = 0.995  # "weight-average": w_avg <- 0.995 w_avg + 0.005 w after every step (about 200 steps)
# Where phase 2 starts: the last two blocks (the course until 2026-12-02), MobileNet's second half (from its
# 14 x 14 stage at 224 px), or every layer (the course's MOBILENET_025 since then: the same as "baseline").
FINETUNE_FROM = {"top-finetune": "conv_dw_12", "deep-finetune": "conv_dw_6", "full-finetune": "conv1"}
MODEL = "mobilenet_025"
STEM_STRIDE = {"stem": 2, "no-stem": 1}  # the custom CNN's first convolution: 2 since 2026-12-07 ("stem" = baseline)
CNN_ONLY = tuple(STEM_STRIDE)  # variants that change the custom CNN's architecture
SAME_AS_BASELINE = ("stem", "full-finetune")  # adopted by the course: left out of the default list
SPLITS = real_data.SPLITS


# --- the stronger intensity augmentation --------------------------------------------------------------------------


def _layers():
    """The two custom layers, defined on first use (Keras is imported only then)."""
    import keras
    import tensorflow as tf

    class RandomGamma(keras.layers.Layer):
        """``255 * (x / 255) ** gamma`` with one gamma per image, log-uniform in ``[low, high]``; training only.
        Takes float images in [0, 255] (clipped first); identity at inference."""

        def __init__(self, low: float = 0.7, high: float = 1.5, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.low, self.high, self.seed = low, high, seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=None):
            if not training:
                return images
            images = tf.clip_by_value(tf.cast(images, tf.float32), 0.0, 255.0)
            shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
            log_gamma = keras.random.uniform(shape, math.log(self.low), math.log(self.high),
                                             seed=self.seed_generator)  # fmt: skip
            return tf.clip_by_value(255.0 * tf.pow(images / 255.0, tf.exp(log_gamma)), 0.0, 255.0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return super().get_config() | {"low": self.low, "high": self.high, "seed": self.seed}

    class RandomBlur(keras.layers.Layer):
        """A light Gaussian blur (``sigma`` px, reflected borders) blended in with a random strength in
        ``[0, max_strength]`` per image; training only. Float images in [0, 255]; identity at inference."""

        def __init__(self, sigma: float = 1.0, max_strength: float = 1.0, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.sigma, self.max_strength, self.seed = sigma, max_strength, seed
            self.seed_generator = keras.random.SeedGenerator(seed)
            radius = max(1, math.ceil(2 * sigma))
            weights = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
            self.radius, self.kernel_1d = radius, [w / sum(weights) for w in weights]

        def call(self, images, training=None):
            if not training:
                return images
            images = tf.cast(images, tf.float32)
            channels = images.shape[-1]
            k = tf.constant(self.kernel_1d, tf.float32)
            size = len(self.kernel_1d)
            rows = tf.tile(tf.reshape(k, [size, 1, 1, 1]), [1, 1, channels, 1])
            cols = tf.tile(tf.reshape(k, [1, size, 1, 1]), [1, 1, channels, 1])
            r = self.radius
            padded = tf.pad(images, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
            blurred = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
            blurred = tf.nn.depthwise_conv2d(blurred, cols, [1, 1, 1, 1], "VALID")
            shape = tf.stack([tf.shape(images)[0], 1, 1, 1])
            strength = keras.random.uniform(shape, 0.0, self.max_strength, seed=self.seed_generator)
            return tf.clip_by_value(images + strength * (blurred - images), 0.0, 255.0)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return super().get_config() | {
                "sigma": self.sigma,
                "max_strength": self.max_strength,
                "seed": self.seed,
            }

    return RandomGamma, RandomBlur


def _layer_seed(seed: int | None, index: int) -> int | None:
    """The seed of a variant's layer ``index``, numbered like ``utils.data.build_augmentation``'s (seed + index):
    layers with one seed draw the same numbers, so every layer needs its own."""
    return None if seed is None else seed + index


def build_strong_intensity(seed: int | None = None):
    """The course's geometric layers (taken from ``utils.data.build_augmentation``), then stronger intensity ones."""
    import keras
    from keras import layers

    geometric = [layer for layer in ORIGINAL_BUILD(seed).layers
                 if not isinstance(layer, layers.RandomBrightness | layers.RandomContrast)]  # fmt: skip
    random_gamma, random_blur = _layers()
    return keras.Sequential(
        [
            *geometric,
            layers.RandomBrightness(0.3, value_range=(0, 255), seed=_layer_seed(seed, 3)),
            # A tuple: Keras 3 reads a single float f as contrast factors in [1, 1 + f] (never lower contrast);
            # (0.5, 0.5) gives [0.5, 1.5], i.e. +-0.5.
            layers.RandomContrast((0.5, 0.5), value_range=(0, 255), seed=_layer_seed(seed, 4)),
            random_gamma(0.7, 1.5, seed=_layer_seed(seed, 5), name="random_gamma"),  # clips to [0, 255] first
            random_blur(1.0, 1.0, seed=_layer_seed(seed, 6), name="random_blur"),  # clips to [0, 255] at the end
        ],
        name="augmentation",
    )


def build_stretch(seed: int | None = None):
    """The course augmentation (``utils.data.build_augmentation``), then a zoom in along each axis by its own
    random factor: each image gets another aspect ratio, so the squash of the original one carries no information."""
    import keras
    from keras import layers

    return keras.Sequential(
        [*ORIGINAL_BUILD(seed).layers,
         layers.RandomZoom(height_factor=(-STRETCH, 0.0), width_factor=(-STRETCH, 0.0), seed=_layer_seed(seed, 5),
                           name="random_stretch")],
        name="augmentation",
    )  # fmt: skip


def build_strong_geometric(seed: int | None = None):
    """Larger geometric changes (rotation +-10 degrees, zoom 20%, shift 10%: the ranges of the seed projects'
    ``ImageDataGenerator``), then the course's intensity layers (taken from ``utils.data.build_augmentation``)."""
    import keras
    from keras import layers

    intensity = [layer for layer in ORIGINAL_BUILD(seed).layers
                 if isinstance(layer, layers.RandomBrightness | layers.RandomContrast)]  # fmt: skip
    return keras.Sequential(
        [
            layers.RandomRotation(10 / 360, fill_mode="constant", seed=_layer_seed(seed, 0)),
            layers.RandomZoom(0.2, fill_mode="constant", seed=_layer_seed(seed, 1)),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=_layer_seed(seed, 2)),
            *intensity,
        ],
        name="augmentation",
    )


ORIGINAL_BUILD = None  # utils.data.build_augmentation as imported, set by augmentation()
@contextlib.contextmanager
def weight_averaging():
    """Every ``compile`` gets Adam at the same learning rate with an exponential moving average of the weights
    (``use_ema=True``), and every phase's callbacks start with ``SwapEMAWeights(swap_on_epoch=True)``, so that the
    course's other callbacks (validation AUC, early stopping with its best weights) see the averaged weights."""
    import keras

    from utils import training

    compile_, make_callbacks = keras.Model.compile, training.make_callbacks

    def compile_averaged(self, *args, optimizer, **kwargs):
        rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        averaged = keras.optimizers.Adam(rate, use_ema=True, ema_momentum=EMA_MOMENTUM)
        return compile_(self, *args, optimizer=averaged, **kwargs)

    def callbacks_averaged(*args, **kwargs):
        return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True), *make_callbacks(*args, **kwargs)]

    keras.Model.compile, training.make_callbacks = compile_averaged, callbacks_averaged
    try:
        yield
    finally:
        keras.Model.compile, training.make_callbacks = compile_, make_callbacks


@contextlib.contextmanager
def smoothed_labels():
    """Every ``compile(loss="categorical_crossentropy")`` gets that loss with ``label_smoothing`` instead."""
    import keras

    compile_ = keras.Model.compile

    def compile_smoothed(self, *args, **kwargs):
        if kwargs.get("loss") == "categorical_crossentropy":
            kwargs["loss"] = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING)
        return compile_(self, *args, **kwargs)

    keras.Model.compile = compile_smoothed
    try:
        yield
    finally:
        keras.Model.compile = compile_


def mixup(images, labels, alpha: float = MIXUP_ALPHA, seed: int | None = None):
    """One batch mixed with a shuffled copy of itself: ``lam * a + (1 - lam) * b`` for the images and the one-hot
    labels alike, ``lam ~ Beta(alpha, alpha)`` per image (drawn as ``g1 / (g1 + g2)`` of two Gamma(alpha))."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    g = tf.random.gamma([2, n], alpha, seed=seed)
    lam = g[0] / tf.maximum(g[0] + g[1], 1e-12)
    other = tf.random.shuffle(tf.range(n), seed=seed)
    mixed_images = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * tf.gather(images, other)
    return mixed_images, lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, other)


@contextlib.contextmanager
def mixed_batches():
    """``utils.data.make_dataset`` mixes its training batches (:func:`mixup`) while the block runs."""
    from utils import data

    make_dataset = data.make_dataset

    def make_mixed(*args, **kwargs):
        ds = make_dataset(*args, **kwargs)
        return ds.map(mixup) if kwargs.get("training") else ds

    data.make_dataset = make_mixed
    try:
        yield
    finally:
        data.make_dataset = make_dataset


def soft_targets(labels, teacher_probs, weight: float = DISTILL_WEIGHT, temperature: float = DISTILL_TEMPERATURE):
    """Distillation targets (Hinton et al. 2015): ``(1 - weight) * labels + weight * softmax(log p / T)``, the
    teacher's probabilities ``p`` softened by the temperature ``T`` so that its second choices carry weight."""
    import tensorflow as tf

    soft = tf.nn.softmax(tf.math.log(tf.maximum(teacher_probs, 1e-7)) / temperature, axis=-1)
    return (1 - weight) * labels + weight * soft


@contextlib.contextmanager
def distilled_batches(teacher_run: Path):
    """``utils.data.make_dataset`` replaces the labels of its training batches by :func:`soft_targets` of the
    teacher run's model, which sees each augmented image as the student does (resized to its own input size)."""
    import tensorflow as tf

    from utils import data
    from utils.course.runs import load_run

    teacher_run = load_run(teacher_run)
    teacher, size = teacher_run.load_model(), int(teacher_run.config["image_size"])
    make_dataset = data.make_dataset

    def make_distilled(manifest, split, class_names, *args, **kwargs):
        if list(class_names) != teacher_run.class_names:
            raise ValueError(f"the teacher's classes {teacher_run.class_names} are not the student's {class_names}")
        ds = make_dataset(manifest, split, class_names, *args, **kwargs)
        if not kwargs.get("training"):
            return ds
        return ds.map(lambda x, y: (x, soft_targets(y, teacher(tf.image.resize(x, (size, size)), training=False))))

    data.make_dataset = make_distilled
    try:
        yield
    finally:
        data.make_dataset = make_dataset


@contextlib.contextmanager
def deeper_finetuning(first_layer: str):
    """Fine-tuning (phase 2) trains MobileNet 0.25 from ``first_layer`` on, whatever the course's choice."""
    from utils.models import BACKBONES

    course = BACKBONES[MODEL]
    BACKBONES[MODEL] = dataclasses.replace(course, unfreeze_from=first_layer)
    try:
        yield
    finally:
        BACKBONES[MODEL] = course


def with_stem_stride(model, stride: int):
    """The same network with its first convolution (``block1_conv1``) at ``stride``: the course's custom CNN has
    a stride-2 stem since 2026-12-07 (every block after it works at half the resolution, for about a fifth of the
    computation); stride 1 gives the CNN of before. Same layer names and weights' shapes."""
    import keras

    def clone(layer):
        config = layer.get_config() | ({"strides": (stride, stride)} if layer.name == "block1_conv1" else {})
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


@contextlib.contextmanager
def stem_stride(stride: int):
    """``python -m utils train``'s custom CNN built :func:`with_stem_stride` while the block runs (restored after)."""
    from utils.course import experiment

    course = experiment.build_cnn
    experiment.build_cnn = lambda *args, **kwargs: with_stem_stride(course(*args, **kwargs), stride)
    try:
        yield
    finally:
        experiment.build_cnn = course


@contextlib.contextmanager
def augmentation(variant: str, teacher: Path | None = None):
    """``utils.data.build_augmentation`` replaced for ``variant`` while the block runs (restored after);
    ``teacher``: the run folder that ``distill`` learns from."""
    global ORIGINAL_BUILD
    from utils import data

    ORIGINAL_BUILD = ORIGINAL_BUILD or data.build_augmentation
    if variant == "baseline":
        yield ORIGINAL_BUILD
        return
    if variant == "label-smoothing":
        with smoothed_labels():
            yield ORIGINAL_BUILD
        return
    if variant == "mixup":
        with mixed_batches():
            yield ORIGINAL_BUILD
        return
    if variant == "weight-average":
        with weight_averaging():
            yield ORIGINAL_BUILD
        return
    if variant == "distill":
        with distilled_batches(teacher):
            yield ORIGINAL_BUILD
        return
    if variant in STEM_STRIDE:
        with stem_stride(STEM_STRIDE[variant]):
            yield ORIGINAL_BUILD
        return
    if variant in FINETUNE_FROM:
        with deeper_finetuning(FINETUNE_FROM[variant]):
            yield ORIGINAL_BUILD
        return
    if variant in LOADERS:
        with images_loaded_as(variant):
            yield ORIGINAL_BUILD
        return
    if variant == "strong-geometric":
        data.build_augmentation = build_strong_geometric
    elif variant == "stretch":
        data.build_augmentation = build_stretch
    else:
        data.build_augmentation = build_strong_intensity
    try:
        yield data.build_augmentation
    finally:
        data.build_augmentation = ORIGINAL_BUILD


# --- a validation set on which the acquisition cues carry no class: the originals of real_cxr_sample -------------

ORIGINALS = real_data.SHARED / "data" / "real_cxr_sample" / "MANIFEST.csv"


def load_originals(dataset: str = "pneumonia", path: Path = ORIGINALS) -> pd.DataFrame:
    """The official-train originals listed in ``real_cxr_sample/MANIFEST.csv`` (150 per class, one per patient):
    file name, its folder in chest_xray_224 (NORMAL or PNEUMONIA), ``y`` (the index of its class in ``dataset``'s
    classes: NORMAL 0, then PNEUMONIA, or BACTERIA and VIRUS), patient id, and the original's aspect ratio (width /
    height) and megapixels, which the squashed 224 px copies no longer show."""
    from utils.course.datasets import get_dataset, kermany_patient_id

    table = pd.read_csv(path).query("split == 'train'").reset_index(drop=True)
    pneumonia = (table["label"] != "NORMAL").to_numpy()
    classes = list(get_dataset(dataset).classes)
    labels = table["label"] if len(classes) == 3 else pd.Series(np.where(pneumonia, "PNEUMONIA", "NORMAL"))
    y = labels.map(classes.index).to_numpy()
    return pd.DataFrame({"file": table["file"], "folder": np.where(pneumonia, "PNEUMONIA", "NORMAL"), "y": y,
                         "patient": table["file"].map(kermany_patient_id), "aspect": table["orig_w"] / table["orig_h"],
                         "megapixels": table["orig_w"] * table["orig_h"] / 1e6})  # fmt: skip


def overlap_weights(originals: pd.DataFrame) -> np.ndarray:
    """Overlap weights (Li, Morgan and Zaslavsky 2018; for several classes Li and Li 2019): a logistic regression
    predicts the class from the acquisition cues alone (log aspect ratio and log pixel count of the original),
    giving each image its propensity e_k for every class k; an image of class y weighs (1 / e_y) / sum_k (1 / e_k),
    which for two classes is the other class's propensity (a NORMAL image weighs e, a pneumonia image 1 - e).
    Weighted, the classes have the same mean of both cues (exactly for two classes and an unpenalised fit, nearly
    for three), so a model scores well on them only by what else it sees."""
    from sklearn.linear_model import LogisticRegression

    cues, y = np.log(originals[["aspect", "megapixels"]].to_numpy(float)), originals["y"].to_numpy()
    inverse = 1 / LogisticRegression(C=np.inf, max_iter=1000).fit(cues, y).predict_proba(cues)
    return inverse[np.arange(len(y)), y] / inverse.sum(axis=1)


@contextlib.contextmanager
def without_patients(patients: set[str]):
    """While the block runs, the course's ``load_prepared`` (as ``train_model`` calls it) leaves out every
    training and validation image of ``patients`` and of the patients grouped with them as duplicates."""
    from utils.course import experiment

    course = experiment.load_prepared

    def load_without(*args, **kwargs):
        prepared = course(*args, **kwargs)
        table = prepared.manifest
        groups = set(table.loc[table["patient_id"].isin(patients), "group"])
        kept = table[~table["group"].isin(groups) | (table["split"] == "test")].reset_index(drop=True)
        return dataclasses.replace(prepared, manifest=kept)

    experiment.load_prepared = load_without
    try:
        yield
    finally:
        experiment.load_prepared = course


def score_originals(run, originals: pd.DataFrame, source: Path, n_boot: int) -> dict:
    """The run on the held-out originals (their squashed copies in ``source``), plain and overlap-weighted (95%
    bootstrap intervals, the weights kept fixed). Two classes: the AUC, the threshold of the weighted Youden's J
    and the test split at that threshold; three classes: the macro-F1 of the argmax and the macro-AUC. Both: within
    each class the rank correlation of p(pneumonia) = 1 - p(NORMAL) with each cue (a model that reads the squash
    scores a wider original higher whatever its class). Writes each image's probabilities to ``originals.csv`` in
    the run folder (``p``: p(pneumonia))."""
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score, roc_auc_score, roc_curve

    from utils.data import load_images
    from utils.metrics import scores_with_ci

    model, size = run.load_model(), int(run.config["image_size"])
    paths = [str(source / "train" / folder / name) for folder, name in zip(originals["folder"], originals["file"], strict=True)]
    probs = np.concatenate([model.predict(load_images(paths[i : i + 64], size), verbose=0) for i in range(0, len(paths), 64)])
    classes = run.class_names  # NORMAL first: p(pneumonia) = 1 - p(NORMAL)
    p = probs[:, 1] if len(classes) == 2 else 1 - probs[:, 0]
    y, w = originals["y"].to_numpy(), overlap_weights(originals)
    columns = {f"p_{name}": probs[:, k] for k, name in enumerate(classes)} if len(classes) == 3 else {}
    originals.assign(path=paths, p=p, weight=w, **columns).to_csv(run.path / "originals.csv", index=False)
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]

    def with_ci(metric) -> list[float]:  # metric(index, weights) on every image, then on each bootstrap draw
        value, spread = metric(slice(None), w), [metric(i, w[i]) for i in draws]
        return [round(float(v), 4) for v in (value, *np.percentile(spread, [2.5, 97.5]))]

    out = {"images": len(y), "effective_images": [round(float(w[y == k].sum() ** 2 / (w[y == k] ** 2).sum()), 1) for k in range(len(classes))],
           "spearman_p_with_cue": {name: {cue: round(float(spearmanr(p[y == k], originals[cue][y == k]).statistic), 3)
                                          for cue in ("aspect", "megapixels")}
                                   for k, name in enumerate(classes)}}  # fmt: skip
    if len(classes) == 3:
        def macro_f1(i, weights):
            return f1_score(y[i], probs[i].argmax(axis=1), labels=range(3), average="macro", sample_weight=weights, zero_division=0)

        def macro_auc(i, weights):
            return roc_auc_score(y[i], probs[i], multi_class="ovr", labels=range(3), sample_weight=weights)

        return out | {"macro_F1": round(float(macro_f1(slice(None), None)), 4), "weighted_macro_F1": with_ci(macro_f1),
                      "AUC": round(float(macro_auc(slice(None), None)), 4), "weighted_AUC": with_ci(macro_auc)}  # fmt: skip
    fpr, tpr, cuts = roc_curve(y, p, sample_weight=w)
    threshold = float(min(cuts[np.argmax(tpr - fpr)], 1.0))
    test = scores_with_ci(*run.arrays("test"), threshold, n_boot=n_boot)
    return out | {"AUC": round(float(roc_auc_score(y, p)), 4),
                  "weighted_AUC": with_ci(lambda i, weights: roc_auc_score(y[i], p[i], sample_weight=weights)),
                  "threshold": round(threshold, 4), "test_at_threshold": {name: list(v) for name, v in test.items()}}  # fmt: skip


# --- training and the table ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, help="default: all but those the course "
                        "adopted (stem, full-finetune: the same as baseline); for the CNN also not the fine-tuning "
                        "depths, for MobileNet not stem / no-stem; distill only with --teacher")  # fmt: skip
    parser.add_argument("--model", choices=[MODEL, "cnn"], default=MODEL,
                        help="MobileNet 0.25 (default) or the custom CNN with its laptop recipe")  # fmt: skip
    parser.add_argument("--profile", help="default: full for MobileNet 0.25, laptop for the CNN")
    parser.add_argument("--image-size", type=int, help="default: 224 for MobileNet 0.25, the profile's for the CNN")
    parser.add_argument("--epochs", nargs="+", type=int, metavar="N",
                        help="HEAD FINETUNE (default 5 10) for MobileNet 0.25; N for the CNN (default: the profile's)")  # fmt: skip
    parser.add_argument("--train-images", type=int, metavar="N",
                        help="keep N training images (0: all) instead of the profile's number")  # fmt: skip
    parser.add_argument("--weights", type=Path, default=real_data.DEFAULT_WEIGHTS)
    parser.add_argument("--source", type=Path, default=real_data.DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42, help="the run's seed (split by patient, weights, order)")
    parser.add_argument("--dataset", choices=["pneumonia", "pneumonia3"], default="pneumonia",
                        help="two classes, or three (NORMAL, BACTERIA, VIRUS)")  # fmt: skip
    parser.add_argument("--hold-out-originals", action="store_true", help="leave out the patients of "
                        "real_cxr_sample's training originals and score the run on them, weighted so that their "
                        "original aspect ratio and size carry no class")  # fmt: skip
    parser.add_argument("--teacher", type=Path, help="the run folder of a trained model (e.g. MobileNet 0.25's) "
                        "that 'distill' learns from")  # fmt: skip
    args = parser.parse_args(argv)
    args.variants = args.variants or [v for v in VARIANTS if (v not in FINETUNE_FROM if args.model == "cnn" else
                                      v not in CNN_ONLY) and (v != "distill" or args.teacher is not None)
                                      and v not in SAME_AS_BASELINE]  # fmt: skip
    if "distill" in args.variants and args.teacher is None:
        parser.error("distill learns from a trained run: pass --teacher RUN_FOLDER")
    if args.teacher is not None and "distill" not in args.variants:
        parser.error("--teacher is for the distill variant")
    if args.model == "cnn" and set(args.variants) & set(FINETUNE_FROM):
        parser.error(f"{', '.join(FINETUNE_FROM)} change MobileNet's fine-tuning: not for --model cnn")
    if args.model == MODEL and set(args.variants) & set(CNN_ONLY):
        parser.error(f"{', '.join(CNN_ONLY)} change the custom CNN: use them with --model cnn")
    if args.epochs is not None and len(args.epochs) != (2 if args.model == MODEL else 1):
        parser.error("--epochs takes HEAD FINETUNE for MobileNet 0.25, one number for the CNN")
    transfer = args.model == MODEL
    args.profile = args.profile or ("full" if transfer else "laptop")
    args.image_size = args.image_size or (224 if transfer else None)
    args.epochs = args.epochs or ([5, 10] if transfer else None)
    args.output = args.output.expanduser().resolve()
    args.quick = False  # what real_data.make_settings reads, with args.train_images
    return args


def train_variant(args: argparse.Namespace, variant: str) -> dict:
    from utils.course.experiment import train_model
    from utils.course.manifest import prepare_dataset
    from utils.course.runs import save_json

    size = "" if args.image_size in (None, 224) else f"-{args.image_size}px"
    model = "" if args.model == MODEL else f"-{args.model}"
    dataset = "" if args.dataset == "pneumonia" else f"-{args.dataset}"
    held_out = "-heldout" if args.hold_out_originals else ""
    images = "" if args.train_images is None else f"-{args.train_images or 'all'}img"
    folder = args.output / variant / f"seed{args.seed}{size}{images}{dataset}{model}{held_out}"
    folder.mkdir(parents=True, exist_ok=True)
    settings = real_data.make_settings(argparse.Namespace(**{**vars(args), "output": folder}), args.source, args.model)
    settings = settings.with_(weights=str(args.weights)) if args.model == MODEL else settings
    prepared = prepare_dataset(settings, settings.dataset)  # split by patient with CXR_SEED (42): one split for all
    settings = settings.with_(seed=args.seed)  # the training seed: initial head, order, augmentation
    counts = prepared.manifest.groupby(["split", "label"]).size().to_dict()
    print(f"\n== {variant}: {len(prepared.manifest)} images {counts}; profile {settings.profile.name}, "
          f"{settings.profile.image_size} px, epochs {args.epochs}, seed {settings.seed}", flush=True)  # fmt: skip
    started = time.perf_counter()
    originals = load_originals(args.dataset) if args.hold_out_originals else None
    held_out = without_patients(set(originals["patient"])) if originals is not None else contextlib.nullcontext()
    with augmentation(variant, args.teacher) as build, held_out:
        print(f"augmentation: {[layer.name for layer in build(settings.seed).layers]}", flush=True)
        run = train_model(settings, args.model)
    save_json(run.path / "config.json", run.config | {"benchmark_variant": variant})  # levers.py loads alike
    row = real_data.score_run(run, args.model, args.n_boot)
    row |= {
        "variant": variant,
        "seed": settings.seed,
        "wall_minutes": round((time.perf_counter() - started) / 60, 2),
        "held_out_originals": originals is not None,
    }
    if originals is not None:
        with images_loaded_as(variant):  # the held-out originals as the run saw its images
            row["originals"] = score_originals(run, originals, args.source, args.n_boot)
    return row


def save(path: Path, rows: list[dict]) -> None:
    """Keep the rows of other variants, seeds, sizes and image counts from earlier invocations; replace this one's."""
    old = json.loads(path.read_text()) if path.is_file() else []

    def key(row: dict) -> tuple:
        seen = {split: sum(row["images"][split].values()) for split in ("train", "val")}  # what the run trained on
        return (row.get("model", MODEL), row.get("variant"), row.get("seed"), row.get("image_size"),
                row.get("dataset", "pneumonia"), row.get("held_out_originals", False), seen["train"], seen["val"])

    new = {key(row) for row in rows}
    path.write_text(json.dumps([row for row in old if key(row) not in new] + rows, indent=1))


def markdown_table(rows: list[dict]) -> str:
    def cell(scores: dict) -> str:
        auc = scores["AUC"]
        rest = " | ".join(f"{scores[m][0]:.3f}" if m in scores else "n/a" for m in ("macro-F1", "sensitivity", "specificity"))
        return f"{scores['accuracy'][0]:.3f} | {auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}] | {rest}"

    metrics = ("accuracy", "AUC [95% CI]", "macro-F1", "sensitivity", "specificity")
    head = " | ".join(f"{s} {m}" for s in SPLITS for m in metrics)
    lines = [f"| model | variant | dataset | seed | px | train, val images | train min | epochs | threshold | {head} |",
             "|" + "---|" * 19]
    for row in rows:
        threshold = "argmax" if row["threshold"] is None else f"{row['threshold']:.3f}"
        images = ", ".join(str(sum(row["images"][split].values())) for split in ("train", "val"))
        lines.append(f"| {row.get('model', MODEL)} | {row['variant']} | {row['dataset']} | {row['seed']} | {row['image_size']} | {images} | {row['train_minutes']:.1f} | "
                     f"{row['epochs_run']} | {threshold} | {cell(row['val'])} | {cell(row['test'])} |")  # fmt: skip
    return "\n".join(lines)


def originals_table(rows: list[dict]) -> str:
    """The runs that held out the originals: validation, the originals (plain and weighted AUC) and test, and the
    test split at the validation threshold and at the threshold chosen on the weighted originals; for three
    classes, macro-F1 and macro-AUC instead (:func:`three_class_originals_table`)."""
    held = [row for row in rows if "originals" in row]
    if held and "weighted_macro_F1" in held[0]["originals"]:
        return three_class_originals_table(held)

    def at(scores: dict) -> str:
        return " / ".join(f"{scores[m][0]:.3f}" for m in ("accuracy", "sensitivity", "specificity"))

    lines = ["| model | variant | seed | val AUC | originals AUC | weighted AUC [95% CI] | ρ(p, aspect): NORMAL, "
             "pneumonia | test AUC | val threshold: test acc / sens / spec | originals threshold: test acc / sens / "
             "spec |", "|" + "---|" * 10]  # fmt: skip
    for row in rows:
        if "originals" not in row:
            continue
        o = row["originals"]
        auc, rho = o["weighted_AUC"], o["spearman_p_with_cue"]
        lines.append(f"| {row.get('model', MODEL)} | {row['variant']} | {row['seed']} | {row['val']['AUC'][0]:.3f} | "
                     f"{o['AUC']:.3f} | {auc[0]:.3f} [{auc[1]:.3f}, {auc[2]:.3f}] | {rho['NORMAL']['aspect']:.2f}, "
                     f"{rho['PNEUMONIA']['aspect']:.2f} | {row['test']['AUC'][0]:.3f} | "
                     f"{row['threshold']:.3f}: {at(row['test'])} | {o['threshold']:.3f}: {at(o['test_at_threshold'])} |")  # fmt: skip
    return "\n".join(lines)


def three_class_originals_table(rows: list[dict]) -> str:
    """Three-class runs that held out the originals: validation macro-F1, the originals' macro-F1 (plain, and
    weighted with its 95% interval) and weighted macro-AUC, the rank correlation of p(pneumonia) with the aspect
    ratio within each class, and the test macro-F1."""
    def ci(values: list[float]) -> str:
        return f"{values[0]:.3f} [{values[1]:.3f}, {values[2]:.3f}]"

    lines = ["| model | variant | seed | val macro-F1 | originals macro-F1 | weighted macro-F1 [95% CI] | weighted "
             "macro-AUC [95% CI] | ρ(p(pneumonia), aspect): NORMAL, BACTERIA, VIRUS | test macro-F1 |", "|" + "---|" * 9]  # fmt: skip
    for row in rows:
        o = row["originals"]
        rho = ", ".join(f"{o['spearman_p_with_cue'][name]['aspect']:.2f}" for name in ("NORMAL", "BACTERIA", "VIRUS"))
        lines.append(f"| {row.get('model', MODEL)} | {row['variant']} | {row['seed']} | {row['val']['macro-F1'][0]:.3f} | "
                     f"{o['macro_F1']:.3f} | {ci(o['weighted_macro_F1'])} | {ci(o['weighted_AUC'])} | {rho} | "
                     f"{row['test']['macro-F1'][0]:.3f} |")  # fmt: skip
    return "\n".join(lines)


def teacher_problem(folder: Path, dataset: str) -> str | None:
    """What makes ``folder`` unfit to teach ``distill`` on ``dataset`` (not a finished run of it), or ``None``."""
    from utils.course.runs import RunError, load_run

    try:
        run = load_run(folder)
    except RunError as err:
        return str(err)
    if run.config.get("status") != "complete" or not (run.path / "model.keras").is_file():
        return f"the teacher {run.path} is not a finished run (status {run.config.get('status')}): train it first."
    if run.config.get("dataset") != dataset:
        return f"the teacher {run.path} learned {run.config.get('dataset')}, not {dataset}: pass a run of {dataset}."
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.source / "train").is_dir():
        print(f"Skipped: no Kermany-layout folder (train/ and test/) at {args.source}; pass --source DIR.")
        return 0
    if args.model == MODEL and not args.weights.is_file():
        print(
            f"error: the ImageNet weights file {args.weights} is missing (--weights FILE).", file=sys.stderr
        )
        return 2
    if args.hold_out_originals and not ORIGINALS.is_file():
        print(f"error: --hold-out-originals needs {ORIGINALS} (../shared/data/real_cxr_sample).", file=sys.stderr)
        return 2
    if args.teacher is not None and (problem := teacher_problem(args.teacher, args.dataset)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from utils.course.runtime import quiet_libraries

    quiet_libraries()  # before anything imports TensorFlow
    out = args.output.parent / "train_levers.json"
    rows = []
    for variant in args.variants:
        rows.append(train_variant(args, variant))
        save(out, rows)  # after each variant: a crash keeps the finished ones
    held_out = f"\n\nHeld-out originals:\n{originals_table(rows)}" if args.hold_out_originals else ""
    print(f"\n{markdown_table(rows)}{held_out}\n\n{out}\n" + "\n".join(f"{r['variant']}: {r['run_dir']}" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fast tf.data input pipeline: manifest rows -> batches of ``(images, one-hot labels)``.

``make_dataset`` builds, in this order::

    paths, label ids -> parallel decode to uint8 S x S x 1 -> cache -> shuffle (training) -> batch
    -> augmentation on whole batches (training + augment) -> 3 channels, float32 in [0, 255] -> prefetch

Decoding happens once (the cache holds small uint8 grey images); what changes between epochs (order,
augmentation) comes after the cache and works on whole batches of one channel; the 3-channel float32 copy
that models take (3 times the memory) is made last. ``build_augmentation`` does rotation, zoom and shift in
one resampling (``RandomAffine``): 3 times faster than three Keras layers in a row, and less blur.

**Aspect ratio: every image is stretched to the S x S square** (``tf.image.resize``, ``antialias=True``), with
no crop and no padding, because:

- it keeps the whole chest (a centre crop can cut off lung apices or costophrenic angles);
- padding bands would show the original aspect ratio plainly, and it differs between classes in Kermany
  (median width/height 1.14 for NORMAL, 1.37 to 1.42 for pneumonia in ``real_cxr_sample``): a shortcut the
  model could learn instead of looking at the lungs (stretching changes the chest's proportions instead, a
  much subtler cue);
- it is what ``keras.utils.image_dataset_from_directory`` and CheXNet (224 x 224 resize) do.

**Grey levels:** JPEG and PNG with 1, 3 or 4 channels become one grey channel (colour by luminance, alpha
ignored). 16-bit PNGs are scaled to 8 bit (65535 -> 255, 32768 -> 128), not clipped; a 12-bit image stored in
16 bits therefore looks dark (windowing is dataset-specific and not done here). Large JPEGs are decoded with
libjpeg's built-in 1/2, 1/4 or 1/8 down-scaling when both sides stay >= S (much faster, same look).

**Unreadable files:** a missing file fails with TensorFlow's ``NotFoundError`` naming the path; a file that is
not a JPEG/PNG at all (empty, an HTML error page, a Git LFS pointer) fails with an ``InvalidArgumentError``
naming the path. A JPEG/PNG that is corrupt inside fails in TensorFlow's decoder, whose message
(``Invalid JPEG data`` / ``Invalid PNG data``) cannot name the file: run ``find_unreadable(manifest["path"])``
to list such files, then rebuild the manifest (its builder drops unreadable files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops
from sklearn.utils.class_weight import compute_class_weight

from .config import SPLITS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 8192  # images; the whole split for Kermany-sized data (a uint8 224 px image is 50 kB)
REQUIRED_COLUMNS = ("path", "label", "split")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _decode_jpeg(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Grey JPEG decode, using libjpeg's DCT down-scaling (ratio 8, 4 or 2) while both sides stay >= S."""
    shape = tf.image.extract_jpeg_shape(data)
    smaller = tf.minimum(shape[0], shape[1])

    def decode(ratio: int):
        return lambda: tf.io.decode_jpeg(data, channels=1, ratio=ratio)

    branches = [(smaller >= ratio * image_size, decode(ratio)) for ratio in (8, 4, 2)]
    return tf.case(branches, default=decode(1), exclusive=False)


def load_image(path: str | tf.Tensor, image_size: int) -> tf.Tensor:
    """Read a JPEG or PNG file and return it as a uint8 ``(S, S, 1)`` grey image stretched to S x S.

    Works eagerly and inside ``tf.data`` maps. See the module docstring for the aspect-ratio policy and for
    what happens with unreadable files.
    """
    path = tf.convert_to_tensor(path, tf.string)
    data = tf.io.read_file(path)
    is_jpeg = tf.io.is_jpeg(data)
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    check = tf.debugging.Assert(
        tf.logical_or(is_jpeg, is_png),
        ["Not a JPEG or PNG image (empty file, download error page or Git LFS pointer?):", path],
    )
    with tf.control_dependencies([check]):
        image = tf.cond(
            is_jpeg,
            lambda: _decode_jpeg(data, image_size),
            lambda: tf.io.decode_png(data, channels=1, dtype=tf.uint8),
        )
    image = tf.ensure_shape(image, [None, None, 1])

    def resize() -> tf.Tensor:
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_size))
    image = tf.cond(same_size, lambda: image, resize)
    return tf.ensure_shape(image, [image_size, image_size, 1])


def find_unreadable(paths: Iterable[str], image_size: int = 32) -> list[str]:
    """Return the paths that ``load_image`` cannot read (slow, eager: use it to find a corrupt file)."""
    bad = []
    for path in paths:
        try:
            load_image(str(path), image_size)
        except tf.errors.OpError:
            bad.append(str(path))
    return bad


@keras.saving.register_keras_serializable(package="cxr")
class RandomAffine(keras.layers.Layer):
    """Random rotation, zoom and shift of each image, applied as ONE affine resampling.

    Same ranges as ``RandomRotation(rotation / 360)``, ``RandomZoom(zoom)`` and ``RandomTranslation(shift,
    shift)``, but one bilinear resampling instead of three: 3x faster on the CPU and less blur (each resampling
    smooths the image), as Keras 2's ``ImageDataGenerator`` did. Empty borders become ``fill_value`` (black).
    """

    def __init__(
        self,
        rotation: float = 5.0,
        zoom: float = 0.1,
        shift: float = 0.05,
        fill_value: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.shift = rotation, zoom, shift
        self.fill_value, self.seed = fill_value, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training: bool = True):
        images = ops.cast(images, self.compute_dtype)
        if not training:
            return images
        single = len(images.shape) == 3
        batch = images[None] if single else images
        shape = ops.shape(batch)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        u = keras.random.uniform((shape[0], 4), -1.0, 1.0, seed=self.generator)
        angle, zoom = u[:, 0] * (np.pi * self.rotation / 180), 1.0 + u[:, 1] * self.zoom
        tx, ty = u[:, 2] * self.shift * width, u[:, 3] * self.shift * height
        cos, sin = ops.cos(angle) * zoom, ops.sin(angle) * zoom
        cx, cy = (width - 1) / 2, (height - 1) / 2
        zero = ops.zeros_like(cos)
        # output pixel (x, y) -> input pixel centre + zoom * R(angle) (p - centre) + shift
        transform = ops.stack(
            [cos, -sin, cx - cos * cx + sin * cy + tx, sin, cos, cy - sin * cx - cos * cy + ty, zero, zero],
            axis=1,
        )
        out = ops.image.affine_transform(batch, transform, "bilinear", "constant", self.fill_value)
        return out[0] if single else out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "zoom": self.zoom,
            "shift": self.shift,
            "fill_value": self.fill_value,
            "seed": self.seed,
        }


def build_augmentation(seed: int | None = None, horizontal_flip: bool = False) -> keras.Sequential:
    """Mild contrast and geometric augmentation for chest X-rays, as Keras preprocessing layers.

    ``RandomContrast(0.1)``, then ``RandomAffine``: rotation +-5 degrees, zoom +-10 %, shift +-5 % in one
    resampling; empty borders are black (like an X-ray's collimated border), never mirrored anatomy. Call it
    on batches ``(B, S, S, C)`` (a Sequential keeps the rank of its first call), uint8 or float in [0, 255],
    eagerly or in ``tf.data``; it returns float32 in [0, 255], same shape, different each call.

    No vertical flip: a chest X-ray is never upside down. No horizontal flip by default: the heart is on the
    left (situs inversus is rare), and flipping teaches the model the heart can be on either side, while side
    markers and text get mirrored too. Some papers flip anyway; ``horizontal_flip=True`` adds it.
    """
    seeds = [None] * 3 if seed is None else [seed, seed + 1, seed + 2]
    layers = [
        keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seeds[0]),
        RandomAffine(rotation=5.0, zoom=0.1, shift=0.05, seed=seeds[1]),
    ]
    if horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seeds[2]))
    return keras.Sequential(layers, name="augmentation")


def _split_rows(manifest: pd.DataFrame, split: str, class_names: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(
            f"The manifest has no column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)}."
        )
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be a non-empty list without duplicates, got {list(class_names)}.")
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        present = sorted(manifest["split"].dropna().unique().tolist())
        raise ValueError(f"No images with split={split!r} in the manifest (splits present: {present}).")
    unknown = sorted(map(str, set(rows["label"]) - set(class_names)))
    if unknown:
        raise ValueError(
            f"Labels {unknown} in split {split!r} are not in class_names {list(class_names)}: "
            "pass the dataset's full class list, or rebuild the manifest."
        )
    return rows


def _cache_file(cache: str | Path, split: str, image_size: int, rows: pd.DataFrame) -> str:
    """A cache file name unique to the split, size and exact file list, so a stale cache is never reused."""
    digest = hashlib.sha1(
        "\n".join(rows["path"].astype(str) + "\t" + rows["label"].astype(str)).encode()
    ).hexdigest()[:12]
    path = Path(cache).with_name(f"{Path(cache).name}-{split}-{image_size}px-{digest}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def make_dataset(
    manifest: pd.DataFrame,
    split: str,
    class_names: Sequence[str],
    *,
    image_size: int,
    batch_size: int,
    training: bool = False,
    augment: bool = False,
    seed: int = 42,
    cache: bool | str | Path = True,
) -> tf.data.Dataset:
    """Batches of ``(images float32 (B, S, S, 3) in [0, 255], labels one-hot float32 (B, C))`` for ``split``.

    ``training=True`` shuffles (seeded, a new order each epoch); otherwise the order is the manifest's.
    ``augment=True`` (training only) applies ``build_augmentation(seed)`` to each batch. ``cache=True`` keeps
    the decoded uint8 images in memory after the first epoch; a path string caches to files starting with
    that path instead (the split, size and a hash of the file list are appended). A corrupt image fails with a
    TensorFlow error: see the module docstring.
    """
    if augment and not training:
        raise ValueError("augment=True needs training=True: validation and test images are never augmented.")
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"image_size and batch_size must be positive, got {image_size} and {batch_size}.")
    rows = _split_rows(manifest, split, class_names)
    paths = rows["path"].astype(str).to_numpy()
    label_ids = rows["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy(np.int32)

    def load(path: tf.Tensor, label_id: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return load_image(path, image_size), label_id

    ds = tf.data.Dataset.from_tensor_slices((paths, label_ids))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache("" if cache is True else _cache_file(cache, split, image_size, rows))
    if training:
        ds = ds.shuffle(min(len(paths), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    with tf.device("/CPU:0"):  # tf.data runs on the CPU: keep the layers' random-state variables there
        augmentation = build_augmentation(seed) if augment else None
    num_classes = len(class_names)

    def finish(images: tf.Tensor, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if augmentation is not None:
            images = augmentation(images, training=True)
        return tf.image.grayscale_to_rgb(images), tf.one_hot(ids, num_classes, dtype=tf.float32)

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def class_weights(labels: Iterable[str], class_names: Sequence[str]) -> dict[int, float]:
    """Keras ``class_weight`` dict ``{class id: weight}``: sklearn's "balanced" n_samples / (C * n_class)."""
    labels = np.asarray(list(labels), dtype=object)
    present = set(labels.tolist())
    missing = [c for c in class_names if c not in present]
    if missing:
        raise ValueError(f"No training images for class(es) {missing}: a class weight would be infinite.")
    unknown = sorted(map(str, present - set(class_names)))
    if unknown:
        raise ValueError(f"Labels {unknown} are not in class_names {list(class_names)}.")
    weights = compute_class_weight("balanced", classes=np.asarray(class_names, dtype=object), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def preview_batch(dataset: tf.data.Dataset, class_names: Sequence[str], n: int = 8) -> Figure:
    """Plot the first ``n`` images of the first batch with their labels; returns the matplotlib Figure.

    A training dataset decodes its whole shuffle buffer before its first batch, so this takes a moment there.
    """
    import matplotlib.pyplot as plt

    images, labels = next(iter(dataset))
    n = min(n, int(images.shape[0]))
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), squeeze=False)
    for ax, image, label in zip(axes[0], images[:n].numpy(), labels[:n].numpy(), strict=True):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(class_names[int(label.argmax())], fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def augmentation_gallery(
    paths: Sequence[str],
    image_size: int,
    labels: Sequence[str] | None = None,
    n_variants: int = 5,
    seed: int = 0,
    horizontal_flip: bool = False,
) -> Figure:
    """One row per image: the image as the pipeline loads it, then ``n_variants`` random augmentations of it
    by :func:`build_augmentation` (the same layers training uses); ``labels`` name the rows. Returns the Figure."""
    import matplotlib.pyplot as plt

    if not paths:
        raise ValueError("No image paths given for the augmentation gallery.")
    augmentation = build_augmentation(seed, horizontal_flip=horizontal_flip)
    originals = tf.stack([load_image(str(p), image_size) for p in paths])
    variants = [augmentation(originals, training=True) for _ in range(n_variants)]
    fig, axes = plt.subplots(len(paths), n_variants + 1, figsize=(1.8 * (n_variants + 1), 1.9 * len(paths)))
    axes = np.atleast_2d(axes)
    for row in range(len(paths)):
        images = [originals[row], *(v[row] for v in variants)]
        for col, (ax, image) in enumerate(zip(axes[row], images, strict=True)):
            ax.imshow(np.asarray(image)[..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_title("original" if col == 0 else f"augmented {col}", fontsize=8)
            ax.axis("off")
        if labels is not None:
            axes[row, 0].set_ylabel(labels[row])
            axes[row, 0].axis("on")
            axes[row, 0].set(xticks=[], yticks=[])
    fig.tight_layout()
    plt.close(fig)
    return fig

"""The input pipeline (notebook 03): manifest rows -> ``tf.data`` batches of ``(images, one-hot labels)``.

Every function here is taught in notebook 03 (``healthy_class`` in 02) and saved from there (``# saved in utils/data.py``); a test keeps
the two copies identical. Images are decoded once to small grey ``uint8`` squares and cached; what changes
between epochs (order, augmentation) comes after the cache; the 3-channel ``float32`` copy that the models take is
made last. Every image is stretched to the square (no crop, no padding): a crop can cut off the lung bases, and
padding bands would show the original aspect ratio, which differs between classes in Kermany (a shortcut).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import layers
from sklearn.utils.class_weight import compute_class_weight

AUTOTUNE = tf.data.AUTOTUNE


# saved in utils/data.py
def healthy_class(class_names: list[str]) -> str:
    """The class of the healthy patients, found by its name (NORMAL in the Kermany set, "Normal" in the COVID-19
    database); the first class when no class is called that."""
    return next((name for name in class_names if name.upper() == "NORMAL"), class_names[0])


# saved in utils/data.py
def load_image(path: str | tf.Tensor, image_size: int) -> tf.Tensor:
    """One grey ``uint8`` image ``(S, S, 1)`` from a JPEG or PNG file, stretched to S x S."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=1, expand_animations=False)  # colour -> grey, alpha dropped
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)


# saved in utils/data.py
def build_augmentation(seed: int | None = None) -> keras.Sequential:
    """Small, plausible changes of a chest X-ray: rotation +-5 degrees, zoom and shift, exposure and contrast.

    Each layer gets a seed of its own: layers with the same seed draw the same random numbers, and every image's
    rotation, zoom, shift, exposure and contrast would then move together."""
    seeds = [None if seed is None else seed + i for i in range(5)]
    return keras.Sequential(
        [
            layers.RandomRotation(5 / 360, fill_mode="constant", seed=seeds[0]),  # empty corners stay black
            layers.RandomZoom(0.1, fill_mode="constant", seed=seeds[1]),
            layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seeds[2]),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seeds[3]),
            layers.RandomContrast((0.2, 0.2), value_range=(0, 255), seed=seeds[4]),  # x0.8 to x1.2 (0.2 alone: x1 to x1.2)
        ],
        name="augmentation",
    )


# saved in utils/data.py
def make_dataset(
    manifest: pd.DataFrame,
    split: str,
    class_names: list[str],
    image_size: int,
    batch_size: int,
    training: bool = False,
    seed: int = 42,
) -> tf.data.Dataset:
    """Batches of ``(float32 images (B, S, S, 3) in [0, 255], one-hot labels)`` of one split.

    Training batches are shuffled (a new order each epoch) and augmented; other splits keep the manifest's order.
    """
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"The manifest has no {split!r} images: prepare the dataset again (notebook 01).")
    labels = rows["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    ds = tf.data.Dataset.from_tensor_slices((rows["path"].to_numpy(str), labels))
    ds = ds.map(lambda path, label: (load_image(path, image_size), label), num_parallel_calls=AUTOTUNE)
    ds = ds.cache()  # decoded once; later epochs read the small grey images from memory
    if training:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training:
        with tf.device("/CPU:0"):  # tf.data runs on the CPU: keep the layers' random state there
            augment = build_augmentation(seed)
        ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE)

    def to_model(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:  # 3 channels, float, one-hot
        return tf.image.grayscale_to_rgb(tf.cast(images, tf.float32)), tf.one_hot(labels, len(class_names))

    return ds.map(to_model, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


# saved in utils/data.py
def class_weights(labels: pd.Series, class_names: list[str]) -> dict[int, float]:
    """Keras ``class_weight``: n_images / (n_classes x n_images_of_class), so every class counts the same."""
    weights = compute_class_weight("balanced", classes=np.array(class_names), y=labels.to_numpy())
    return {i: round(float(w), 3) for i, w in enumerate(weights)}


# saved in utils/data.py
@dataclass
class Data:
    """The three splits of one dataset as ``tf.data`` pipelines, with what training needs besides."""

    manifest: pd.DataFrame  # the rows the pipelines read, in their order
    class_names: list[str]
    class_weight: dict[int, float]
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset


# saved in utils/data.py
def make_data(manifest: pd.DataFrame, class_names: list[str], image_size: int, batch_size: int, seed: int) -> Data:
    """Train (shuffled, augmented), val and test pipelines, and the class weights of the training split."""
    sizes = dict(image_size=image_size, batch_size=batch_size, seed=seed)
    weights = class_weights(manifest.loc[manifest["split"] == "train", "label"], class_names)
    train = make_dataset(manifest, "train", class_names, training=True, **sizes)
    val = make_dataset(manifest, "val", class_names, **sizes)
    test = make_dataset(manifest, "test", class_names, **sizes)
    return Data(manifest, class_names, weights, train, val, test)


def load_images(paths: list[str], image_size: int) -> np.ndarray:
    """Images as the models take them, ``float32 (N, S, S, 3)`` in [0, 255], decoded like in training."""
    return np.stack([np.repeat(load_image(str(p), image_size).numpy(), 3, axis=-1) for p in paths]).astype(np.float32)

"""benchmarks/train_levers.py (issue 13): the stronger intensity augmentation keeps shape and the [0, 255] range,
is the identity at inference, and replaces ``utils.data.build_augmentation`` only inside its block."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from benchmarks import train_levers
from utils import data


def images(n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 1)).astype(np.float32)


def test_gamma_and_blur_keep_shape_and_range_and_are_identity_at_inference():
    random_gamma, random_blur = train_levers._layers()
    x = images()
    for layer in (random_gamma(seed=1), random_blur(seed=1)):
        trained = np.asarray(layer(x, training=True))
        assert trained.shape == x.shape
        assert trained.min() >= 0 and trained.max() <= 255
        assert not np.allclose(trained, x)  # it does change the images in training
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    flat = np.full((1, 16, 16, 1), 100.0, np.float32)  # a blur keeps a flat image flat (reflected borders)
    np.testing.assert_allclose(np.asarray(random_blur(seed=1)(flat, training=True)), flat, atol=1e-3)


def test_strong_intensity_replaces_the_course_augmentation_only_inside_its_block():
    original = data.build_augmentation
    with train_levers.augmentation("baseline"):
        assert data.build_augmentation is original
    with train_levers.augmentation("strong-intensity"):
        augment = data.build_augmentation(42)
    assert data.build_augmentation is original
    kinds = [type(layer).__name__ for layer in augment.layers]
    assert kinds == ["RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness", "RandomContrast",
                     "RandomGamma", "RandomBlur"]  # fmt: skip
    assert augment.layers[3].factor == (-0.3, 0.3) and augment.layers[4].factor == (0.5, 0.5)
    batch = tf.constant(images().astype(np.uint8))
    out = np.asarray(augment(batch, training=True))
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(np.asarray(augment(batch, training=False)), batch.numpy(), atol=1e-4)

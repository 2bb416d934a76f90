"""The images of ``train_levers.py``'s ``equalize`` and ``crop`` variants: ``utils.data.load_image`` replaced, for
training there and for ``levers.py``, which predicts a trained run's images again (issue 13)."""

from __future__ import annotations

import contextlib

CROP_KEEP = 0.8  # "crop": the central 80% of each side (a tenth of the image cut away on every edge)

ORIGINAL_LOAD = None  # the utils.data.load_image that equalize and crop wrap, set by images_loaded_as()


def equalize_histogram(image):
    """Histogram equalisation of one grey ``uint8`` image ``(S, S, 1)``: each grey level becomes its rank (the
    cumulative share of pixels at or below it) times 255, so every image uses the whole range evenly."""
    import tensorflow as tf

    values = tf.cast(tf.reshape(image, [-1]), tf.int32)
    cdf = tf.cumsum(tf.math.bincount(values, minlength=256, maxlength=256))
    cdf_min = tf.reduce_min(tf.boolean_mask(cdf, cdf > 0))  # the darkest level present maps to 0
    spread = tf.maximum(tf.size(values) - cdf_min, 1)
    lookup = tf.cast(tf.round(255 * (cdf - cdf_min) / spread), tf.uint8)
    return tf.gather(lookup, tf.cast(image, tf.int32))


def load_equalized(path, image_size):
    """``utils.data.load_image``, then :func:`equalize_histogram` (train, validation and test alike)."""
    return equalize_histogram(ORIGINAL_LOAD(path, image_size))


def load_cropped(path, image_size):
    """``utils.data.load_image`` at ``image_size / CROP_KEEP``, then its central ``image_size`` square: the central
    80% of the image, stretched to ``image_size`` (train, validation and test alike)."""
    large = round(image_size / CROP_KEEP)
    offset = (large - image_size) // 2
    return ORIGINAL_LOAD(path, large)[offset : offset + image_size, offset : offset + image_size, :]


LOADERS = {"equalize": load_equalized, "crop": load_cropped}  # the variants that load every image another way


@contextlib.contextmanager
def images_loaded_as(variant: str | None):
    """``utils.data.load_image`` as ``variant`` trained with it while the block runs (restored after): equalised or
    cropped images for those variants (:data:`LOADERS`), unchanged for the others and for None. For training in
    ``train_levers.py``, and for ``levers.py``, which predicts a run's images again (its ``benchmark_variant``)."""
    global ORIGINAL_LOAD
    from utils import data

    if variant not in LOADERS:
        yield
        return
    previous = ORIGINAL_LOAD = data.load_image  # what the variant's loader wraps
    data.load_image = LOADERS[variant]
    try:
        yield
    finally:
        data.load_image = previous

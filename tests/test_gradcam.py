"""Grad-CAM: its map on hand-made feature maps and gradients, on a model whose answer is known exactly, the
randomisation sanity check, the overlay and the localisation scores."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from utils.gradcam import (
    gradcam_heatmap,
    localisation,
    overlay,
    pointing_game,
    randomize_layers,
    weight_feature_maps,
    zoom_axes,
)
from utils.models import add_head, build_cnn


def test_weight_feature_maps_keeps_only_positive_evidence():
    a0 = np.array([[1.0, 2.0], [3.0, 4.0]])
    a1 = np.array([[4.0, 3.0], [2.0, 1.0]])
    features = np.stack([a0, a1], axis=-1)[None]  # (1, 2, 2, 2)
    grads = np.stack([np.full((2, 2), 1.0), np.array([[-2.0, 0.0], [0.0, -2.0]])], axis=-1)[None]  # means 1, -1
    cam = weight_feature_maps(tf.constant(features, tf.float32), tf.constant(grads, tf.float32)).numpy()
    # 1 * a0 - 1 * a1 = [[-3, -1], [1, 3]]: the negative half is cut to 0, the positive half is exact
    np.testing.assert_allclose(cam, [[[0.0, 0.0], [1.0, 3.0]]])


def test_weight_feature_maps_weighs_each_image_by_its_own_gradients():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    grads = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    expected = np.maximum(np.einsum("nhwk,nk->nhw", features, grads.mean(axis=(1, 2))), 0)
    cam = weight_feature_maps(tf.constant(features), tf.constant(grads)).numpy()
    assert cam.shape == (3, 4, 5)
    np.testing.assert_allclose(cam, expected, rtol=1e-5, atol=1e-6)
    assert (expected == 0).any() and (expected > 0).any()  # the example has both signs


def known_model(size: int = 8) -> keras.Model:
    """Features = the sum of the image's channels (a 1x1 convolution of ones); head kernel [[-1, +1]]: the logit
    of class 1 rises with every pixel (its map is the image), class 0's falls (its map is empty)."""
    inputs = keras.Input((size, size, 3), name="image")
    features = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="features")(inputs)
    model = add_head(inputs, features, 2, name="known")
    model.get_layer("head_output").set_weights([np.array([[-1.0, 1.0]]), np.zeros(2)])
    return model


def test_gradcam_of_a_model_with_a_known_answer():
    model = known_model()
    image = np.zeros((1, 8, 8, 3), np.float32)
    image[0, 2:5, 3:7] = 60.0
    image[0, 6, 6] = 20.0
    grey = image[0].sum(-1)
    maps = gradcam_heatmap(model, image, np.array([1]), "features")
    assert maps.shape == (1, 8, 8)
    np.testing.assert_allclose(maps[0], grey / grey.max(), atol=1e-5)  # the image itself, divided by its maximum
    np.testing.assert_allclose(gradcam_heatmap(model, image, np.array([0]), "features"), 0.0, atol=1e-6)


def test_gradcam_explains_the_class_asked_for_per_image_and_upsamples():
    model = known_model(size=4)
    big = keras.Model(model.inputs, model.outputs)  # same layers
    images = np.zeros((2, 4, 4, 3), np.float32)
    images[0, 0, 0] = 10.0
    images[1, 3, 3] = 10.0
    maps = gradcam_heatmap(big, images, np.array([1, 0]), "features")
    assert maps[0, 0, 0] == pytest.approx(1.0) and maps[0].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(maps[1], 0.0, atol=1e-6)  # class 0 of the second image: no positive evidence



def test_gradcam_of_a_cnn_equals_the_recipe_written_out():
    """An 8x8 feature map (32 px, the stem and one pooling), its gradient of the class LOGIT, ReLU, divided by the
    maximum, resized to 32x32."""
    keras.utils.set_random_seed(0)
    cnn = build_cnn(2, 32, filters=(4, 8))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    classes = np.array([0, 1])
    maps = gradcam_heatmap(cnn, images, classes, "block2_relu2")
    inner = keras.Model(cnn.input, [cnn.get_layer("block2_relu2").output, cnn.get_layer("head_pool").output])
    kernel, bias = (np.asarray(w) for w in cnn.get_layer("head_output").get_weights())
    with tf.GradientTape() as tape:
        features, pooled = inner(images, training=False)
        logits = tf.matmul(pooled, kernel) + bias
        chosen = tf.reduce_sum(logits * tf.one_hot(classes, 2), axis=1)
    grads = tape.gradient(chosen, features).numpy()
    features = features.numpy()
    small = np.maximum((features * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    small = small / (small.max(axis=(1, 2), keepdims=True) + 1e-8)
    expected = tf.image.resize(small[..., None], (32, 32)).numpy()[..., 0]
    assert maps.shape == (2, 32, 32) and small.shape == (2, 8, 8)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    assert maps.max() > 0.5  # something to explain


def test_randomize_layers_changes_a_copy_only():
    keras.utils.set_random_seed(0)
    model = build_cnn(2, 32, filters=(4, 8))
    before = [w.copy() for w in model.get_weights()]
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    steps = randomize_layers(model, images, "block2_relu2", steps=3, seed=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # the trained model is untouched
    assert [s["layer"] for s in steps][0] == "trained" and steps[0]["spearman"] == 1.0
    kernels = [layer.name for layer in reversed(model.layers) if getattr(layer, "kernel", None) is not None]
    assert [s["layer"] for s in steps[1:]] == [kernels[0], kernels[len(kernels) // 2], kernels[-1]]
    assert all(s["maps"].shape == (3, 32, 32) for s in steps)
    np.testing.assert_allclose(steps[0]["maps"], gradcam_heatmap(model, images, model.predict(images, verbose=0).argmax(1),
                                                                  "block2_relu2"), atol=1e-6)  # fmt: skip
    assert steps[-1]["spearman"] < 0.9  # every filter random: the maps no longer follow the trained ones


def test_overlay_blends_the_heatmap_over_grey():
    image = np.full((4, 5, 1), 100.0)
    heat = np.zeros((4, 5))
    heat[0, 0] = 1.0
    assert overlay(image, heat, alpha=0.0).tolist() == np.full((4, 5, 3), 100, np.uint8).tolist()
    full = overlay(image[..., 0], heat, alpha=1.0)
    assert full.dtype == np.uint8 and full.shape == (4, 5, 3)
    assert full[0, 0].tolist() == [127, 0, 0]  # jet at 1.0 is dark red
    assert full[1, 1].tolist() == [0, 0, 127]  # jet at 0.0 is dark blue
    assert overlay(np.full((4, 5, 3), 100.0), heat).shape == (4, 5, 3)


def test_pointing_game_and_localisation_by_hand():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True  # a quarter of each image
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0] = 1.0  # hottest pixel inside
    maps[1, 3, 3] = 1.0  # outside
    # maps[2] blank: a miss, not a hit at pixel 0
    assert pointing_game(maps, masks) == pytest.approx(1 / 3)
    result = localisation(maps, masks)
    # mean heat inside: 1 over 12 lesion pixels; outside: 1 over 36 others -> 3
    assert result == {"pointing game": 0.333, "random pixel": 0.25, "heat inside / outside": 3.0, "images": 3}
    uniform = np.ones((3, 4, 4))
    assert localisation(uniform, masks)["heat inside / outside"] == 1.0  # no preference
    assert pointing_game(uniform, masks) == 0.0  # flat maps point nowhere


def test_zoom_axes_changes_the_aspect_ratio_of_a_centred_square_and_nothing_else():
    square = np.zeros((1, 60, 60, 1), np.float32)
    square[:, 20:40, 20:40] = 255.0  # 20 x 20 px, centred

    def extent(image: np.ndarray) -> tuple[int, int]:
        """Rows and columns of the bright square (above half intensity)."""
        bright = image[0, ..., 0] > 127.5
        return int(bright.any(axis=1).sum()), int(bright.any(axis=0).sum())

    np.testing.assert_allclose(zoom_axes(square, 1.0, 1.0), square)  # no zoom: the same image
    assert extent(zoom_axes(square, 1.5, 1.0)) == (20, 30)  # wider: 60 / 1.5 = 40 columns kept, stretched to 60
    assert extent(zoom_axes(square, 1.0, 1.5)) == (30, 20)  # taller
    assert extent(zoom_axes(square, 1.5, 1.5)) == (30, 30)  # both: tighter framing, the same aspect ratio
    grey = zoom_axes(np.full((3, 60, 60, 3), 200.0, np.float32), 1.2, 1.0)
    assert grey.shape == (3, 60, 60, 3) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, 200.0)  # a flat image stays flat: no empty border is filled in

"""Grad-CAM on tiny models trained on a toy problem (a bright square = positive), plus localisation scores."""

from __future__ import annotations

import numpy as np
import pytest

from utils import gradcam
from utils.models import build_model

SIZE, SQUARE = 40, 8


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw 0-255 images (n, SIZE, SIZE, 3), labels (odd index = a bright square somewhere) and square masks."""
    rng = np.random.default_rng(seed)
    x = rng.normal(40.0, 15.0, size=(n, SIZE, SIZE, 3)).clip(0, 255).astype(np.float32)
    labels = np.arange(n) % 2
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, SIZE - SQUARE + 1, size=2)
        x[i, r : r + SQUARE, c : c + SQUARE] = 220.0
        masks[i, r : r + SQUARE, c : c + SQUARE] = True
    return x, labels, masks


def contract_cnn(size: int = SIZE, name: str = "toy"):
    """A model following the course contract: Rescaling, conv blocks, head_pool, head_dropout, head_output."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    h = layers.Rescaling(1.0 / 255)(inputs)
    for filters in (8, 16):
        h = layers.Conv2D(filters, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.9)(h)
        h = layers.ReLU()(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Conv2D(16, 3, padding="same", name="last_conv")(h)
    h = layers.ReLU(name="last_relu")(h)
    h = layers.GlobalAveragePooling2D(name="head_pool")(h)
    h = layers.Dropout(0.2, name="head_dropout")(h)
    outputs = layers.Dense(2, activation="softmax", dtype="float32", name="head_output")(h)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def trained():
    """The contract CNN trained for 4 epochs on 400 toy images (train accuracy reaches 1.0)."""
    import keras

    keras.utils.set_random_seed(0)
    x, labels, _ = squares(400, seed=0)
    model = contract_cnn()
    model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    model.fit(x, keras.utils.to_categorical(labels, 2), epochs=4, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def test_set():
    return squares(40, seed=1)


# ------------------------------------------------------------------------------------------ layers, maps
@pytest.mark.slow
def test_find_target_layer_uses_head_pool_input_else_last_4d_layer():
    import keras
    from keras import layers

    assert gradcam.find_target_layer(contract_cnn()) == "last_relu"

    inputs = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, name="conv_a")(inputs)
    h = layers.Conv2D(4, 3, name="conv_b")(h)
    flat = layers.Dense(2, activation="softmax")(layers.Flatten()(h))
    assert gradcam.find_target_layer(keras.Model(inputs, flat)) == "conv_b"

    vector = keras.Input((5,))
    with pytest.raises(ValueError, match="4-D"):
        gradcam.find_target_layer(keras.Model(vector, layers.Dense(2)(vector)))


@pytest.mark.slow
def test_trained_model_classifies_and_maps_have_input_shape_and_range(trained, test_set):
    x, labels, _ = test_set
    assert (trained.predict(x, verbose=0).argmax(axis=1) == labels).mean() >= 0.9
    maps = gradcam.gradcam_maps(trained, x, batch_size=16)
    assert maps.shape == (len(x), SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    assert np.all((peaks == 0.0) | np.isclose(peaks, 1.0))  # each map is blank or scaled to a peak of 1
    assert gradcam.score_kind(trained) == "logit"


@pytest.mark.slow
@pytest.mark.parametrize("method", gradcam.METHODS)
def test_maps_point_at_the_square_far_more_often_than_chance(trained, test_set, method):
    x, labels, masks = test_set
    pos = labels == 1
    maps = gradcam.gradcam_maps(trained, x[pos], class_index=1, method=method)
    chance = gradcam.random_baseline(masks[pos], n=500, seed=0)
    score = gradcam.pointing_game(maps, masks[pos])
    assert chance < 0.1
    assert score > 0.6 and score > 5 * chance
    assert gradcam.heat_inside_ratio(maps, masks[pos]) > 2.0


@pytest.mark.slow
def test_maps_match_the_closed_form_for_a_gap_dense_head(trained, test_set):
    """With GAP -> Dense, dlogit_c/dA_k = W[k, c] / (h w) everywhere: Grad-CAM is CAM (Selvaraju 2017, sec. 3.1)
    and the Grad-CAM++ weights reduce to h w relu(g_k) / (2 + sum(A_k) g_k)."""
    import keras
    import tensorflow as tf

    x = test_set[0][1::2][:6]  # images with a square: class 1 has positive evidence there
    features = keras.Model(trained.input, trained.get_layer("last_relu").output)(x).numpy()
    g = trained.get_layer("head_output").get_weights()[0][:, 1] / (features.shape[1] * features.shape[2])
    sums = features.sum(axis=(1, 2))  # (N, K)
    weights = {
        "gradcam": np.broadcast_to(g, sums.shape),
        "gradcam++": features.shape[1] * features.shape[2] * np.maximum(g, 0) / (2.0 + sums * g),
    }
    for method, w in weights.items():
        cam = np.maximum(np.einsum("nhwk,nk->nhw", features, w), 0.0)
        cam = tf.image.resize(cam[..., None], (SIZE, SIZE), method="bilinear").numpy()[..., 0]
        expected = cam / cam.max(axis=(1, 2), keepdims=True)
        got = gradcam.gradcam_maps(trained, x, class_index=1, method=method)
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.slow
def test_class_index_none_int_and_per_image(trained, test_set):
    x = test_set[0][:6]
    predicted = trained.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_allclose(gradcam.gradcam_maps(trained, x), gradcam.gradcam_maps(trained, x, predicted))
    as_one = gradcam.gradcam_maps(trained, x, class_index=1)
    as_zero = gradcam.gradcam_maps(trained, x, class_index=0)
    mixed = gradcam.gradcam_maps(trained, x, class_index=[0, 1, 0, 1, 0, 1])
    np.testing.assert_allclose(mixed[::2], as_zero[::2], atol=1e-6)
    np.testing.assert_allclose(mixed[1::2], as_one[1::2], atol=1e-6)
    assert not np.allclose(as_one[1::2], as_zero[1::2])  # the two classes are explained differently
    with pytest.raises(ValueError, match=r"0\.\.1"):
        gradcam.gradcam_maps(trained, x, class_index=2)
    with pytest.raises(ValueError, match="one int per image"):
        gradcam.gradcam_maps(trained, x, class_index=[0, 1])
    with pytest.raises(ValueError, match="method"):
        gradcam.gradcam_maps(trained, x, method="cam")
    with pytest.raises(ValueError, match=r"image\[None\]"):
        gradcam.gradcam_maps(trained, x[0])
    with pytest.raises(ValueError, match="no layer 'nope'"):
        gradcam.gradcam_maps(trained, x, layer_name="nope")


@pytest.mark.slow
@pytest.mark.parametrize("method", gradcam.METHODS)
def test_zero_gradient_gives_zero_maps_not_nan(method):
    model = contract_cnn(32)
    head = model.get_layer("head_output")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])  # the logits ignore the features
    maps = gradcam.gradcam_maps(model, squares(3, seed=2)[0][:, :32, :32], method=method)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all() and not maps.any()


@pytest.mark.slow
def test_mixed_precision_feature_map_gives_the_float32_maps():
    import keras
    from keras import layers

    def small(dtype: str) -> keras.Model:
        inputs = keras.Input((16, 16, 3))
        h = layers.Rescaling(1.0 / 255)(inputs)
        h = layers.Conv2D(8, 3, activation="relu", dtype=dtype, name="conv")(h)
        h = layers.GlobalAveragePooling2D(name="head_pool", dtype=dtype)(h)
        return keras.Model(
            inputs, layers.Dense(2, activation="softmax", dtype="float32", name="head_output")(h)
        )

    keras.utils.set_random_seed(0)
    full, mixed = small("float32"), small("mixed_float16")
    full.get_layer("head_output").set_weights([np.tile([[-1.0, 1.0]], (8, 1)), np.zeros(2)])  # class 1: all +
    mixed.set_weights(full.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, size=(4, 16, 16, 3))
    expected = gradcam.gradcam_maps(full, x, class_index=1)
    assert expected.any()
    np.testing.assert_allclose(gradcam.gradcam_maps(mixed, x, class_index=1), expected, atol=0.02)


@pytest.mark.slow
def test_probability_is_explained_with_a_warning_when_logits_are_unreachable():
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = layers.GlobalAveragePooling2D(name="head_pool")(h)
    outputs = layers.Lambda(lambda t: keras.ops.softmax(t), name="head_output")(layers.Dense(2)(h))
    model = keras.Model(inputs, outputs)
    assert gradcam.score_kind(model) == "probability"
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 16, 16, 3))
    with pytest.warns(UserWarning, match="probability"):
        maps = gradcam.gradcam_maps(model, x, class_index=1)
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()


# ------------------------------------------------------------------------------------------- overlay, plots
def test_overlay_heatmap_blends_and_resizes():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, size=(20, 24, 3)).astype(np.float32)
    heat = rng.uniform(0, 1, size=(5, 6))
    out = gradcam.overlay_heatmap(image, heat)
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(
        gradcam.overlay_heatmap(image, heat, alpha=0.0), np.rint(image).astype(np.uint8)
    )
    full = gradcam.overlay_heatmap(image, np.ones((20, 24)), alpha=1.0, cmap="jet")
    assert (full == full[0, 0]).all() and full[0, 0, 0] > 100 and full[0, 0, 2] < 50  # jet(1.0) is dark red
    gray = gradcam.overlay_heatmap(image[..., :1].astype(np.uint8), np.zeros((20, 24)), alpha=0.5)
    assert gray.shape == (20, 24, 3)
    with pytest.raises(ValueError, match="alpha"):
        gradcam.overlay_heatmap(image, heat, alpha=1.5)


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    x, _, masks = squares(2, seed=3)
    maps = np.random.default_rng(0).uniform(size=(2, SIZE, SIZE)).astype(np.float32)
    fig = gradcam.plot_gradcam_grid(x, maps, ["a", "b"], masks=masks)
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "a"
    results = [
        {"layer": name, "spearman": rho, "spearman_abs": abs(rho), "maps": maps}
        for name, rho in [("trained", 1.0), ("head_output", 0.4), ("conv", -0.1)]
    ]
    fig2 = gradcam.plot_sanity_check(results, images=x, n_images=2)
    assert len(fig2.axes) == 1 + 2 * 3
    assert plt.get_fignums() == []  # both figures are closed in pyplot: a notebook shows each once


# ----------------------------------------------------------------------------------------- sanity check
@pytest.mark.slow
def test_cascading_randomization_destroys_maps_and_leaves_model_alone(trained, test_set):
    x, labels, _ = test_set
    before = [w.copy() for w in trained.get_weights()]
    results = gradcam.cascading_randomization(trained, x[labels == 1][:10], class_index=1, seed=0)
    after = trained.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))

    layers = gradcam.randomizable_layers(trained)
    assert layers[0] == "head_output" and "last_conv" in layers
    assert [r["layer"] for r in results] == ["trained", *layers]
    assert results[0]["spearman"] == pytest.approx(1.0)
    assert results[-1]["spearman_abs"] < 0.5
    assert results[-1]["maps"].shape == results[0]["maps"].shape
    assert not np.allclose(results[-1]["maps"], results[0]["maps"])

    subset = gradcam.cascading_randomization(trained, x[labels == 1][:4], class_index=1, n_steps=2)
    assert [r["layer"] for r in subset] == ["trained", layers[0], layers[-1]]


# ----------------------------------------------------------------------------------------- localisation
def hand_made() -> tuple[np.ndarray, np.ndarray]:
    """Three 10x10 maps and masks: a hit, a miss two pixels from its mask, and a hit."""
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[:, 2:4, 2:4] = True
    maps = np.full((3, 10, 10), 0.5, dtype=np.float32)
    maps[0, 3, 3] = 1.0
    maps[1, 3, 5] = 1.0  # two pixels right of the mask
    maps[2, 2, 2] = 1.0
    return maps, masks


def test_pointing_game_with_and_without_tolerance():
    maps, masks = hand_made()
    assert gradcam.pointing_game(maps, masks) == pytest.approx(2 / 3)
    assert gradcam.pointing_game(maps, masks, tolerance_px=1) == pytest.approx(2 / 3)
    assert gradcam.pointing_game(maps, masks, tolerance_px=2) == pytest.approx(1.0)
    blank = np.zeros_like(maps)  # no peak anywhere, and argmax (0, 0) lies inside these masks
    corner = np.zeros_like(masks)
    corner[:, 0, 0] = True
    assert gradcam.pointing_game(blank, corner) == 0.0
    # masks at twice the map resolution are resized to the map size
    big = np.repeat(np.repeat(masks, 2, axis=1), 2, axis=2)
    assert gradcam.pointing_game(maps, big) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        gradcam.pointing_game(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="same N"):
        gradcam.pointing_game(maps, masks[:2])


def test_heat_inside_ratio_and_share():
    masks = np.zeros((2, 10, 10), dtype=bool)
    masks[:, :5, :] = True  # half the image
    maps = np.where(masks, 1.0, 0.5).astype(np.float32)
    assert gradcam.heat_inside_ratio(maps, masks) == pytest.approx(2.0)
    assert gradcam.heat_inside_share(maps, masks) == pytest.approx(50 / 75)
    uniform = np.ones_like(maps)
    assert gradcam.heat_inside_ratio(uniform, masks) == pytest.approx(1.0)
    assert gradcam.heat_inside_share(np.zeros_like(maps), masks) == 0.0
    assert gradcam.heat_inside_ratio(masks.astype(np.float32), masks) == float("inf")


def test_random_baseline_matches_mask_area_and_scores_table():
    maps, masks = hand_made()
    area = masks.mean()  # 4 / 100
    assert gradcam.mask_area_fraction(masks) == pytest.approx(area)
    assert gradcam.random_baseline(masks, n=4000, seed=0) == pytest.approx(area, abs=0.01)
    grown = gradcam.mask_area_fraction(masks, tolerance_px=1)
    # the 2x2 square plus its 8 edge neighbours (Euclidean distance 1)
    assert grown == pytest.approx(12 / 100)
    assert gradcam.random_baseline(masks, n=4000, seed=1, tolerance_px=1) == pytest.approx(grown, abs=0.015)
    scores = gradcam.localisation_scores(maps, masks)
    assert scores["pointing_game"] == pytest.approx(2 / 3)
    assert scores["pointing_baseline"] == pytest.approx(area)
    assert scores["share_baseline"] == pytest.approx(area)
    assert scores["heat_inside_ratio"] > 1.0 and scores["n_images"] == 3


# ------------------------------------------------------------------------------- the course's own models
@pytest.mark.slow
def test_flat_keras_applications_backbone_reaches_its_last_conv():
    import keras
    from keras import layers

    inputs = keras.Input((64, 64, 3))
    scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNet(input_tensor=scaled, include_top=False, weights=None, alpha=0.25)
    h = layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    outputs = layers.Dense(2, activation="softmax", name="head_output")(
        layers.Dropout(0.2, name="head_dropout")(h)
    )
    model = keras.Model(inputs, outputs)
    target = gradcam.find_target_layer(model)
    assert target == backbone.layers[-1].name == "conv_pw_13_relu"
    assert model.get_layer(target) is backbone.layers[-1]  # the flat model's own layer, nothing rebuilt
    x = squares(2, seed=4)[0]
    x = np.pad(x, ((0, 0), (12, 12), (12, 12), (0, 0)))
    for method in gradcam.METHODS:
        maps = gradcam.gradcam_maps(model, x, class_index=0, method=method)
        assert (
            maps.shape == (2, 64, 64) and np.isfinite(maps).all() and 0.0 <= maps.min() <= maps.max() <= 1.0
        )


@pytest.mark.slow
def test_course_custom_cnn_maps_and_randomisation():
    built = build_model("cnn", num_classes=2, image_size=32, weights="none", seed=0, verbose=False)
    model = built.model
    target = gradcam.find_target_layer(model)
    assert target == built.backbone_layer_names[-1] == "cnn_block4_2_relu"
    x = squares(3, seed=5)[0][:, :32, :32]
    maps = gradcam.gradcam_maps(model, x, class_index=[0, 1, 1], method="gradcam++")
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all() and maps.max() <= 1.0
    before = [w.copy() for w in model.get_weights()]
    results = gradcam.cascading_randomization(model, x, class_index=1, n_steps=3)
    assert [r["layer"] for r in results][:2] == ["trained", "head_output"] and len(results) == 4
    assert results[-1]["layer"] == "cnn_block1_1_conv"  # the bottom layer: everything is random by then
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.slow
def test_course_mobilenet_reaches_the_backbone_last_conv_without_rebuilding():
    built = build_model("mobilenet_025", num_classes=2, image_size=64, weights="none", seed=0, verbose=False)
    model, n_layers = built.model, len(built.model.layers)
    target = gradcam.find_target_layer(model)
    assert target == built.backbone_layer_names[-1] == "conv_pw_13_relu"
    assert model.get_layer(target) in built.backbone_layers()
    maps = gradcam.gradcam_maps(model, np.full((2, 64, 64, 3), 128.0, dtype=np.float32), class_index=0)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    assert len(model.layers) == n_layers  # nothing was added to or rebuilt in the caller's model

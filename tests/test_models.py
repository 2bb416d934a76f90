"""The course's models: the CNN's layers and size, each backbone's pixel scaling against Keras's own
``preprocess_input``, every backbone's named layers (built once each, 32 px, random weights), the shipped
MobileNet 0.25 ImageNet weights, and a saved model that takes raw images."""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest

from utils.course.weights import SHIPPED, resolve_weights
from utils.models import (
    BACKBONES,
    DENSENET121,
    GRADCAM_LAYERS,
    MOBILENET,
    MOBILENET_025,
    MODELS,
    RESNET50,
    VGG16,
    build_cnn,
    build_transfer_model,
    preprocess,
)

SIZE = 32


@pytest.fixture(scope="module")
def transfer_models() -> dict[str, keras.Model]:
    """Every backbone with the course's head, built once (ResNet50 and DenseNet121 are the slow ones)."""
    return {name: build_transfer_model(b, 2, SIZE, weights=None) for name, b in BACKBONES.items()}


def test_registry():
    assert MODELS == ("cnn", "vgg16", "resnet50", "mobilenet", "mobilenet_025", "densenet121")
    assert {b.name: b for b in (VGG16, RESNET50, MOBILENET, MOBILENET_025, DENSENET121)} == BACKBONES
    assert set(GRADCAM_LAYERS) == set(MODELS)
    assert MOBILENET_025.options == {"alpha": 0.25} and MOBILENET.options == {}
    assert {b.name: b.preprocessing for b in BACKBONES.values()} == {
        "vgg16": "caffe", "resnet50": "caffe", "mobilenet": "tf", "mobilenet_025": "tf", "densenet121": "torch"}


def test_cnn_layers_and_parameter_count():
    model = build_cnn(3, SIZE, filters=(4,))
    # conv 3x3x3x4 + BN 4x4 + conv 3x3x4x4 + BN 4x4 + dense 4x3 + 3
    assert model.count_params() == 108 + 16 + 144 + 16 + 12 + 3
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 3)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["head_pool", "head_dropout", "head_output"]
    assert "block1_pool" not in names  # no pooling after the last block
    assert model.get_layer("block1_conv1").strides == (2, 2) and model.get_layer("block1_conv2").strides == (1, 1)
    assert model.get_layer("block1_relu2").output.shape == (None, SIZE // 2, SIZE // 2, 4)  # the stem halves the image
    two = build_cnn(2, SIZE, filters=(4, 8))
    assert "block1_pool" in [layer.name for layer in two.layers]
    assert two.get_layer("block2_relu2").output.shape == (None, SIZE // 4, SIZE // 4, 8)  # and each pooling again


def test_default_cnn_has_the_gradcam_layer_and_softmax_output():
    model = build_cnn(2, SIZE)
    assert model.get_layer(GRADCAM_LAYERS["cnn"]).output.shape == (None, SIZE // 16, SIZE // 16, 256)
    probs = model.predict(np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("head_output").get_config()["activation"] == "softmax"
    assert model.get_layer("head_dropout").rate == 0.3


@pytest.mark.parametrize(
    ("kind", "reference"),
    [("tf", keras.applications.mobilenet.preprocess_input), ("caffe", keras.applications.vgg16.preprocess_input),
     ("torch", keras.applications.densenet.preprocess_input)],
)  # fmt: skip
def test_preprocess_layers_equal_keras_preprocess_input(kind, reference):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    pixels[0, 0, 0] = [255.0, 0.0, 10.0]  # an asymmetric pixel: a missing RGB -> BGR flip shows
    inputs = keras.Input((5, 5, 3))
    scaled = keras.Model(inputs, preprocess(inputs, kind)).predict(pixels, verbose=0)
    np.testing.assert_allclose(scaled, reference(pixels.copy()), rtol=1e-5, atol=1e-4)


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ValueError, match="Unknown preprocessing 'rgb': use 'caffe', 'tf' or 'torch'"):
        preprocess(keras.Input((5, 5, 3)), "rgb")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_transfer_model_layers(transfer_models, name):
    backbone, model = BACKBONES[name], transfer_models[name]
    assert model.name == name
    assert model.input_shape == (None, SIZE, SIZE, 3) and model.output_shape == (None, 2)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["head_pool", "head_dropout", "head_output"]
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "the backbone must not be nested"
    # the head pools the feature layer; fine-tuning and Grad-CAM find their layers in the model itself
    assert model.get_layer("head_pool").input is model.get_layer(backbone.feature_layer).output
    assert GRADCAM_LAYERS[name] == backbone.feature_layer
    start = names.index(backbone.unfreeze_from)
    assert 0 < start < names.index(backbone.feature_layer)
    assert any(n.startswith("preprocess_") for n in names[:4])


def test_transfer_model_takes_raw_pixels(transfer_models):
    """The model scales raw 0-255 pixels itself: its first layers equal the backbone's preprocess_input."""
    model = transfer_models["mobilenet_025"]
    pixels = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    scaled = keras.Model(model.inputs, model.get_layer("preprocess_tf").output).predict(pixels, verbose=0)
    np.testing.assert_allclose(scaled, keras.applications.mobilenet.preprocess_input(pixels.copy()), atol=1e-5)


def test_shipped_mobilenet_025_weights_are_used_and_loaded(capsys):
    path, used = resolve_weights(MOBILENET_025, "cached", 64)
    assert path == str(SHIPPED / "mobilenet_2_5_224_tf_no_top.h5")
    assert used == "imagenet"  # Keras names its file 224 px for every size that has no file of its own
    assert resolve_weights(MOBILENET_025, "cached", 128) == (path, "imagenet (the 224 px file, at 128 px)")
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out
    model = build_transfer_model(MOBILENET_025, 2, 64, path)
    with h5py.File(path) as stored:
        for layer in ("conv1", "conv_pw_13"):
            np.testing.assert_array_equal(model.get_layer(layer).kernel.numpy(), stored[f"{layer}/{layer}/kernel:0"][()])
        np.testing.assert_array_equal(model.get_layer("conv_pw_13_bn").moving_variance.numpy(),
                                      stored["conv_pw_13_bn/conv_pw_13_bn/moving_variance:0"][()])  # fmt: skip


def test_saved_model_loads_with_plain_keras_and_takes_raw_images(tmp_path):
    model = build_cnn(2, SIZE, filters=(4, 8))
    pixels = np.random.default_rng(2).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), rtol=1e-5, atol=1e-6)

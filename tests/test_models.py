"""Model registry: flat graphs, in-model preprocessing, weights resolution (offline, cache, file), reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import SHARED
from utils import models
from utils.models import MODEL_REGISTRY, WeightsError, WeightsUnavailableError, build_model, count_macs

MOBILENET_025_FILE = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
RAW = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")

pytestmark = pytest.mark.slow


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """An empty Keras cache and no network: the state of a fresh offline machine."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "_network_problem", lambda: "offline (test)")
    return tmp_path / "keras" / "models"


@pytest.fixture
def real_file() -> Path:
    if not MOBILENET_025_FILE.is_file():
        pytest.skip(f"{MOBILENET_025_FILE} is absent (it exists only on the course's build machines)")
    return MOBILENET_025_FILE


def _reference_mobilenet_025(path: Path) -> dict[str, np.ndarray]:
    """Weights of Keras' own MobileNet 0.25 loaded from ``path``: name -> first weight array."""
    reference = keras.applications.MobileNet(
        input_shape=(224, 224, 3), alpha=0.25, include_top=False, weights=str(path)
    )
    return {layer.name: layer.get_weights()[0] for layer in reference.layers if layer.get_weights()}


@pytest.mark.parametrize("name", list(MODEL_REGISTRY))
def test_every_registry_model_builds_flat_at_64px_with_its_preprocessing_inside(name):
    built = build_model(name, 3, 64, "none", seed=0)
    model = built.model
    assert model.output.shape == (None, 3)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "nested backbone Model"
    pool_input = model.get_layer("head_pool").input
    assert len(pool_input.shape) == 4 and pool_input.shape[1] >= 1
    output_layer = model.get_layer("head_output")
    assert model.layers[-1] is output_layer and output_layer.dtype_policy.compute_dtype == "float32"
    assert built.backbone_layer_names and not any(
        n.startswith(("head_", "preprocess_")) for n in built.backbone_layer_names
    )
    assert built.weights_used == "none" and not built.pretrained
    # everything before the first backbone layer equals the backbone's own preprocess_input
    first = model.get_layer(built.backbone_layer_names[0])
    preprocessed = keras.Model(model.input, first.input)(RAW)
    preprocess = MODEL_REGISTRY[name].preprocess_input or (lambda x: x / 255.0)
    np.testing.assert_allclose(np.asarray(preprocessed), preprocess(RAW.copy()), rtol=1e-5, atol=1e-5)
    probs = np.asarray(model(RAW))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_caffe_preprocessing_reverses_channels():
    model = build_model("vgg16", 2, 32, "none").model
    pixel = np.zeros((1, 32, 32, 3), "float32")
    pixel[..., 0] = 200.0  # pure red input
    out = np.asarray(keras.Model(model.input, model.get_layer("block1_conv1").input)(pixel))[0, 0, 0]
    np.testing.assert_allclose(out, [-103.939, -116.779, 200.0 - 123.68], rtol=1e-5)  # red is last (BGR)


def test_saved_models_reload_in_a_fresh_process_with_identical_predictions(tmp_path):
    # x/255; flip + Normalization (caffe); Rescaling with offset (tf). DenseNet (Rescaling + Normalization) and
    # EfficientNet (its own layers) are left out: they add 10 s of building and reloading.
    names = ["cnn", "vgg16", "mobilenet_025"]
    expected = {}
    for name in names:
        model = build_model(name, 2, 32, "none", seed=1).model
        model.save(tmp_path / f"{name}.keras")
        expected[name] = np.asarray(model(RAW[:, :32, :32], training=False))
    np.save(tmp_path / "x.npy", RAW[:, :32, :32])
    script = (
        "import json, sys, numpy as np, keras\n"
        "x = np.load(sys.argv[1] + '/x.npy')\n"
        "out = {n: np.asarray(keras.models.load_model(f'{sys.argv[1]}/{n}.keras')(x, training=False)).tolist() "
        "for n in sys.argv[2:]}\n"
        "print('RESULT' + json.dumps(out))\n"
    )  # plain Keras, no course import: a model.keras must load anywhere
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *names],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reloaded = json.loads(done.stdout.split("RESULT", 1)[1])
    for name in names:
        np.testing.assert_allclose(reloaded[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_auto_offline_falls_back_to_random_weights_loudly(offline, capsys):
    built = build_model("mobilenet_025", 2, 32, "auto")
    assert built.weights_used.startswith("random (ImageNet weights unavailable:")
    assert "mobilenet_2_5_224_tf_no_top.h5" in built.weights_used and "offline (test)" in built.weights_used
    assert not built.pretrained and built.weights_requested == "auto"
    banner = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in banner and "not transfer learning" in banner
    bns = [layer for layer in built.model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == models.RANDOM_INIT_BN_MOMENTUM for layer in bns)


def test_imagenet_offline_fails_fast_with_instructions(offline):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("vgg16", 2, 32, "imagenet")
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "KERAS_HOME" in message and "CXR_WEIGHTS=/path/to/file.h5" in message
    assert str(offline) in message and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message


def test_network_probe_reports_an_unreachable_host_quickly(monkeypatch):
    monkeypatch.setattr(models, "WEIGHTS_HOST", ("host.invalid", 443))
    start = time.perf_counter()
    problem = models._network_problem(timeout=1.0)
    assert problem and time.perf_counter() - start < 3


def test_real_imagenet_file_loads_through_the_keras_cache(monkeypatch, tmp_path, real_file, capsys):
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    (cache / real_file.name).symlink_to(real_file)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "_network_problem", lambda: pytest.fail("the cache should be used first"))
    built = build_model("mobilenet_025", 2, 64, "imagenet", seed=3)
    assert built.weights_used == "imagenet" and built.pretrained
    assert "224 px model at 64 px" in built.weights_note
    reference = _reference_mobilenet_025(real_file)
    random = build_model("mobilenet_025", 2, 64, "none", seed=3).model
    for name in ("conv1", "conv_dw_13", "conv_pw_13_bn"):
        np.testing.assert_array_equal(built.model.get_layer(name).get_weights()[0], reference[name])
        assert not np.allclose(random.get_layer(name).get_weights()[0], reference[name])
    bn = built.model.get_layer("conv_pw_13_bn")
    assert bn.momentum == 0.99  # pretrained statistics keep Keras' momentum
    assert "RANDOM WEIGHTS" not in capsys.readouterr().out


def test_explicit_weights_file_path(real_file):
    built = build_model("mobilenet", 2, 32, real_file, alpha=0.25)
    assert built.name == "mobilenet_025" and built.weights_used == str(real_file) and built.pretrained
    reference = _reference_mobilenet_025(real_file)
    np.testing.assert_array_equal(built.model.get_layer("conv_pw_5").get_weights()[0], reference["conv_pw_5"])
    with pytest.raises(WeightsError, match="no top"):
        build_model("mobilenet", 2, 32, real_file)  # alpha 1.0 does not fit a 0.25 file


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("mobilenet_025", 2, 32, tmp_path / "nope.h5")


def test_a_bad_cached_file_is_reported_and_never_deleted(monkeypatch, tmp_path):
    cache = tmp_path / "models"
    cache.mkdir()
    bad = cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    bad.write_bytes(b"not an HDF5 file")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="Could not load"):
        build_model("vgg16", 2, 32, "imagenet")
    assert bad.read_bytes() == b"not an HDF5 file"  # Keras would have deleted it after a failed re-download


def test_custom_cnn_is_always_from_scratch_and_loads_its_own_weight_files(tmp_path, capsys):
    built = build_model("cnn", 2, 32, "imagenet", seed=0)
    assert built.weights_used == "none" and not built.is_transfer
    assert "trained from scratch" in capsys.readouterr().out
    path = tmp_path / "cnn.weights.h5"
    built.model.save_weights(path)
    again = build_model("cnn", 2, 32, path, seed=1)
    assert again.weights_used == str(path)
    np.testing.assert_array_equal(
        again.model.get_layer("head_output").get_weights()[0],
        built.model.get_layer("head_output").get_weights()[0],
    )


def test_names_sizes_and_seeds():
    with pytest.raises(ValueError, match="Unknown model 'resnet'"):
        build_model("resnet", 2, 64, "none")
    with pytest.raises(ValueError, match="at least 32 px"):
        build_model("mobilenet", 2, 16, "none")
    with pytest.raises(ValueError, match="alpha applies to MobileNet"):
        build_model("vgg16", 2, 64, "none", alpha=0.5)
    a = build_model("cnn", 2, 32, "none", seed=5).model.get_weights()
    b = build_model("cnn", 2, 32, "none", seed=5).model.get_weights()
    c = build_model("cnn", 2, 32, "none", seed=6).model.get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_describe_and_count_params():
    built = build_model("mobilenet_025", 2, 64, "none")
    info = models.describe_model(built)
    params = models.count_params(built.model)
    assert info["params_total"] == built.model.count_params() == params["total"]
    assert params["trainable"] + params["non_trainable"] == params["total"] and params["non_trainable"] > 0
    assert (
        info["input_size"] == 64
        and info["weights_used"] == "none"
        and info["layers"] == len(built.model.layers)
    )
    assert info["backbone_layers"] == len(built.backbone_layer_names) < info["layers"]


def test_keras_cache_dir_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert models.keras_cache_dir() == tmp_path / "models"


def test_count_macs_by_hand_and_for_vgg16():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 3*3*3*4 weights at 8*8 positions = 6912
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 3*3*4 at 64 positions = 2304
    x = keras.layers.SeparableConv2D(2, 3, strides=2, padding="same")(x)  # (36 + 8) at 16 positions = 704
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))  # 2*2 = 4
    assert count_macs(keras.Model(inputs, outputs)) == 6912 + 2304 + 704 + 4
    # VGG16's convolutions at 224 px: the well-known 15.3 G multiply-accumulates (30.7 GFLOPs)
    vgg = build_model("vgg16", 2, 224, weights="none").model
    assert 15.3e9 < count_macs(vgg) < 15.6e9

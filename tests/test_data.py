"""The input pipeline (utils/data.py): what a batch holds (shape, dtype, range, grey in three channels), images
stretched to the square without crop or padding, labels in the manifest's order, balanced class weights as
scikit-learn computes them, and augmentation that changes training images only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import write_image
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from utils.data import (
    Data,
    build_augmentation,
    class_weights,
    healthy_class,
    load_image,
    load_images,
    make_data,
    make_dataset,
)

SIZE = 32
CLASSES = ["NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    """14 small images of assorted formats, modes and sizes: 8 train, 3 val, 3 test."""
    root = tmp_path_factory.mktemp("pipeline")
    kinds = [(".png", "L", (40, 32)), (".jpeg", "RGB", (48, 30)), (".png", "RGBA", (30, 45)), (".jpg", "L", (64, 64)),
             (".png", "RGB", (33, 20))]  # fmt: skip  (JPEG and PNG: what the manifest lets through)
    rows = []
    splits = ["train"] * 8 + ["val"] * 3 + ["test"] * 3
    labels = ["NORMAL", "PNEUMONIA", "PNEUMONIA", "NORMAL", "PNEUMONIA", "PNEUMONIA", "NORMAL", "PNEUMONIA",
              "PNEUMONIA", "NORMAL", "PNEUMONIA", "NORMAL", "NORMAL", "PNEUMONIA"]  # fmt: skip
    for i, (split, label) in enumerate(zip(splits, labels, strict=True)):
        suffix, mode, size = kinds[i % len(kinds)]
        path = write_image(root / split / label / f"img{i}{suffix}", size=size, mode=mode, seed=i)
        rows.append({"path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows)


def batches(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


# --- load_image ---------------------------------------------------------------------------------------------------


def test_load_image_is_grey_uint8_and_square(manifest):
    for path in manifest["path"]:
        image = load_image(path, SIZE)
        assert image.dtype == tf.uint8 and tuple(image.shape) == (SIZE, SIZE, 1)


def test_load_image_stretches_without_crop_or_padding(tmp_path):
    """A wide image, dark left half and bright right half: both halves survive and no padding band appears."""
    pixels = np.zeros((20, 80), np.uint8)
    pixels[:, 40:] = 200
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(str(tmp_path / "wide.png"), SIZE).numpy()[..., 0]
    assert (image[:, : SIZE // 2 - 2] == 0).all()
    assert (image[:, SIZE // 2 + 2 :] == 200).all()
    assert (image == image[0]).all()  # every row alike: the top and bottom are image, not padding


def test_load_image_turns_colour_into_grey(tmp_path):
    Image.new("RGB", (40, 40), (200, 200, 200)).save(tmp_path / "grey.png")
    Image.new("RGBA", (40, 40), (100, 100, 100, 0)).save(tmp_path / "transparent.png")
    assert np.unique(load_image(str(tmp_path / "grey.png"), SIZE).numpy()).tolist() == [200]
    assert np.unique(load_image(str(tmp_path / "transparent.png"), SIZE).numpy()).tolist() == [100]  # alpha dropped


def test_load_images_matches_the_evaluation_pipeline(manifest):
    test = manifest[manifest["split"] == "test"]
    images = load_images(list(test["path"]), SIZE)
    assert images.dtype == np.float32 and images.shape == (3, SIZE, SIZE, 3)
    x, _ = batches(make_dataset(manifest, "test", CLASSES, SIZE, batch_size=2))
    np.testing.assert_array_equal(images, x)


# --- make_dataset ---------------------------------------------------------------------------------------------------


def test_batches_have_the_models_shape_dtype_and_range(manifest):
    ds = make_dataset(manifest, "val", CLASSES, SIZE, batch_size=2)
    shapes = [(tuple(x.shape), tuple(y.shape)) for x, y in ds]
    assert shapes == [((2, SIZE, SIZE, 3), (2, 2)), ((1, SIZE, SIZE, 3), (1, 2))]
    x, y = next(iter(ds))
    assert x.dtype == tf.float32 and y.dtype == tf.float32
    x = x.numpy()
    assert x.min() >= 0 and x.max() <= 255 and x.max() > 1  # raw pixels: the models scale them themselves
    np.testing.assert_array_equal(x[..., 0], x[..., 1])  # grey repeated in three channels
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    assert set(np.unique(y.numpy())) == {0.0, 1.0} and (y.numpy().sum(axis=1) == 1).all()


def test_labels_follow_the_manifest_order_and_the_class_order(manifest):
    rows = manifest[manifest["split"] == "test"]
    x, y = batches(make_dataset(manifest, "test", CLASSES, SIZE, batch_size=2))
    assert [CLASSES[i] for i in y.argmax(axis=1)] == rows["label"].tolist()
    for image, path in zip(x, rows["path"], strict=True):  # and each image is its row's file
        np.testing.assert_array_equal(image[..., 0], load_image(path, SIZE).numpy()[..., 0])
    _, y_reversed = batches(make_dataset(manifest, "test", CLASSES[::-1], SIZE, batch_size=2))
    np.testing.assert_array_equal(y_reversed, y[:, ::-1])


def test_an_empty_split_says_what_to_do(manifest):
    with pytest.raises(ValueError, match="The manifest has no 'val' images: prepare the dataset again"):
        make_dataset(manifest[manifest["split"] != "val"], "val", CLASSES, SIZE, batch_size=2)


def test_training_batches_are_shuffled_augmented_and_complete(manifest):
    plain, plain_y = batches(make_dataset(manifest, "train", CLASSES, SIZE, batch_size=8))
    ds = make_dataset(manifest, "train", CLASSES, SIZE, batch_size=8, training=True, seed=1)
    first, first_y = batches(ds)
    second, second_y = batches(ds)
    for x, y in ((first, first_y), (second, second_y)):
        assert x.shape == plain.shape and x.dtype == np.float32
        assert x.min() >= 0 and x.max() <= 255
        assert sorted(y.argmax(axis=1).tolist()) == sorted(plain_y.argmax(axis=1).tolist())  # every image, once
    assert not np.array_equal(first, second)  # a new order and new augmentation each epoch
    matched = [any(np.array_equal(a, b) for b in plain) for a in first]
    assert not any(matched)  # every training image was changed by augmentation


def test_evaluation_batches_are_the_same_every_time(manifest):
    ds = make_dataset(manifest, "val", CLASSES, SIZE, batch_size=2)
    np.testing.assert_array_equal(batches(ds)[0], batches(ds)[0])


def test_augmentation_is_off_outside_training():
    augment = build_augmentation(seed=0)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 1)).astype(np.float32))
    np.testing.assert_array_equal(augment(x, training=False).numpy(), x.numpy())
    changed = augment(x, training=True).numpy()
    assert changed.shape == x.shape and not np.allclose(changed, x.numpy())
    assert [layer.name.split("_")[1] for layer in augment.layers] == ["rotation", "zoom", "translation", "brightness",
                                                                     "contrast"]  # fmt: skip


def test_exposure_augmentation_lowers_and_raises_contrast_and_brightness():
    """Both directions, as the docstring promises (a single number in RandomContrast only ever raises contrast)."""
    layers = {layer.name.split("_")[1]: layer for layer in build_augmentation(seed=0).layers}
    x = tf.constant(np.where(np.arange(SIZE)[:, None] < SIZE // 2, 100.0, 150.0)[None, ..., None].astype(np.float32))
    contrast = [float(tf.math.reduce_std(layers["contrast"](x, training=True)) / tf.math.reduce_std(x)) for _ in range(200)]
    brightness = [float(tf.reduce_mean(layers["brightness"](x, training=True)) - tf.reduce_mean(x)) for _ in range(200)]
    assert 0.79 < min(contrast) < 0.9 and 1.1 < max(contrast) < 1.21
    assert min(brightness) < -10 and max(brightness) > 10


# --- Class weights and make_data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [["NORMAL"] * 3 + ["PNEUMONIA"] * 9, ["A", "B", "B", "C", "C", "C", "C"],
                                    ["NORMAL", "PNEUMONIA"] * 5])  # fmt: skip
def test_class_weights_equal_sklearn_balanced(labels):
    names = sorted(set(labels))
    expected = compute_class_weight("balanced", classes=np.array(names), y=np.array(labels))
    weights = class_weights(pd.Series(labels), names)
    assert list(weights) == list(range(len(names)))
    np.testing.assert_allclose(list(weights.values()), expected, atol=5e-4)


def test_class_weights_by_hand():
    # 12 images, 3 NORMAL and 9 PNEUMONIA: 12 / (2 x 3) = 2 and 12 / (2 x 9) = 0.667
    assert class_weights(pd.Series(["NORMAL"] * 3 + ["PNEUMONIA"] * 9), CLASSES) == {0: 2.0, 1: 0.667}
    # the order of class_names decides which index gets which weight
    assert class_weights(pd.Series(["NORMAL"] * 3 + ["PNEUMONIA"] * 9), CLASSES[::-1]) == {0: 0.667, 1: 2.0}


def test_make_data_uses_the_training_split_for_the_weights(manifest):
    data = make_data(manifest, CLASSES, SIZE, batch_size=4, seed=0)
    assert isinstance(data, Data) and data.class_names == CLASSES and data.manifest is manifest
    train_labels = manifest.loc[manifest["split"] == "train", "label"]
    assert data.class_weight == class_weights(train_labels, CLASSES)
    assert data.class_weight != class_weights(manifest["label"], CLASSES)  # not the whole manifest's
    counts = {name: sum(len(y) for _, y in getattr(data, name)) for name in ("train", "val", "test")}
    assert counts == {"train": 8, "val": 3, "test": 3}

    def images(ds):
        return np.concatenate([x for x, _ in ds])

    for split in ("val", "test"):  # each split's own images, in the manifest's order, not augmented
        np.testing.assert_array_equal(images(getattr(data, split)), images(make_dataset(manifest, split, CLASSES, SIZE, 4)))
    plain = images(make_dataset(manifest, "train", CLASSES, SIZE, 4))
    assert not np.allclose(np.sort(images(data.train).ravel()), np.sort(plain.ravel()))  # augmented, not only shuffled


def test_augmentation_layers_draw_their_own_random_numbers():
    """Layers given one seed draw the same numbers: each image's exposure and contrast (and rotation, zoom and
    shift) would move together. Per image, the brightness shift and the contrast factor must be unrelated."""
    layers = {layer.name.split("_")[1]: layer for layer in build_augmentation(seed=0).layers}
    assert len({layer.seed for layer in layers.values()}) == len(layers)
    x = tf.constant(np.tile(np.where(np.arange(SIZE)[:, None] < SIZE // 2, 100.0, 150.0), (64, 1, 1))[..., None],
                    tf.float32)  # fmt: skip
    shift = (tf.reduce_mean(layers["brightness"](x, training=True), axis=(1, 2, 3)) - 125.0).numpy()
    factor = (tf.math.reduce_std(layers["contrast"](x, training=True), axis=(1, 2, 3)) / 25.0).numpy()
    assert shift.std() > 5 and factor.std() > 0.05  # both draw a number per image
    assert abs(np.corrcoef(np.argsort(np.argsort(shift)), np.argsort(np.argsort(factor)))[0, 1]) < 0.5


def test_healthy_class_is_found_by_name():
    assert healthy_class(["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]) == "Normal"  # the COVID-19 database
    assert healthy_class(["NORMAL", "BACTERIA", "VIRUS"]) == "NORMAL"
    assert healthy_class(["Effusion", "Nodule"]) == "Effusion"  # none called normal: the first class

"""utils.pipeline: decoding, the tf.data pipeline, augmentation and class weights, on tiny images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from utils.pipeline import (
    RandomAffine,
    augmentation_gallery,
    build_augmentation,
    class_weights,
    find_unreadable,
    load_image,
    make_dataset,
    preview_batch,
)

CLASSES = ["NORMAL", "PNEUMONIA"]


def save(path: Path, pixels: np.ndarray, mode: str | None = None, **kwargs) -> str:
    """Write ``pixels`` with Pillow (format from the suffix) and return the path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path, **kwargs) if mode else Image.fromarray(pixels).save(
        path, **kwargs
    )
    return str(path)


def gradient(height: int, width: int) -> np.ndarray:
    """A smooth uint8 grey gradient (survives JPEG and resizing with small errors)."""
    y, x = np.mgrid[0:height, 0:width]
    return (255 * (x / width * 0.6 + y / height * 0.4)).astype(np.uint8)


def grey_manifest(tmp_path: Path, labels: list[str], split: str = "train") -> pd.DataFrame:
    """One PNG per label, image i uniformly grey at 10 * i + 5 (so its value tells its row), varied sizes."""
    rows = []
    for i, label in enumerate(labels):
        size = (20 + 7 * (i % 3), 30 + 11 * (i % 4))
        path = save(tmp_path / f"{i:03d}.png", np.full(size, 10 * i + 5, np.uint8))
        rows.append({"path": path, "label": label, "split": split})
    return pd.DataFrame(rows)


def row_ids(images: tf.Tensor) -> list[int]:
    """Recover each image's manifest row from its grey value."""
    return [int(round((float(v) - 5) / 10)) for v in tf.reduce_mean(images, axis=[1, 2, 3]).numpy()]


# --- load_image -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pixels", "mode"),
    [
        ("grey.jpg", gradient(50, 70), None),
        ("rgb.jpeg", np.dstack([gradient(90, 40)] * 3), None),
        ("rgba.png", np.dstack([gradient(33, 61)] * 3 + [np.full((33, 61), 100, np.uint8)]), "RGBA"),
        ("grey.png", gradient(24, 24), None),
    ],
)
def test_load_image_gives_square_grey_uint8(tmp_path, name, pixels, mode):
    image = load_image(save(tmp_path / name, pixels, mode), 32)
    assert image.shape == (32, 32, 1) and image.dtype == tf.uint8
    expected = np.asarray(
        Image.open(tmp_path / name).convert("L").resize((32, 32), Image.BILINEAR), np.float32
    )
    assert np.abs(image.numpy()[..., 0].astype(np.float32) - expected).mean() < 3


def test_colour_becomes_luminance_and_alpha_is_ignored(tmp_path):
    green = np.zeros((16, 16, 3), np.uint8)
    green[..., 1] = 255
    transparent_red = np.zeros((16, 16, 4), np.uint8)
    transparent_red[..., 0] = 255  # alpha 0: the colour still counts
    jpeg = load_image(save(tmp_path / "g.jpg", green, quality=95), 16).numpy()
    png = load_image(save(tmp_path / "r.png", transparent_red, "RGBA"), 16).numpy()
    assert abs(float(jpeg.mean()) - 0.587 * 255) < 3
    assert abs(float(png.mean()) - 0.299 * 255) < 2


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = np.zeros((16, 16), np.uint16)
    pixels[:, :8], pixels[:, 8:] = 65535, 32768
    path = save(tmp_path / "deep.png", pixels)
    assert Image.open(path).mode.startswith("I;16")
    image = load_image(path, 16).numpy()[..., 0]
    assert np.all(image[:, :8] == 255)
    assert np.all(np.abs(image[:, 8:].astype(int) - 128) <= 1)


def test_stretch_keeps_the_whole_image_without_padding(tmp_path):
    wide = np.zeros((40, 120), np.uint8)
    wide[:, 60:] = 255  # left half black, right half white
    image = load_image(save(tmp_path / "wide.png", wide), 32).numpy()[..., 0]
    assert np.all(image[:, :14] == 0)  # every row, top to bottom: no padding bands
    assert np.all(image[:, 18:] == 255)  # the right half is neither cropped nor shifted


def test_large_jpeg_decoded_with_downscaling_looks_the_same(tmp_path):
    path = save(tmp_path / "big.jpg", gradient(600, 800), quality=95)  # 600 >= 8 * 64: decoded at 1/8
    image = load_image(path, 64).numpy()[..., 0].astype(np.float32)
    expected = np.asarray(Image.open(path).resize((64, 64), Image.BOX), np.float32)
    assert np.abs(image - expected).mean() < 2


def test_unreadable_files_are_named(tmp_path):
    good = save(tmp_path / "good.jpg", gradient(20, 20))
    text = tmp_path / "pointer.jpg"
    text.write_text("version https://git-lfs.github.com/spec/v1\n")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good).read_bytes()[:-100])
    with pytest.raises(tf.errors.InvalidArgumentError, match="pointer.jpg"):
        load_image(str(text), 16)
    with pytest.raises(tf.errors.NotFoundError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"), 16)
    assert find_unreadable([good, str(text), str(truncated), str(tmp_path / "missing.png")]) == [
        str(text),
        str(truncated),
        str(tmp_path / "missing.png"),
    ]


def test_unreadable_file_in_a_dataset_is_named(tmp_path):
    manifest = grey_manifest(tmp_path, ["NORMAL", "PNEUMONIA"])
    Path(manifest.loc[1, "path"]).write_bytes(b"")
    with pytest.raises(tf.errors.InvalidArgumentError, match="001.png"):
        list(make_dataset(manifest, "train", CLASSES, image_size=8, batch_size=2))


# --- make_dataset -----------------------------------------------------------------------------------------


def test_evaluation_dataset_keeps_manifest_order_and_labels(tmp_path):
    labels = ["NORMAL", "PNEUMONIA", "PNEUMONIA", "NORMAL", "PNEUMONIA"]
    manifest = pd.concat(
        [grey_manifest(tmp_path, labels, "val"), grey_manifest(tmp_path / "t", ["NORMAL"], "test")]
    )
    ds = make_dataset(manifest, "val", CLASSES, image_size=12, batch_size=2)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [2, 2, 1] and int(ds.cardinality()) == 3
    images = tf.concat([x for x, _ in batches], 0)
    onehot = tf.concat([y for _, y in batches], 0).numpy()
    assert images.shape == (5, 12, 12, 3) and images.dtype == tf.float32
    assert onehot.dtype == np.float32
    np.testing.assert_array_equal(onehot, np.eye(2, dtype=np.float32)[[0, 1, 1, 0, 1]])
    assert row_ids(images) == [0, 1, 2, 3, 4]
    assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grey copied to the 3 channels
    np.testing.assert_array_equal(
        images[3, ..., 0], tf.cast(load_image(manifest["path"].iloc[3], 12)[..., 0], tf.float32)
    )
    assert row_ids(tf.concat([x for x, _ in ds], 0)) == [0, 1, 2, 3, 4]  # same order again


def test_training_dataset_reshuffles_each_epoch_reproducibly(tmp_path):
    manifest = grey_manifest(tmp_path, ["NORMAL", "PNEUMONIA"] * 8)

    def epochs(ds: tf.data.Dataset) -> list[list[int]]:
        return [row_ids(tf.concat([x for x, _ in ds], 0)) for _ in range(2)]

    first, second = epochs(
        make_dataset(manifest, "train", CLASSES, image_size=8, batch_size=4, training=True)
    )
    assert sorted(first) == sorted(second) == list(range(16))
    assert first != second and first != list(range(16))
    again = epochs(make_dataset(manifest, "train", CLASSES, image_size=8, batch_size=4, training=True))
    assert again == [first, second]  # same seed, same orders


def test_augmented_batches_keep_shape_and_range_and_change_pixels(tmp_path):
    paths = [save(tmp_path / f"{i}.jpg", gradient(40 + i, 50)) for i in range(4)]
    manifest = pd.DataFrame({"path": paths, "label": ["NORMAL", "PNEUMONIA"] * 2, "split": "train"})
    kwargs = {"image_size": 32, "batch_size": 4, "training": True, "seed": 3}
    plain_ds = make_dataset(manifest, "train", CLASSES, **kwargs)
    plain = [next(iter(plain_ds)) for _ in range(2)]  # epochs 1 and 2 (reshuffled, same seed)
    ds = make_dataset(manifest, "train", CLASSES, augment=True, **kwargs)
    augmented = [next(iter(ds)) for _ in range(2)]
    for (images, labels), (plain_images, plain_labels) in zip(augmented, plain, strict=True):
        assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
        assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255
        np.testing.assert_array_equal(labels, plain_labels)  # same order as without augmentation
        assert float(tf.reduce_mean(tf.abs(images - plain_images))) > 1
    residuals = [aug[0] - ref[0] for aug, ref in zip(augmented, plain, strict=True)]
    assert float(tf.reduce_mean(tf.abs(residuals[0] - residuals[1]))) > 1  # new augmentation each epoch


def test_file_cache_is_named_by_split_size_and_files(tmp_path):
    manifest = grey_manifest(tmp_path / "img", ["NORMAL", "PNEUMONIA", "NORMAL"])
    ds = make_dataset(
        manifest, "train", CLASSES, image_size=8, batch_size=2, cache=str(tmp_path / "c" / "kermany")
    )
    assert row_ids(tf.concat([x for x, _ in ds], 0)) == [0, 1, 2]
    names = [p.name for p in (tmp_path / "c").iterdir()]
    assert names and all(n.startswith("kermany-train-8px-") for n in names)
    assert row_ids(tf.concat([x for x, _ in ds], 0)) == [0, 1, 2]  # second epoch read from the files


@pytest.mark.parametrize(
    ("split", "classes", "kwargs", "message"),
    [
        ("validation", CLASSES, {}, "Unknown split 'validation'"),
        ("test", CLASSES, {}, r"No images with split='test'.*\['train'\]"),
        ("train", ["NORMAL"], {}, r"Labels \['PNEUMONIA'\].*not in class_names"),
        ("train", CLASSES, {"augment": True}, "augment=True needs training=True"),
        ("train", ["NORMAL", "NORMAL"], {}, "without duplicates"),
    ],
)
def test_make_dataset_errors(tmp_path, split, classes, kwargs, message):
    manifest = grey_manifest(tmp_path, ["NORMAL", "PNEUMONIA"])
    with pytest.raises(ValueError, match=message):
        make_dataset(manifest, split, classes, image_size=8, batch_size=2, **kwargs)
    with pytest.raises(ValueError, match="no column"):
        make_dataset(manifest.drop(columns="label"), "train", CLASSES, image_size=8, batch_size=2)


# --- augmentation ------------------------------------------------------------------------------------------


def test_augmentation_has_no_flips_unless_asked():
    names = [type(layer).__name__ for layer in build_augmentation().layers]
    assert names == ["RandomContrast", "RandomAffine"]
    assert type(build_augmentation(horizontal_flip=True).layers[-1]).__name__ == "RandomFlip"


@pytest.mark.parametrize("dtype", [tf.uint8, tf.float32])
def test_augmentation_runs_in_tf_data_on_uint8_and_float(dtype):
    batch = tf.cast(tf.constant(np.dstack([gradient(24, 24)] * 4).transpose(2, 0, 1)[..., None]), dtype)
    augment = build_augmentation(seed=1)
    out = list(tf.data.Dataset.from_tensors(batch).repeat(2).map(lambda x: augment(x, training=True)))
    for images in out:
        assert images.shape == batch.shape and images.dtype == tf.float32
        assert float(tf.reduce_min(images)) >= 0 and float(tf.reduce_max(images)) <= 255
        assert float(tf.reduce_mean(tf.abs(images - tf.cast(batch, tf.float32)))) > 1
    assert float(tf.reduce_mean(tf.abs(out[0] - out[1]))) > 0.5  # each batch draws new transforms


def test_random_affine_turns_and_zooms_about_the_centre():
    blob = np.zeros((8, 33, 33, 1), np.float32)
    blob[:, 12:21, 12:21] = 255.0  # a square centred on pixel (16, 16)
    assert np.array_equal(RandomAffine(rotation=0, zoom=0, shift=0)(blob).numpy(), blob)
    moved = RandomAffine(rotation=30, zoom=0.3, shift=0, seed=0)(blob).numpy()[..., 0]
    assert not np.allclose(moved, blob[..., 0])
    y, x = np.mgrid[0:33, 0:33]
    for image in moved:  # turned and zoomed, but still centred
        assert abs((image * x).sum() / image.sum() - 16) < 0.3
        assert abs((image * y).sum() / image.sum() - 16) < 0.3
    shifted = RandomAffine(rotation=0, zoom=0, shift=0.1, seed=0)(blob).numpy()[..., 0]
    offsets = [(image * x).sum() / image.sum() - 16 for image in shifted]
    assert max(abs(o) for o in offsets) <= 3.4 and max(abs(o) for o in offsets) > 0.3


# --- class weights and preview -----------------------------------------------------------------------------


def test_class_weights_balanced_formula():
    labels = ["NORMAL"] * 3 + ["PNEUMONIA"] * 9 + ["VIRUS"] * 4  # n = 16, C = 3
    weights = class_weights(labels, ["NORMAL", "PNEUMONIA", "VIRUS"])
    assert weights == pytest.approx({0: 16 / (3 * 3), 1: 16 / (3 * 9), 2: 16 / (3 * 4)})
    assert all(isinstance(k, int) and isinstance(v, float) for k, v in weights.items())


def test_class_weights_errors():
    with pytest.raises(ValueError, match=r"No training images for class\(es\) \['VIRUS'\]"):
        class_weights(["NORMAL", "PNEUMONIA"], ["NORMAL", "PNEUMONIA", "VIRUS"])
    with pytest.raises(ValueError, match=r"Labels \['OTHER'\] are not in class_names"):
        class_weights(["NORMAL", "PNEUMONIA", "OTHER"], CLASSES)


def test_preview_batch_titles_images_with_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    manifest = grey_manifest(tmp_path, ["PNEUMONIA", "NORMAL", "PNEUMONIA"])
    fig = preview_batch(make_dataset(manifest, "train", CLASSES, image_size=8, batch_size=3), CLASSES, n=8)
    assert [ax.get_title() for ax in fig.axes] == ["PNEUMONIA", "NORMAL", "PNEUMONIA"]


# --- real images (only where ../shared exists) -------------------------------------------------------------


@pytest.mark.shared_data
def test_real_chest_xrays_are_stretched_whole(shared_dir):
    sample = shared_dir / "data" / "real_cxr_sample"
    listing = pd.read_csv(sample / "MANIFEST.csv")
    listing = listing[listing["w"] != listing["h"]].groupby("label").head(2)  # non-square, every class
    for row in listing.itertuples():
        path = sample / row.split / row.label / row.file
        assert tf.io.decode_jpeg(tf.io.read_file(str(path))).shape[:2] == (row.h, row.w)  # original aspect
        image = load_image(str(path), 64).numpy()[..., 0].astype(np.float32)
        expected = np.asarray(Image.open(path).convert("L").resize((64, 64), Image.BILINEAR), np.float32)
        assert np.abs(image - expected).mean() < 3, path.name


def test_augmentation_gallery_shows_each_image_and_its_variants(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    manifest = grey_manifest(tmp_path, ["PNEUMONIA", "NORMAL"])
    fig = augmentation_gallery(list(manifest["path"]), 32, labels=list(manifest["label"]), n_variants=3)
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == [
        "original",
        "augmented 1",
        "augmented 2",
        "augmented 3",
    ]
    assert fig.axes[0].get_ylabel() == "PNEUMONIA" and fig.axes[4].get_ylabel() == "NORMAL"
    original, first = (np.asarray(ax.images[0].get_array()) for ax in fig.axes[:2])
    assert original.shape == first.shape == (32, 32)
    assert not np.allclose(original, first), "an augmented copy must differ from the original"

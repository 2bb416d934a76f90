"""benchmarks/train_levers.py (issue 13): each variant's patch does what it says (the stronger intensity
augmentation keeps shape and the [0, 255] range and is the identity at inference; equalisation, label smoothing,
mixup and deeper fine-tuning compute what they should) and changes the course only inside its block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import write_image

from benchmarks import train_levers
from benchmarks.loaders import equalize_histogram
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


def test_strong_geometric_doubles_the_geometric_ranges_and_keeps_the_course_intensity_only_inside_its_block():
    original = data.build_augmentation
    with train_levers.augmentation("strong-geometric"):
        augment = data.build_augmentation(42)
    assert data.build_augmentation is original
    kinds = [type(layer).__name__ for layer in augment.layers]
    assert kinds == ["RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness", "RandomContrast"]
    course = original(42).layers
    assert augment.layers[0].factor == pytest.approx((-10 / 360, 10 / 360))
    assert augment.layers[1].height_factor == 0.2 and augment.layers[2].height_factor == 0.1
    assert course[1].height_factor == 0.1 and course[2].height_factor == 0.05  # twice the course's
    assert augment.layers[3].factor == course[3].factor and augment.layers[4].factor == course[4].factor
    batch = tf.constant(images().astype(np.uint8))
    out = np.asarray(augment(batch, training=True))
    assert out.shape == batch.shape and np.abs(out - batch.numpy()).mean() > 1  # it changes training images
    np.testing.assert_allclose(np.asarray(augment(batch, training=False)), batch.numpy(), atol=1e-4)


def test_stretch_zooms_each_axis_in_on_its_own_after_the_course_augmentation_only_inside_its_block():
    original = data.build_augmentation
    with train_levers.augmentation("stretch"):
        augment = data.build_augmentation(42)
    assert data.build_augmentation is original
    course = [type(layer).__name__ for layer in original(42).layers]
    assert [type(layer).__name__ for layer in augment.layers] == [*course, "RandomZoom"]
    stretch = augment.layers[-1]
    assert stretch.height_factor == stretch.width_factor == (-train_levers.STRETCH, 0.0) == (-0.25, 0.0)
    # A white 32 x 32 square in a 64 x 64 image: each side grows by its own factor in [1, 1.33], so the aspect
    # ratio changes, and nothing shrinks (no empty border is ever added).
    square = np.zeros((16, 64, 64, 1), np.float32)
    square[:, 16:48, 16:48] = 255
    out = np.asarray(stretch(tf.constant(square), training=True))[..., 0] > 128
    widths, heights = out.sum(axis=2)[:, 32], out.sum(axis=1)[:, 32]
    assert widths.min() >= 32 and heights.min() >= 32 and max(widths.max(), heights.max()) <= 43
    assert np.abs(widths - heights).max() >= 4  # another aspect ratio
    np.testing.assert_allclose(np.asarray(stretch(tf.constant(square), training=False)), square)


def test_equalize_histogram_maps_each_grey_level_to_its_rank():
    """Against the textbook formula in NumPy: level v -> round(255 (cdf(v) - cdf_min) / (N - cdf_min))."""
    rng = np.random.default_rng(3)
    image = rng.normal(90, 20, (24, 24, 1)).clip(0, 255).astype(np.uint8)  # dark, low contrast
    cdf = np.cumsum(np.bincount(image.ravel(), minlength=256))
    cdf_min = cdf[cdf > 0].min()
    expected = np.round(255 * (cdf - cdf_min) / (image.size - cdf_min)).astype(np.uint8)[image]
    out = equalize_histogram(tf.constant(image)).numpy()
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255  # stretched to the whole range
    # the order of grey levels is kept: a brighter pixel never becomes darker than a dimmer one
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()
    # exposure and contrast no longer matter: halving the contrast and brightening gives the same picture
    halved = image // 2
    np.testing.assert_array_equal(equalize_histogram(tf.constant(halved + 40)).numpy(),
                                  equalize_histogram(tf.constant(halved)).numpy())  # fmt: skip


def loaded_inside(variant: str, path, size: int) -> np.ndarray:
    """``data.load_image(path, size)`` inside ``variant``'s block, checking that only ``load_image`` was replaced
    there and that it is the course's again afterwards."""
    original = data.load_image
    with train_levers.augmentation(variant):
        loaded = data.load_image(str(path), size).numpy()
        assert data.build_augmentation is train_levers.ORIGINAL_BUILD
    assert data.load_image is original
    return loaded


def test_equalize_replaces_load_image_only_inside_its_block(tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(60, 120, (40, 40), dtype=np.uint8)).save(path)
    loaded = loaded_inside("equalize", path, 32)
    plain = data.load_image(str(path), 32).numpy()
    assert loaded.shape == plain.shape == (32, 32, 1)
    np.testing.assert_array_equal(loaded, equalize_histogram(tf.constant(plain)).numpy())
    assert plain.max() - plain.min() < 100 and loaded.min() == 0 and loaded.max() == 255


def test_label_smoothing_changes_the_loss_only_inside_its_block():
    import keras

    def compiled():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        return model

    with train_levers.augmentation("label-smoothing"):
        smoothed = compiled()
    plain = compiled()
    assert isinstance(smoothed.loss, keras.losses.CategoricalCrossentropy)
    assert smoothed.loss.get_config()["label_smoothing"] == train_levers.LABEL_SMOOTHING == 0.1
    assert plain.loss == "categorical_crossentropy"
    y, p = np.array([[0.0, 1.0]]), np.array([[0.1, 0.9]])  # smoothed targets (0.05, 0.95)
    expected = -(0.05 * np.log(0.1) + 0.95 * np.log(0.9))
    np.testing.assert_allclose(float(smoothed.loss(y, p)), expected, rtol=1e-5)


@pytest.mark.parametrize(("variant", "first_layer"),
                         [("top-finetune", "conv_dw_12"), ("deep-finetune", "conv_dw_6"), ("full-finetune", "conv1")])
def test_finetuning_variants_replace_where_phase_2_starts_only_inside_their_block(variant, first_layer):
    from utils.models import BACKBONES

    course = BACKBONES["mobilenet_025"]
    with train_levers.augmentation(variant):
        chosen = BACKBONES["mobilenet_025"]
    assert BACKBONES["mobilenet_025"] is course and course.unfreeze_from == "conv1"
    assert chosen.unfreeze_from == first_layer
    assert chosen.options == course.options == {"alpha": 0.25} and chosen.feature_layer == course.feature_layer


def test_the_finetuning_variants_train_more_and_more_of_mobilenet():
    import keras

    from utils.training import unfreeze_top

    net = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.25)

    def trained_from(name: str) -> int:
        for layer in net.layers:
            layer.trainable = False
        unfreeze_top(net, name)  # fails if MobileNet has no layer of that name
        return sum(layer.trainable for layer in net.layers)

    top, deep, full = (trained_from(train_levers.FINETUNE_FROM[v]) for v in ("top-finetune", "deep-finetune", "full-finetune"))
    assert top < deep < full


def test_mixup_mixes_images_and_labels_with_one_weight_per_image():
    """Each mixed image is lam * x_i + (1 - lam) * x_j for one lam in [0, 1] and one partner j, and its label is the
    same blend of the two one-hot labels (so it sums to 1)."""
    x = tf.constant(images(8))
    y = tf.one_hot([0, 1, 0, 1, 1, 0, 1, 1], 2)
    mixed_x, mixed_y = (t.numpy() for t in train_levers.mixup(x, y, seed=3))
    assert mixed_x.shape == x.shape and mixed_y.shape == y.shape
    np.testing.assert_allclose(mixed_y.sum(axis=1), 1, atol=1e-6)
    x, y = x.numpy(), y.numpy()
    for i in range(8):
        fits = []
        for j in range(8):  # the partner j and lam that explain the mixed image
            a, b = x[i].ravel(), x[j].ravel()
            lam = 1.0 if i == j else float(np.dot(mixed_x[i].ravel() - b, a - b) / np.dot(a - b, a - b))
            if 0 <= lam <= 1 and np.allclose(mixed_x[i], lam * x[i] + (1 - lam) * x[j], atol=1e-3):
                fits.append((j, lam))
        assert fits, f"image {i} is not a blend of two batch images"
        assert any(np.allclose(mixed_y[i], lam * y[i] + (1 - lam) * y[j], atol=1e-4) for j, lam in fits)


def test_mixup_changes_only_the_training_batches_inside_its_block(tmp_path):
    # mixup draws its partners and weights unseeded, as in training: with 4 images, 1 shuffle in 6 pairs every
    # image with one of its own class (nothing to see); a fixed global seed makes the draws the same every run.
    tf.random.set_seed(0)
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    manifest = pd.DataFrame({"path": [str(p) for p in paths], "label": ["NORMAL", "PNEUMONIA"] * 2,
                             "split": ["train"] * 4})  # fmt: skip

    def first_labels(**kwargs):
        return next(iter(data.make_dataset(manifest, "train", ["NORMAL", "PNEUMONIA"], 32, 4, **kwargs)))[1].numpy()

    with train_levers.augmentation("mixup"):
        mixed, plain_eval = first_labels(training=True), first_labels()
    assert not set(np.unique(mixed)) <= {0.0, 1.0}, "training labels inside the block are blends"
    assert set(np.unique(plain_eval)) <= {0.0, 1.0}
    assert set(np.unique(first_labels(training=True))) <= {0.0, 1.0}, "outside the block, nothing is mixed"


def test_soft_targets_blend_the_label_with_the_softened_teacher():
    labels = tf.one_hot([0, 1], 2)
    teacher = tf.constant([[0.8, 0.2], [0.8, 0.2]])
    got = train_levers.soft_targets(labels, teacher, weight=0.5, temperature=2.0).numpy()
    soft = np.sqrt([0.8, 0.2]) / np.sqrt([0.8, 0.2]).sum()  # softmax(log p / 2) = sqrt(p), normalised: 2/3, 1/3
    np.testing.assert_allclose(got, [0.5 * np.array([1, 0]) + 0.5 * soft, 0.5 * np.array([0, 1]) + 0.5 * soft], atol=1e-6)
    np.testing.assert_allclose(train_levers.soft_targets(labels, teacher, temperature=1.0, weight=1.0).numpy(),
                               teacher.numpy(), atol=1e-6)  # fmt: skip


def test_distill_gives_the_training_batches_the_teachers_targets_only_inside_its_block(tmp_path, monkeypatch):
    """The teacher (here: p = (0.8, 0.2) for every image, 48 px input) sees each training image resized to its own
    input size; validation keeps the one-hot labels; a teacher of other classes is refused."""
    import keras

    from utils.course import runs

    teacher = keras.Sequential([keras.Input((48, 48, 3)), keras.layers.GlobalAveragePooling2D(),
                                keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros",
                                                   bias_initializer=keras.initializers.Constant(np.log([0.8, 0.2])))])  # fmt: skip

    class FakeRun:
        class_names, config = ["NORMAL", "PNEUMONIA"], {"image_size": 48}

        def load_model(self):
            return teacher

    monkeypatch.setattr(runs, "load_run", lambda path: FakeRun())
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(4)]
    manifest = pd.DataFrame({"path": [str(p) for p in paths], "label": ["NORMAL", "PNEUMONIA"] * 2,
                             "split": ["train"] * 2 + ["val"] * 2})  # fmt: skip

    def labels(split, classes=("NORMAL", "PNEUMONIA"), **kwargs):
        return next(iter(data.make_dataset(manifest, split, list(classes), 32, 4, **kwargs)))[1].numpy()

    with train_levers.augmentation("distill", tmp_path / "teacher"):
        trained, validated = labels("train", training=True), labels("val")
        with pytest.raises(ValueError, match="not the student's"):
            labels("train", ("NORMAL", "VIRUS"), training=True)
    soft = np.sqrt([0.8, 0.2]) / np.sqrt([0.8, 0.2]).sum()
    want = {0: 0.5 * np.array([1.0, 0.0]) + 0.5 * soft, 1: 0.5 * np.array([0.0, 1.0]) + 0.5 * soft}
    np.testing.assert_allclose(trained[np.argsort(trained[:, 1])], [want[0], want[1]], atol=1e-5)  # shuffled
    np.testing.assert_array_equal(validated, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(np.sort(labels("train", training=True), axis=0), [[0, 0], [1, 1]])  # outside: one-hot


def test_the_table_shows_a_three_class_run_by_its_argmax_and_macro_f1():
    args = train_levers.parse_args(["--dataset", "pneumonia3", "--seed", "2"])
    assert args.dataset == "pneumonia3" and args.seed == 2
    two = {"accuracy": [0.9, 0.8, 1.0], "AUC": [0.95, 0.9, 0.99], "macro-F1": [0.88, 0.8, 0.9],
           "sensitivity": [0.97, 0.9, 1.0], "specificity": [0.74, 0.6, 0.85]}  # fmt: skip
    three = {name: two[name] for name in ("accuracy", "AUC", "macro-F1")}
    common = {"variant": "baseline", "seed": 2, "image_size": 224, "train_minutes": 6.0, "epochs_run": 15}
    counts = {"train": {"NORMAL": 1149, "PNEUMONIA": 3321}, "val": {"NORMAL": 192, "PNEUMONIA": 554}}
    rows = [common | {"dataset": "pneumonia", "threshold": 0.2, "val": two, "test": two, "images": counts},
            common | {"dataset": "pneumonia3", "threshold": None, "val": three, "test": three,
                      "images": {"train": {"NORMAL": 100, "BACTERIA": 50, "VIRUS": 50},
                                 "val": {"NORMAL": 20, "BACTERIA": 10, "VIRUS": 10}}}]  # fmt: skip
    lines = train_levers.markdown_table(rows).splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert lines[2].startswith("| mobilenet_025 | baseline | pneumonia | 2 | 224 | 4470, 746 | 6.0 |")  # no model: MobileNet
    assert "| 0.200 | 0.900 | 0.950 [0.900, 0.990] | 0.880 | 0.970 | 0.740 |" in lines[2]
    assert "| pneumonia3 | 2 | 224 | 200, 40 | 6.0 | 15 | argmax | 0.900 | 0.950 [0.900, 0.990] | 0.880 | n/a | n/a |" in lines[3]


def test_crop_keeps_the_centre_and_drops_the_border_only_inside_its_block(tmp_path):
    from PIL import Image

    picture = np.full((50, 50), 100, np.uint8)
    picture[:5], picture[-5:], picture[:, :5], picture[:, -5:] = 255, 255, 255, 255  # a white frame: 10% a side
    picture[20:30, 20:30] = 0  # a dark centre square
    path = tmp_path / "framed.png"
    Image.fromarray(picture).save(path)
    cropped = loaded_inside("crop", path, 32)
    plain = data.load_image(str(path), 32).numpy()
    assert cropped.shape == plain.shape == (32, 32, 1)
    np.testing.assert_array_equal(cropped, data.load_image(str(path), 40).numpy()[4:36, 4:36])  # 32 / 0.8 = 40
    assert plain[0].min() == 255 and cropped[0].max() < 255  # the frame is gone ...
    assert cropped[16, 16, 0] < 10 and (cropped < 10).sum() > (plain < 10).sum()  # ... the centre is larger


def test_weight_average_keeps_the_average_of_the_steps_and_saves_it_only_inside_its_block(tmp_path):
    """The model that training leaves is the moving average of the weights after each step (Keras starts it at the
    first step's weights), taken at the end of the epoch that early stopping kept, not the last raw weights."""
    import keras

    from utils import training
    from utils.data import Data

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (48, 8)).astype("float32")
    y = (x[:, 0] + 0.5 * rng.normal(0, 1, 48) > 0).astype(int)
    splits = [tf.data.Dataset.from_tensor_slices((x[i::3], tf.one_hot(y[i::3], 2))).batch(4) for i in range(3)]
    toy = Data(pd.DataFrame({"label": [], "split": []}), ["a", "b"], {0: 1.0, 1: 1.0}, *splits)
    steps: list[list[np.ndarray]] = []  # the raw weights after every training step

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(self.model.get_weights())

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")])
    with train_levers.augmentation("weight-average"):
        course_callbacks = training.make_callbacks
        training.make_callbacks = lambda *args, **kwargs: [*course_callbacks(*args, **kwargs), Record()]
        try:
            history = training.compile_and_fit(model, toy, tmp_path, epochs=4, learning_rate=0.05, patience=5)
        finally:
            training.make_callbacks = course_callbacks
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == train_levers.EMA_MOMENTUM
    averages, average = [], None
    for weights in steps:
        m = 0.0 if average is None else train_levers.EMA_MOMENTUM
        average = [w if m == 0 else m * a + (1 - m) * w for a, w in zip(average or weights, weights, strict=True)]
        averages.append(average)
    aucs, best = history.history["val_auc"], 0  # EarlyStopping: the first epoch more than 0.001 above the rest
    for epoch, auc in enumerate(aucs):
        best = epoch if auc > aucs[best] + 0.001 else best
    kept = averages[(best + 1) * 4 - 1]  # 16 training images, 4 steps per epoch
    for got, want, raw in zip(model.get_weights(), kept, steps[-1], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert not np.allclose(got, raw, atol=1e-3)  # not what plain training would have left
    with train_levers.augmentation("weight-average"):
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="categorical_crossentropy")
    assert model.optimizer.use_ema and float(model.optimizer.learning_rate) == pytest.approx(0.02)  # the course's rate
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="categorical_crossentropy")
    assert not model.optimizer.use_ema
    assert not any(isinstance(c, keras.callbacks.SwapEMAWeights) for c in training.make_callbacks(toy.val, tmp_path, 1, "x"))


def test_the_cnn_takes_its_laptop_recipe_and_refuses_mobilenet_only_variants(capsys):
    mobilenet, cnn = train_levers.parse_args([]), train_levers.parse_args(["--model", "cnn", "--variants", "stretch"])
    assert (mobilenet.model, mobilenet.profile, mobilenet.image_size, mobilenet.epochs) == ("mobilenet_025", "full", 224, [5, 10])
    assert (cnn.model, cnn.profile, cnn.image_size, cnn.epochs) == ("cnn", "laptop", None, None)  # the profile's recipe
    assert train_levers.parse_args(["--model", "cnn", "--epochs", "12"]).epochs == [12]
    assert train_levers.parse_args(["--model", "cnn"]).variants == [v for v in train_levers.VARIANTS
                                                                    if "finetune" not in v and v not in ("distill", "stem")]
    assert mobilenet.variants == [v for v in train_levers.VARIANTS
                                  if v not in ("distill", "stem", "no-stem", "full-finetune")]  # full-finetune = baseline
    taught = train_levers.parse_args(["--model", "cnn", "--teacher", "runs/x"])
    assert "distill" in taught.variants and str(taught.teacher) == "runs/x"
    for wrong, message in ((["--variants", "distill"], "pass --teacher RUN_FOLDER"),
                           (["--variants", "stretch", "--teacher", "runs/x"], "for the distill variant"),
                           (["--model", "cnn", "--variants", "deep-finetune"], "not for --model cnn"),
                           (["--variants", "no-stem"], "use them with --model cnn"),
                           (["--model", "cnn", "--epochs", "5", "10"], "one number for the CNN"),
                           (["--epochs", "5"], "HEAD FINETUNE for MobileNet 0.25")):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            train_levers.parse_args(wrong)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_course_cnn_has_a_stride_2_stem_and_no_stem_gives_the_cnn_of_before_only_inside_its_block():
    """Same layers and weights' shapes; with the same weights the course's first convolution computes every second
    output of the stride-1 one (TensorFlow pads a stride-2 "same" convolution on even sizes after, not before:
    rows 1, 3, ...). ``stem`` changes nothing any more."""
    from utils.course import experiment
    from utils.models import build_cnn

    course = experiment.build_cnn
    with train_levers.augmentation("no-stem"):
        plain = experiment.build_cnn(2, 32)
    with train_levers.augmentation("stem"):
        stem = experiment.build_cnn(2, 32)
    assert experiment.build_cnn is course
    strided = build_cnn(2, 32)
    assert [w.shape for w in plain.weights] == [w.shape for w in strided.weights] == [w.shape for w in stem.weights]
    plain.set_weights(strided.get_weights())
    assert strided.get_layer("block1_conv1").strides == stem.get_layer("block1_conv1").strides == (2, 2)
    assert plain.get_layer("block1_conv1").strides == (1, 1)
    assert tuple(strided.get_layer("block4_relu2").output.shape) == (None, 2, 2, 256)
    assert tuple(plain.get_layer("block4_relu2").output.shape) == (None, 4, 4, 256)
    x = images(2, 32).repeat(3, axis=-1)
    first = lambda model: tf.keras.Model(model.input, model.get_layer("block1_conv1").output)(x).numpy()  # noqa: E731
    np.testing.assert_allclose(first(strided), first(plain)[:, 1::2, 1::2], rtol=1e-5, atol=1e-3)


def test_train_images_keeps_n_training_images(synthetic_source, tmp_path):
    args = train_levers.parse_args(["--model", "cnn", "--train-images", "0", "--source", str(synthetic_source)])
    settings = train_levers.real_data.make_settings(args, synthetic_source, "cnn")
    assert args.train_images == 0 and settings.profile.images["train"] is None  # every training image
    assert train_levers.parse_args(["--model", "cnn"]).train_images is None  # the profile's number


def test_saving_a_cnn_row_keeps_the_mobilenet_row_and_the_other_image_counts_of_the_same_variant_and_seed(tmp_path):
    path = tmp_path / "train_levers.json"

    def seen(train: int, val: int) -> dict:
        return {"train": {"NORMAL": train // 4, "PNEUMONIA": train - train // 4},
                "val": {"NORMAL": val // 4, "PNEUMONIA": val - val // 4}, "test": {"NORMAL": 50, "PNEUMONIA": 100}}

    same = {"variant": "stretch", "seed": 1, "image_size": 224, "dataset": "pneumonia"}
    train_levers.save(path, [same | {"model": "mobilenet_025", "images": seen(2000, 300), "test": 0.9}])
    train_levers.save(path, [same | {"model": "cnn", "images": seen(2000, 300), "test": 0.8}])
    train_levers.save(path, [same | {"model": "cnn", "images": seen(2000, 300), "test": 0.85}])  # again: replaces it
    train_levers.save(path, [same | {"model": "cnn", "images": seen(4470, 300), "test": 0.7}])  # every training image
    train_levers.save(path, [same | {"model": "cnn", "images": seen(4470, 746), "test": 0.75}])  # and every val image
    rows = json.loads(path.read_text())
    assert sorted((row["model"], row["test"]) for row in rows) == [
        ("cnn", 0.7), ("cnn", 0.75), ("cnn", 0.85), ("mobilenet_025", 0.9)]


def originals_like(n: int = 120, seed: int = 0, classes: int = 2) -> pd.DataFrame:
    """A table shaped like load_originals' whose classes differ in aspect ratio and size, as the real ones do
    (``classes=3``: NORMAL, BACTERIA, VIRUS, VIRUS a little smaller than BACTERIA)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    kind = np.array(["", "bacteria", "virus"])[y]
    return pd.DataFrame({"file": [f"person{i}_{k}_{i}.jpeg" if k else f"IM-{i:04d}-0001.jpeg" for i, k in enumerate(kind)],
                         "folder": np.where(y > 0, "PNEUMONIA", "NORMAL"), "y": y, "patient": [f"p{i}" for i in range(n)],
                         "aspect": np.exp(rng.normal(0.2 + 0.2 * (y > 0), 0.12)),
                         "megapixels": np.exp(rng.normal(0.8 - 0.8 * (y > 0) - 0.4 * (y == 2), 0.5))})  # fmt: skip


def test_load_originals_labels_the_training_originals_for_two_or_three_classes(tmp_path):
    manifest = tmp_path / "MANIFEST.csv"
    pd.DataFrame({"split": ["train", "train", "train", "test"], "label": ["NORMAL", "BACTERIA", "VIRUS", "VIRUS"],
                  "file": ["IM-0001-0001.jpeg", "person3_bacteria_10.jpeg", "person4_virus_11.jpeg", "person9_virus_1.jpeg"],
                  "orig_w": [1200, 1000, 900, 224], "orig_h": [1000, 800, 600, 224]}).to_csv(manifest, index=False)  # fmt: skip
    two, three = (train_levers.load_originals(dataset, manifest) for dataset in ("pneumonia", "pneumonia3"))
    assert list(two["y"]) == [0, 1, 1] and list(three["y"]) == [0, 1, 2]  # the test split's original is left out
    assert list(three["folder"]) == ["NORMAL", "PNEUMONIA", "PNEUMONIA"] and list(three["patient"])[1:] == ["person3", "person4"]
    np.testing.assert_allclose(three["aspect"], [1.2, 1.25, 1.5])
    np.testing.assert_allclose(three["megapixels"], [1.2, 0.8, 0.54])


def test_overlap_weights_balance_the_acquisition_cues_between_the_classes():
    table = originals_like()
    weights = train_levers.overlap_weights(table)
    cues = np.log(table[["aspect", "megapixels"]].to_numpy())
    plain = [cues[table["y"] == k].mean(axis=0) for k in (0, 1)]
    weighted = [np.average(cues[table["y"] == k], axis=0, weights=weights[table["y"] == k]) for k in (0, 1)]
    assert np.abs(plain[0] - plain[1]).min() > 0.1  # unweighted, the cues tell the classes apart
    np.testing.assert_allclose(weighted[0], weighted[1], atol=1e-3)  # weighted, they do not
    assert ((weights > 0) & (weights < 1)).all()
    normal = table[table["y"] == 0]
    most_like_pneumonia = normal["aspect"].idxmax()  # the widest NORMAL original looks most like a pneumonia one
    assert weights[most_like_pneumonia] > np.median(weights[normal.index])


def test_overlap_weights_for_two_classes_are_the_other_classes_propensity_and_nearly_balance_three():
    from sklearn.linear_model import LogisticRegression

    table = originals_like()
    cues = np.log(table[["aspect", "megapixels"]].to_numpy())
    e = LogisticRegression(C=np.inf).fit(cues, table["y"]).predict_proba(cues)[:, 1]
    np.testing.assert_allclose(train_levers.overlap_weights(table), np.where(table["y"] == 1, 1 - e, e), atol=1e-4)
    three = originals_like(300, seed=3, classes=3)
    weights, y = train_levers.overlap_weights(three), three["y"].to_numpy()
    cues = np.log(three[["aspect", "megapixels"]].to_numpy())
    plain = np.array([cues[y == k].mean(axis=0) for k in range(3)])
    weighted = np.array([np.average(cues[y == k], axis=0, weights=weights[y == k]) for k in range(3)])
    spread = lambda means: np.ptp(means, axis=0)  # noqa: E731  (largest gap between two classes, per cue)
    assert (spread(plain) > 0.15).all() and (spread(weighted) < spread(plain) / 4).all()
    assert ((weights > 0) & (weights < 1)).all()


def test_without_patients_drops_their_train_and_validation_images_and_duplicates_only_inside_its_block(monkeypatch):
    from utils.course import experiment
    from utils.course.manifest import Prepared

    table = pd.DataFrame({"path": list("abcdefg"), "split": ["train", "train", "val", "train", "test", "train", "val"],
                          "patient_id": ["p1", "p1", "p2", "p3", "test/p1", "p4", "p5"],
                          "group": ["p1", "p1", "p2", "p3", "test/p1", "p2", "p5"]})  # p4 duplicates p2's image  # fmt: skip
    monkeypatch.setattr(experiment, "load_prepared", lambda *a, **k: Prepared(None, table, None, ["NORMAL"], {}))
    with train_levers.without_patients({"p1", "p2"}):
        kept = experiment.load_prepared("settings").manifest
    assert list(kept["path"]) == ["d", "e", "g"]  # p1, p2 and p2's duplicate p4 gone; test untouched
    assert len(experiment.load_prepared("settings").manifest) == 7


def brightness_model_on_originals(folder: Path, table: pd.DataFrame, brightness: np.ndarray, dense: list):
    """Writes each original of ``table`` under ``folder/train`` as a 16 px grey square of its ``brightness`` and
    returns a softmax model of the mean brightness with the Dense weights ``dense`` (kernel, bias)."""
    import keras
    from PIL import Image

    for (class_folder, name), value in zip(table[["folder", "file"]].itertuples(index=False), brightness, strict=True):
        (folder / "train" / class_folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), value, np.uint8)).save(folder / "train" / class_folder / name)
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(len(dense[1]), activation="softmax")(pooled))
    model.layers[-1].set_weights([np.asarray(w, np.float32) for w in dense])
    return model


def test_score_originals_weighs_the_images_and_chooses_the_weighted_youden_threshold(tmp_path):
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score, roc_curve

    table = originals_like(40, seed=1)
    rng = np.random.default_rng(2)
    brightness = np.clip(90 + 60 * table["y"] + rng.normal(0, 40, len(table)), 0, 255)  # overlapping classes
    model = brightness_model_on_originals(tmp_path, table, brightness, [[[0.0, 0.01]] * 3, [0.0, -3.6]])

    class FakeRun:  # what score_originals reads of a run
        path, config, class_names = tmp_path, {"image_size": 16}, ["NORMAL", "PNEUMONIA"]

        def load_model(self):
            return model

        def arrays(self, split):
            return np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])

    out = train_levers.score_originals(FakeRun(), table, tmp_path, n_boot=50)
    saved = pd.read_csv(tmp_path / "originals.csv")
    y, p, w = saved["y"].to_numpy(), saved["p"].to_numpy(), train_levers.overlap_weights(table)
    np.testing.assert_allclose(saved["weight"], w)
    assert out["AUC"] == round(roc_auc_score(y, p), 4) and out["AUC"] > 0.6
    assert out["weighted_AUC"][0] == round(roc_auc_score(y, p, sample_weight=w), 4)
    assert out["weighted_AUC"][1] <= out["weighted_AUC"][0] <= out["weighted_AUC"][2]
    fpr, tpr, cuts = roc_curve(y, p, sample_weight=w)
    assert out["threshold"] == round(float(cuts[np.argmax(tpr - fpr)]), 4)
    expected = (np.array([0.1, 0.6, 0.7, 0.2]) >= out["threshold"]).astype(int) == np.array([0, 0, 1, 1])
    assert out["test_at_threshold"]["accuracy"][0] == expected.mean()
    assert out["spearman_p_with_cue"]["NORMAL"]["aspect"] == round(spearmanr(p[y == 0], table["aspect"][y == 0]).statistic, 3)


def test_score_originals_of_a_three_class_run_weighs_its_macro_f1_and_macro_auc(tmp_path):
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score, roc_auc_score

    table = originals_like(60, seed=4, classes=3)
    rng = np.random.default_rng(5)
    brightness = np.clip(60 + 60 * table["y"] + rng.normal(0, 35, len(table)), 0, 255)  # overlapping classes
    slope = [[0.0, 0.01, 0.02]] * 3  # brighter: BACTERIA, brighter still: VIRUS
    model = brightness_model_on_originals(tmp_path, table, brightness, [slope, [0.0, -1.8, -5.4]])

    class FakeRun:  # what score_originals reads of a three-class run
        path, config, class_names = tmp_path, {"image_size": 16}, ["NORMAL", "BACTERIA", "VIRUS"]

        def load_model(self):
            return model

    out = train_levers.score_originals(FakeRun(), table, tmp_path, n_boot=50)
    saved = pd.read_csv(tmp_path / "originals.csv")
    y, w = saved["y"].to_numpy(), train_levers.overlap_weights(table)
    probs = saved[["p_NORMAL", "p_BACTERIA", "p_VIRUS"]].to_numpy()
    np.testing.assert_allclose(saved["p"], 1 - probs[:, 0], atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert "threshold" not in out and len(out["effective_images"]) == 3
    assert out["macro_F1"] == round(f1_score(y, probs.argmax(1), average="macro"), 4) and out["macro_F1"] > 0.5
    assert out["weighted_macro_F1"][0] == round(f1_score(y, probs.argmax(1), average="macro", sample_weight=w), 4)
    assert out["weighted_macro_F1"][1] <= out["weighted_macro_F1"][0] <= out["weighted_macro_F1"][2]
    assert out["weighted_AUC"][0] == round(roc_auc_score(y, probs, multi_class="ovr", sample_weight=w), 4)
    assert out["AUC"] == round(roc_auc_score(y, probs, multi_class="ovr"), 4)
    virus = y == 2
    assert out["spearman_p_with_cue"]["VIRUS"]["megapixels"] == round(
        spearmanr(saved["p"][virus], table["megapixels"][virus]).statistic, 3)


def test_the_originals_table_of_three_class_runs_shows_their_weighted_macro_f1():
    three = {"accuracy": [0.8, 0.7, 0.9], "AUC": [0.9, 0.85, 0.95], "macro-F1": [0.78, 0.7, 0.85]}
    rho = {name: {"aspect": value, "megapixels": 0.0} for name, value in (("NORMAL", 0.3), ("BACTERIA", 0.21), ("VIRUS", -0.05))}
    originals = {"macro_F1": 0.81, "weighted_macro_F1": [0.79, 0.72, 0.86], "AUC": 0.93, "weighted_AUC": [0.91, 0.87, 0.94],
                 "spearman_p_with_cue": rho}  # fmt: skip
    rows = [{"model": "mobilenet_025", "variant": "stretch", "seed": 2, "threshold": None, "val": three,
             "test": three | {"macro-F1": [0.87, 0.8, 0.92]}, "originals": originals}]  # fmt: skip
    lines = train_levers.originals_table(rows).splitlines()
    assert "weighted macro-F1 [95% CI]" in lines[0] and len(lines) == 3
    assert lines[2] == ("| mobilenet_025 | stretch | 2 | 0.780 | 0.810 | 0.790 [0.720, 0.860] | 0.910 [0.870, 0.940] | "
                        "0.30, 0.21, -0.05 | 0.870 |")  # fmt: skip


def test_the_originals_table_shows_validation_originals_and_test_at_both_thresholds():
    two = {"accuracy": [0.9, 0.8, 1.0], "AUC": [0.95, 0.9, 0.99], "sensitivity": [0.97, 0.9, 1.0], "specificity": [0.74, 0.6, 0.85]}
    at_originals = two | {"accuracy": [0.92, 0.8, 1.0], "specificity": [0.84, 0.7, 0.9]}
    rho = {"NORMAL": {"aspect": 0.34, "megapixels": -0.3}, "PNEUMONIA": {"aspect": 0.41, "megapixels": -0.5}}
    originals = {"AUC": 0.93, "weighted_AUC": [0.91, 0.87, 0.94], "threshold": 0.5, "test_at_threshold": at_originals,
                 "spearman_p_with_cue": rho}  # fmt: skip
    rows = [{"model": "mobilenet_025", "variant": "stretch", "seed": 1, "threshold": 0.2, "val": two, "test": two,
             "originals": originals},
            {"model": "mobilenet_025", "variant": "baseline", "seed": 1, "threshold": 0.2, "val": two, "test": two}]  # fmt: skip
    lines = train_levers.originals_table(rows).splitlines()
    assert len(lines) == 3, "a run that did not hold out the originals has no row"
    assert lines[2] == ("| mobilenet_025 | stretch | 1 | 0.950 | 0.930 | 0.910 [0.870, 0.940] | 0.34, 0.41 | 0.950 | "
                        "0.200: 0.900 / 0.970 / 0.740 | 0.500: 0.920 / 0.970 / 0.840 |")  # fmt: skip


def test_distill_refuses_a_teacher_that_is_not_a_finished_run_of_the_dataset(tmp_path, capsys):
    (tmp_path / "source" / "train").mkdir(parents=True)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    argv = ["--model", "cnn", "--variants", "distill", "--teacher", str(teacher), "--source", str(tmp_path / "source")]
    for config, message in ((None, "is not a run folder"),
                            ({"status": "running", "dataset": "pneumonia"}, "is not a finished run (status running)"),
                            ({"status": "complete", "dataset": "pneumonia3"}, "learned pneumonia3, not pneumonia")):  # fmt: skip
        if config:
            (teacher / "config.json").write_text(json.dumps(config))
            (teacher / "model.keras").write_bytes(b"")
        assert train_levers.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert train_levers.teacher_problem(teacher, "pneumonia3") is None


def test_a_trained_variant_is_recorded_in_its_run_for_levers(synthetic_source, tmp_path):
    """A tiny equalize run (32 px, one epoch) says so in its config.json, which levers.py reads to load its images
    as trained (that loading, and the skip without it: test_levers.py); utils.data is left as it was."""
    from benchmarks import levers
    from utils.course.runs import load_run

    original = data.load_image
    args = train_levers.parse_args(["--model", "cnn", "--variants", "equalize", "--profile", "smoke", "--image-size",
                                    "32", "--epochs", "1", "--source", str(synthetic_source), "--output",
                                    str(tmp_path), "--n-boot", "20", "--train-images", "0"])  # fmt: skip
    row = train_levers.train_variant(args, "equalize")
    assert row["run_dir"].startswith(str(tmp_path / "equalize" / "seed42-32px-allimg-cnn"))
    assert load_run(row["run_dir"]).config["benchmark_variant"] == "equalize" and data.load_image is original
    assert levers.main(["--runs", row["run_dir"], "--no-adabn", "--no-tta", "--n-boot", "20", "--output",
                        str(tmp_path / "levers")]) == 0  # fmt: skip
    details = json.loads((tmp_path / "levers" / "levers.json").read_text())["details"]["cnn"]
    assert "repredicted_levers_skipped" not in details
    assert set(details["aspect"]) == {"val", "test"} and data.load_image is original


@pytest.mark.parametrize("variant", ["baseline", "strong-intensity", "stretch", "strong-geometric"])
def test_every_augmentation_layer_of_a_variant_has_its_own_seed(variant):
    """Layers with one seed draw the same numbers (tests/test_data.py): no two layers of a variant share one."""
    with train_levers.augmentation(variant):
        augment = data.build_augmentation(42)
    seeds = [layer.seed for layer in augment.layers]
    assert len(set(seeds)) == len(seeds) and min(seeds) == 42

"""The embedded synthetic dataset (utils/course/synthetic.py): Kermany's layout and imbalance, two- and three-class
views, byte-identical for a seed, decodable images with lesion masks that line up with the label and the image,
and a ``.complete`` marker that makes a finished folder reused, never regenerated or overwritten."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_COUNTS
from PIL import Image
from scipy import ndimage

from utils.course import synthetic
from utils.course.datasets import (
    DatasetError,
    get_dataset,
    kermany_patient_id,
    kermany_three_class,
    scan_images,
)
from utils.course.synthetic import (
    COMPLETE,
    COUNTS,
    SYNTHETIC_VERSION,
    generate_synthetic,
    load_mask,
    mask_path,
    render_case,
)

TINY = {"train": {"NORMAL": 2, "BACTERIA": 1, "VIRUS": 1}, "test": {"NORMAL": 1, "BACTERIA": 1, "VIRUS": 1}}


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("tiny") / "synthetic", TINY, seed=5)


# --- Class balance and layout --------------------------------------------------------------------------------------


def test_default_counts_are_imbalanced_like_kermany():
    train, test = COUNTS["train"], COUNTS["test"]
    assert train["NORMAL"] / sum(train.values()) == pytest.approx(0.27, abs=0.01)  # Kermany's train: 1341 / 5216
    assert test["NORMAL"] / sum(test.values()) == pytest.approx(0.375, abs=0.01)  # Kermany's test: 234 / 624
    assert train["BACTERIA"] > train["VIRUS"] > train["NORMAL"]


def test_default_plan_has_kermany_file_names_and_patients_in_one_split_only():
    plan = synthetic._plan(COUNTS, seed=0)
    files = [(p.split, p.label, rel) for p in plan for rel, _ in p.images]
    per_class = Counter((split, label) for split, label, _ in files)
    assert per_class == Counter({(s, c): n for s, by_class in COUNTS.items() for c, n in by_class.items()})
    assert len({rel for *_, rel in files}) == len(files)  # no two images share a path
    for split, label, rel in files:
        folder, name = rel.split("/")[1:]
        assert rel.startswith(f"{split}/{'NORMAL' if label == 'NORMAL' else 'PNEUMONIA'}/")
        assert kermany_three_class(folder, name) == label  # the name says the kind, as in Kermany
    patients = {split: {kermany_patient_id(rel.rsplit("/", 1)[1]) for s, _, rel in files if s == split}
                for split in COUNTS}  # fmt: skip
    assert not patients["train"] & patients["test"]
    sizes = Counter(len(p.images) for p in plan)
    assert set(sizes) == {1, 2, 3} and sizes[1] > sizes[2] > sizes[3]  # several images of one patient: group them
    assert all(len({kermany_patient_id(rel.rsplit("/", 1)[1]) for rel, _ in p.images}) == 1 for p in plan)


def test_generated_folder_holds_the_counts_asked_for(synthetic_source):
    for split, by_class in SMALL_COUNTS.items():
        normal = sorted((synthetic_source / split / "NORMAL").glob("*.png"))
        sick = sorted((synthetic_source / split / "PNEUMONIA").glob("*.png"))
        assert len(normal) == by_class["NORMAL"]
        assert sum("_bacteria_" in p.name for p in sick) == by_class["BACTERIA"]
        assert sum("_virus_" in p.name for p in sick) == by_class["VIRUS"]
        assert len(sick) == by_class["BACTERIA"] + by_class["VIRUS"]


def test_binary_and_three_class_views(synthetic_source):
    binary, skipped = scan_images(get_dataset("synthetic"), synthetic_source)
    three, _ = scan_images(get_dataset("synthetic3"), synthetic_source)
    assert skipped == []  # and the masks are not taken for images
    expected = {s: Counter(c) for s, c in SMALL_COUNTS.items()}
    assert {s: Counter(r.label for r in three if r.official_split == s) for s in SMALL_COUNTS} == expected
    for split, by_class in SMALL_COUNTS.items():
        labels = Counter(r.label for r in binary if r.official_split == split)
        assert labels == {"NORMAL": by_class["NORMAL"], "PNEUMONIA": by_class["BACTERIA"] + by_class["VIRUS"]}
    assert sorted(r.path for r in binary) == sorted(r.path for r in three)  # the same files, labelled twice


# --- Determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_images(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", TINY, seed=5)
    assert digest(again) == digest(tiny)
    other = digest(generate_synthetic(tmp_path / "other", TINY, seed=6))
    assert len(other) == len(digest(again))  # the same layout ...
    assert not {h for p, h in other.items() if p.endswith(".png")} & set(digest(tiny).values())  # ... other images
    assert digest(tiny)[COMPLETE] != other[COMPLETE]  # the seed is recorded


def test_render_case_is_deterministic_and_the_image_seed_changes_only_the_acquisition():
    first, second = render_case("BACTERIA", 11, 22), render_case("BACTERIA", 11, 22)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.lesion, second.lesion)
    other = render_case("BACTERIA", 11, 23)  # same patient, another image of them
    assert other.image.shape != first.image.shape or not np.array_equal(other.image, first.image)


def test_unknown_class_and_empty_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown synthetic class 'COVID'"):
        render_case("COVID", 0, 0)
    with pytest.raises(ValueError, match="needs at least one image"):
        generate_synthetic(tmp_path / "s", {"train": {"NORMAL": 3, "BACTERIA": 0, "VIRUS": 1}})
    assert not (tmp_path / "s").exists()


# --- Images and masks ----------------------------------------------------------------------------------------------


def test_images_decode_as_grey_at_the_generators_sizes(synthetic_source):
    import tensorflow as tf

    paths = sorted(p for p in synthetic_source.rglob("*.png") if "masks" not in p.parts)
    assert len(paths) == sum(sum(c.values()) for c in SMALL_COUNTS.values())
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "L"
            assert 192 <= image.height <= 320 and 192 <= image.width <= 320
            pixels = np.asarray(image)
        assert pixels.std() > 20  # an X-ray-like picture, not a flat grey square
    decoded = tf.io.decode_image(tf.io.read_file(str(paths[0])), channels=1).numpy()  # as the pipeline reads it
    with Image.open(paths[0]) as image:
        np.testing.assert_array_equal(decoded[..., 0], np.asarray(image))


def test_every_abnormal_image_has_a_mask_of_its_size_and_no_normal_one_has(synthetic_source):
    for split in SMALL_COUNTS:
        sick = sorted((synthetic_source / split / "PNEUMONIA").glob("*.png"))
        masks = sorted((synthetic_source / split / "PNEUMONIA" / "masks").glob("*.png"))
        assert [m.name for m in masks] == [p.name for p in sick]
        assert not (synthetic_source / split / "NORMAL" / "masks").exists()
        for image_path in sick:
            with Image.open(image_path) as image, Image.open(mask_path(image_path)) as mask:
                assert mask.size == image.size
                values = np.unique(np.asarray(mask))
            assert set(values.tolist()) == {0, 255}  # binary, and never empty


def test_masks_on_disk_have_the_shape_of_their_label(synthetic_source):
    for path in sorted(synthetic_source.glob("*/PNEUMONIA/*.png")):
        mask = load_mask(path)
        _, parts = ndimage.label(mask)
        half = mask.shape[1] // 2
        left, right = mask[:, :half].sum(), mask[:, half:].sum()
        if "_bacteria_" in path.name:  # one consolidation, in one lung
            assert parts == 1 and min(left, right) < 0.05 * mask.sum(), path.name
        else:  # diffuse and bilateral
            assert parts >= 2 and min(left, right) > 0.2 * mask.sum(), path.name


@pytest.mark.parametrize("label", ["BACTERIA", "VIRUS"])
def test_the_lesion_is_where_the_mask_says(label):
    """Inside the mask the lung is denser (brighter) than in the rest of the lung fields: always for a
    consolidation, on average for the fainter interstitial change."""
    contrast = []
    for seed in range(12):
        case = render_case(label, seed, 100 + seed)
        pixels, lesion, lungs = case.image.astype(float), case.lesion, case.lungs
        contrast.append(pixels[lesion].mean() - pixels[lungs & ~lesion].mean())
    assert (min(contrast) if label == "BACTERIA" else np.mean(contrast)) > 5


@pytest.mark.parametrize("label", ["NORMAL", "BACTERIA", "VIRUS"])
def test_rendered_lesion_lies_in_the_lungs(label):
    for seed in range(3):
        case = render_case(label, seed, 50 + seed)
        assert case.image.dtype == np.uint8 and case.lesion.shape == case.image.shape == case.lungs.shape
        assert not (case.lesion & ~case.lungs).any()
        assert case.lesion.any() == (label != "NORMAL")
        assert 0.1 < case.lungs.mean() < 0.4


def test_load_mask(synthetic_source, tmp_path):
    normal = sorted((synthetic_source / "train" / "NORMAL").glob("*.png"))[0]
    with Image.open(normal) as image:
        assert load_mask(normal).shape == (image.height, image.width)
    assert not load_mask(normal).any()
    assert load_mask(normal, size=32).shape == (32, 32)
    sick = sorted((synthetic_source / "train" / "PNEUMONIA").glob("*.png"))[0]
    small = load_mask(sick, size=32)
    assert small.shape == (32, 32) and small.dtype == bool and small.any()
    lonely = tmp_path / "PNEUMONIA" / "person1_virus_1.png"
    lonely.parent.mkdir()
    lonely.write_bytes(sick.read_bytes())
    with pytest.raises(FileNotFoundError, match="No lesion mask") as caught:
        load_mask(lonely)
    assert str(mask_path(lonely)) in str(caught.value)


# --- The .complete marker -------------------------------------------------------------------------------------------


def test_complete_marker_records_the_parameters(tiny):
    marker = json.loads((tiny / COMPLETE).read_text())
    assert marker["version"] == SYNTHETIC_VERSION and marker["seed"] == 5 and marker["counts"] == TINY
    assert not list(tiny.parent.glob(".synthetic.tmp-*"))  # the temporary folder was renamed into place


def test_a_complete_folder_is_reused_not_regenerated(tiny, monkeypatch):
    before = digest(tiny)
    mtimes = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}

    def no_drawing(*_):
        raise AssertionError("a complete dataset was drawn again")

    monkeypatch.setattr(synthetic, "_write_patient", no_drawing)
    assert generate_synthetic(tiny, TINY, seed=5) == tiny
    assert digest(tiny) == before
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == mtimes


def test_another_seed_into_a_complete_folder_is_refused_and_nothing_changes(tiny):
    before = digest(tiny)
    with pytest.raises(DatasetError) as caught:
        generate_synthetic(tiny, TINY, seed=6)
    message = str(caught.value)
    assert "'seed': 5" in message and "'seed': 6" in message and "Nothing was changed" in message
    with pytest.raises(DatasetError, match="holds a synthetic dataset made with"):
        generate_synthetic(tiny, SMALL_COUNTS, seed=5)
    assert digest(tiny) == before


def test_a_folder_without_the_marker_is_never_written_into(tmp_path):
    dest = tmp_path / "synthetic"
    (dest / "train").mkdir(parents=True)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not a complete synthetic dataset \\(no .complete file\\)"):
        generate_synthetic(dest, TINY, seed=5)
    assert sorted(p.name for p in dest.iterdir()) == ["notes.txt", "train"]


def test_an_empty_folder_is_filled(tmp_path, tiny):
    dest = tmp_path / "synthetic"
    dest.mkdir()
    assert generate_synthetic(dest, TINY, seed=5) == dest
    assert digest(dest) == digest(tiny)


def test_an_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real = synthetic._write_patient

    def fails_on_the_third(root, planned):
        calls.append(planned)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(root, planned)

    monkeypatch.setattr(synthetic, "_write_patient", fails_on_the_third)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 1)  # one worker: the order of the calls is fixed
    with pytest.raises(OSError, match="No space left"):
        generate_synthetic(tmp_path / "synthetic", TINY, seed=5)
    assert list(tmp_path.iterdir()) == []  # no half dataset, no temporary folder
    monkeypatch.setattr(synthetic, "_write_patient", real)
    assert (generate_synthetic(tmp_path / "synthetic", TINY, seed=5) / COMPLETE).is_file()

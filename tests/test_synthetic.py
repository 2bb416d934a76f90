"""The synthetic dataset: deterministic, Kermany-shaped, with lesion masks that match the anatomy."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from utils.datasets import DatasetError, get_dataset, scan_images
from utils.synthetic import (
    CLASSES,
    COMPLETE_NAME,
    SYNTHETIC_VERSION,
    generate_synthetic,
    load_mask,
    mask_path,
    render_case,
)

N_TRAIN, N_TEST = 8, 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(
        tmp_path_factory.mktemp("syn") / "synthetic",
        n_train_per_class=N_TRAIN,
        n_test_per_class=N_TEST,
        seed=0,
    )


@pytest.fixture(scope="module")
def records(dataset: Path) -> list:
    return scan_images(get_dataset("synthetic"), dataset)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_counts_and_complete_marker(dataset: Path, records: list) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == [COMPLETE_NAME, "test", "train"]
    for split in ("train", "test"):
        assert sorted(p.name for p in (dataset / split).iterdir()) == ["NORMAL", "PNEUMONIA"]
        assert not (dataset / split / "NORMAL" / "masks").exists()
    counts = Counter((r.official_split, r.label) for r in records)
    assert counts == {(s, c): n for s, n in (("train", N_TRAIN), ("test", N_TEST)) for c in CLASSES}
    info = json.loads((dataset / COMPLETE_NAME).read_text())
    assert info["version"] == SYNTHETIC_VERSION
    assert (info["seed"], info["n_train_per_class"], info["n_test_per_class"]) == (0, N_TRAIN, N_TEST)
    assert info["images"]["train/VIRUS"] == N_TRAIN
    assert not list(dataset.parent.glob(".synthetic.tmp-*")), "the temporary folder was left behind"


def test_file_names_parse_to_labels_and_patients(records: list) -> None:
    for r in records:
        if r.label == "NORMAL":
            assert re.fullmatch(r"IM-\d{4}-\d{4}\.png", r.path.name), r.path.name
        else:
            assert r.path.parent.name == "PNEUMONIA"
            assert re.fullmatch(rf"person\d+_{r.label.lower()}_\d+\.png", r.path.name), r.path.name
            assert r.patient_id.removeprefix("test/") == r.path.name.split("_")[0]
    per_patient = Counter(r.patient_id for r in records)
    assert max(per_patient.values()) in (2, 3), "some patients should have several images"
    labels = {}
    for r in records:  # a patient keeps one label
        assert labels.setdefault(r.patient_id, r.label) == r.label
    numbers = {
        split: {r.patient_id.removeprefix("test/") for r in records if r.official_split == split}
        for split in ("train", "test")
    }
    assert not numbers["train"] & numbers["test"], "patient numbers must differ between train and test"


def test_masks_exist_only_for_abnormal_images_and_match_sizes(records: list) -> None:
    for r in records:
        path = mask_path(r.path)
        if r.label == "NORMAL":
            assert not path.exists()
            continue
        with Image.open(r.path) as image, Image.open(path) as mask:
            assert image.mode == mask.mode == "L"
            assert mask.size == image.size
            assert set(np.unique(np.asarray(mask))) == {0, 255}
        lesion = load_mask(r.path)
        assert lesion.dtype == bool and lesion.shape == (image.height, image.width) and lesion.any()
        labels, count = ndimage.label(lesion)
        half = lesion.shape[1] // 2
        if r.label == "BACTERIA":
            assert count == 1, f"{r.path.name}: a consolidation is one blob, found {count}"
        else:
            assert lesion[:, :half].any() and lesion[:, half:].any(), (
                f"{r.path.name}: virus must be bilateral"
            )


def test_load_mask_resizes_and_handles_normal_and_missing(records: list, tmp_path: Path) -> None:
    sick = next(r for r in records if r.label == "BACTERIA")
    small = load_mask(sick.path, size=32)
    assert small.shape == (32, 32) and small.dtype == bool and small.any()
    normal = next(r for r in records if r.label == "NORMAL")
    with Image.open(normal.path) as image:
        assert load_mask(normal.path).shape == (image.height, image.width)
    assert not load_mask(normal.path).any() and load_mask(normal.path, size=16).shape == (16, 16)
    orphan = tmp_path / "PNEUMONIA" / "person1_virus_1.png"
    orphan.parent.mkdir()
    Image.new("L", (20, 20)).save(orphan)
    with pytest.raises(FileNotFoundError, match="No lesion mask"):
        load_mask(orphan)


def test_images_vary_in_size_and_brightness_overlaps_across_classes(records: list) -> None:
    sizes, means = set(), {c: [] for c in CLASSES}
    for r in records:
        with Image.open(r.path) as image:
            assert image.mode == "L"
            assert min(image.size) >= 192 and max(image.size) <= 320
            ratio = image.width / image.height
            assert 0.75 <= ratio <= 1.3
            sizes.add(image.size)
            means[r.label].append(np.asarray(image).mean())
    assert len(sizes) > len(records) // 2
    # No global-brightness shortcut: every class's range of mean brightness overlaps every other's.
    for a in CLASSES:
        for b in CLASSES:
            assert min(means[a]) < max(means[b]), (a, b, means)


@pytest.mark.parametrize("label", ["BACTERIA", "VIRUS"])
def test_lesions_lie_inside_the_lungs(label: str) -> None:
    for seed in range(6):
        case = render_case(label, patient_seed=seed, image_seed=100 + seed)
        assert case.image.shape == case.lesion.shape == case.lungs.shape
        assert case.lesion.sum() > 0.01 * case.lungs.sum()
        assert not (case.lesion & ~case.lungs).any()
        assert 0.05 < case.lungs.mean() < 0.6


def test_normal_case_has_no_lesion_and_bad_label_is_refused() -> None:
    case = render_case("NORMAL", 1, 2)
    assert case.image.dtype == np.uint8 and not case.lesion.any() and case.lungs.any()
    with pytest.raises(ValueError, match="Unknown synthetic class"):
        render_case("COVID", 1, 2)


def test_same_patient_keeps_the_lesion_site() -> None:
    first, second = render_case("BACTERIA", 7, 1), render_case("BACTERIA", 7, 2)
    centre = [np.array(ndimage.center_of_mass(c.lesion)) / c.lesion.shape for c in (first, second)]
    assert np.abs(centre[0] - centre[1]).max() < 0.15
    assert not np.array_equal(first.lesion, second.lesion)  # a new acquisition, not a copy


def test_generation_is_deterministic(dataset: Path, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", n_train_per_class=N_TRAIN, n_test_per_class=N_TEST, seed=0)
    assert _files(again) == _files(dataset)
    other = generate_synthetic(tmp_path / "other", n_train_per_class=N_TRAIN, n_test_per_class=N_TEST, seed=1)
    assert not set(_files(other).values()) & set(_files(dataset).values()), "another seed gives other files"


def test_rerun_is_a_no_op_and_conflicts_raise(tmp_path: Path) -> None:
    dest = generate_synthetic(tmp_path / "syn", n_train_per_class=2, n_test_per_class=1, seed=3)
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    assert generate_synthetic(dest, n_train_per_class=2, n_test_per_class=1, seed=3) == dest
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before
    with pytest.raises(DatasetError, match="already holds a synthetic dataset.*delete"):
        generate_synthetic(dest, n_train_per_class=2, n_test_per_class=1, seed=4)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == before

    foreign = tmp_path / "mine"
    (foreign / "notes.txt").parent.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a complete synthetic dataset"):
        generate_synthetic(foreign, n_train_per_class=1, n_test_per_class=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "syn"]  # no temporary folder left

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (generate_synthetic(empty, n_train_per_class=1, n_test_per_class=1) / COMPLETE_NAME).exists()

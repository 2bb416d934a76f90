"""Registry entries: layout parsing, labels, patient ids, junk handling, clear errors."""

from __future__ import annotations

import pytest
from conftest import write_image, write_tree

from utils.datasets import (
    REGISTRY,
    DatasetError,
    class_names,
    find_dataset_root,
    get_dataset,
    kermany_patient_id,
    registry_table,
    scan_images,
)

KERMANY_FILES = {
    "chest_xray/train/NORMAL/IM-01{i}-0001.jpeg": 3,
    "chest_xray/train/NORMAL/NORMAL2-IM-02{i}-0001.jpeg": 2,
    "chest_xray/train/PNEUMONIA/person1{i}_bacteria_1.jpeg": 3,
    "chest_xray/train/PNEUMONIA/person2{i}_virus_1.jpeg": 2,
    "chest_xray/val/NORMAL/IM-09{i}-0001.jpeg": 1,
    "chest_xray/val/PNEUMONIA/person9{i}_virus_1.jpeg": 1,
    "chest_xray/test/NORMAL/IM-01{i}-0001.jpeg": 2,
    "chest_xray/test/PNEUMONIA/person1{i}_bacteria_5.jpeg": 2,
    # archive junk: the nested duplicate and macOS metadata
    "chest_xray/chest_xray/train/NORMAL/IM-77{i}-0001.jpeg": 2,
    "chest_xray/__MACOSX/train/NORMAL/._IM-0101-0001.jpeg": 1,
}


@pytest.fixture
def kermany(tmp_path):
    root = write_tree(tmp_path / "archive", KERMANY_FILES)
    (root / "chest_xray" / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    return root


def test_kermany_binary_layout(kermany):
    records = scan_images(get_dataset("pneumonia"), kermany)
    assert len(records) == 16  # nested duplicate and __MACOSX ignored
    assert {r.label for r in records} == {"NORMAL", "PNEUMONIA"}
    by_split = {s: sum(r.official_split == s for r in records) for s in ("train", "val", "test")}
    assert by_split == {"train": 10, "val": 2, "test": 4}
    assert all("chest_xray/chest_xray" not in r.path.as_posix() for r in records)


def test_kermany_three_class_labels_from_file_names(kermany):
    records = scan_images(get_dataset("pneumonia3"), kermany)
    labels = {r.path.name: r.label for r in records}
    assert labels["person10_bacteria_1.jpeg"] == "BACTERIA"
    assert labels["person20_virus_1.jpeg"] == "VIRUS"
    assert labels["IM-010-0001.jpeg"] == "NORMAL"
    assert class_names(get_dataset("pneumonia3")) == ["NORMAL", "BACTERIA", "VIRUS"]


@pytest.mark.parametrize(
    ("name", "split", "expected"),
    [
        ("person1_bacteria_1.jpeg", "train", "person1"),
        ("person1_virus_12.jpeg", "val", "person1"),
        ("IM-0115-0001.jpeg", "train", "IM-0115"),
        ("NORMAL2-IM-1234-0001.jpeg", "train", "NORMAL2-IM-1234"),
        ("person1_bacteria_1.jpeg", "test", "test/person1"),
        ("odd_name.png", None, "odd_name"),
    ],
)
def test_kermany_patient_ids(name, split, expected):
    assert kermany_patient_id(name, split) == expected


def test_covid_layout_ignores_masks(tmp_path):
    root = write_tree(
        tmp_path,
        {
            "COVID-19_Radiography_Dataset/COVID/images/COVID-{i}.png": 2,
            "COVID-19_Radiography_Dataset/COVID/masks/COVID-{i}.png": 2,
            "COVID-19_Radiography_Dataset/Normal/images/Normal-{i}.png": 2,
            "COVID-19_Radiography_Dataset/Lung_Opacity/images/Lung_Opacity-{i}.png": 2,
            "COVID-19_Radiography_Dataset/Viral Pneumonia/images/Viral Pneumonia-{i}.png": 2,
        },
    )
    records = scan_images(get_dataset("covid19-radiography"), root)
    assert len(records) == 8
    assert all("masks" not in r.path.parts for r in records)
    assert all(r.official_split is None for r in records)
    assert {r.patient_id for r in records if r.label == "COVID"} == {"COVID-0", "COVID-1"}


def test_cxr6_discovers_class_folders(tmp_path):
    classes = ["Atelectasis", "Cardiomegaly", "Effusion", "Normal", "Pneumonia", "Pneumothorax"]
    root = write_tree(
        tmp_path, {f"data/{split}/{c}/{c}_{{i}}.jpg": 1 for c in classes for split in ("train", "test")}
    )
    records = scan_images(get_dataset("cxr6"), root)
    assert class_names(get_dataset("cxr6"), records) == classes
    assert {r.official_split for r in records} == {"train", "test"}


def test_folder_dataset_without_splits(tmp_path):
    write_tree(tmp_path / "mine", {"healthy/a{i}.png": 2, "sick/b{i}.jpg": 3})
    spec = get_dataset(f"folder:{tmp_path / 'mine'}")
    records = scan_images(spec, spec.local_path)
    assert sorted(r.label for r in records) == ["healthy"] * 2 + ["sick"] * 3


def test_find_root_descends_wrappers(tmp_path):
    write_image(tmp_path / "a" / "b" / "train" / "X" / "1.png")
    assert find_dataset_root(tmp_path) == tmp_path / "a" / "b"


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="choose one of .*pneumonia"):
        get_dataset("pneumonai")
    with pytest.raises(DatasetError, match="not a folder"):
        get_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Expected a layout like"):
        scan_images(get_dataset("pneumonia"), tmp_path / "empty")
    write_tree(tmp_path / "half", {"train/NORMAL/IM-1-{i}.jpeg": 1})
    with pytest.raises(DatasetError, match="no images for class.*PNEUMONIA"):
        scan_images(get_dataset("pneumonia"), tmp_path / "half")


def test_registry_entries_are_documented():
    for spec in REGISTRY.values():
        assert spec.title and spec.license and spec.citation
        assert spec.kaggle or spec.name == "synthetic"


def test_real_kermany_counts(shared_dir, monkeypatch):
    """The real train split parses to the official counts as both registry entries."""
    source = shared_dir / "data" / "chest_xray_224"
    monkeypatch.setenv("CXR_SOURCE", str(source))
    from utils.config import get_settings

    settings = get_settings("smoke")
    for name, expected in [
        ("pneumonia", {"NORMAL": 1341, "PNEUMONIA": 3875}),
        ("pneumonia3", {"NORMAL": 1341, "BACTERIA": 2530, "VIRUS": 1345}),
    ]:
        records = scan_images(get_dataset(name), settings.source)
        train = [r.label for r in records if r.official_split == "train"]
        assert {label: train.count(label) for label in expected} == expected


def test_registry_table_lists_every_entry():
    table = registry_table()
    assert list(table.index) == list(REGISTRY)
    assert table.loc["pneumonia", "source"] == "Kaggle paultimothymooney/chest-xray-pneumonia"
    assert table.loc["cxr6", "classes"] == "the folders found"

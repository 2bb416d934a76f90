"""The dataset registry and the scanner (utils/course/datasets.py): patients and labels read from real Kermany file
names, folder: datasets, wrapper folders descended, and every unusable layout refused with a message saying why."""

from __future__ import annotations

import pytest
from conftest import write_image, write_tree

from utils.course.datasets import (
    REGISTRY,
    DatasetError,
    class_names,
    dataset_dir_name,
    find_dataset_root,
    get_dataset,
    kermany_patient_id,
    kermany_three_class,
    kermany_two_class,
    scan_images,
)

# --- Kermany file names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split", "patient"),
    [
        ("person12_bacteria_3.jpeg", "train", "person12"),
        ("person1_virus_6.jpeg", None, "person1"),
        ("person1000_bacteria_2931.jpeg", "val", "person1000"),
        ("IM-0115-0001.jpeg", "train", "IM-0115"),
        ("NORMAL2-IM-0123-0001.jpeg", "train", "NORMAL2-IM-0123"),
        ("Person7_Bacteria_1.JPEG", "train", "Person7"),
        ("person12_bacteria_3.jpeg", "test", "test/person12"),  # Kermany numbers test patients separately
        ("IM-0001-0001.jpeg", "test", "test/IM-0001"),
        ("scan-01.png", None, "scan-01"),  # not Kermany: the file is its own patient
        ("scan-01.png", "test", "test/scan-01"),
    ],
)
def test_kermany_patient_id(name, split, patient):
    assert kermany_patient_id(name, split) == patient


def test_two_images_of_one_patient_share_the_id_and_train_and_test_patients_differ():
    assert kermany_patient_id("person3_virus_15.jpeg") == kermany_patient_id("person3_virus_16.jpeg")
    assert kermany_patient_id("IM-0117-0001.jpeg") == kermany_patient_id("IM-0117-0002.jpeg")
    assert kermany_patient_id("person3_virus_15.jpeg") != kermany_patient_id("person3_virus_15.jpeg", "test")
    assert kermany_patient_id("person3_virus_15.jpeg") != kermany_patient_id("person31_virus_70.jpeg")


@pytest.mark.parametrize(
    ("folder", "name", "three", "two"),
    [
        ("NORMAL", "IM-0115-0001.jpeg", "NORMAL", "NORMAL"),
        ("normal", "NORMAL2-IM-0123-0001.jpeg", "NORMAL", "NORMAL"),
        ("PNEUMONIA", "person12_bacteria_3.jpeg", "BACTERIA", "PNEUMONIA"),
        ("PNEUMONIA", "person1_virus_6.jpeg", "VIRUS", "PNEUMONIA"),
        ("Pneumonia", "PERSON1_VIRUS_6.JPEG", "VIRUS", "PNEUMONIA"),
        ("PNEUMONIA", "odd_name.jpeg", None, "PNEUMONIA"),  # no kind in the name: left out of three classes
        ("COVID", "x.png", None, None),
    ],
)
def test_kermany_labels(folder, name, three, two):
    assert kermany_three_class(folder, name) == three
    assert kermany_two_class(folder, name) == two


# --- Registry and folder: datasets ------------------------------------------------------------------------------


def test_registry_entries():
    assert get_dataset("pneumonia").classes == ("NORMAL", "PNEUMONIA")
    assert get_dataset("pneumonia").three_class == "pneumonia3"
    assert get_dataset("pneumonia3").classes == ("NORMAL", "BACTERIA", "VIRUS")
    assert get_dataset("pneumonia").url == "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia"
    assert get_dataset("synthetic").url == ""  # generated here: nothing to download
    assert "Kermany" in get_dataset("pneumonia3").citation


def test_unknown_dataset_names_every_choice():
    with pytest.raises(DatasetError) as caught:
        get_dataset("pneumonia2")
    message = str(caught.value)
    assert "'pneumonia2'" in message
    assert ", ".join([*REGISTRY, "folder:PATH"]) in message


def test_folder_dataset(tmp_path):
    (tmp_path / "xr").mkdir()
    spec = get_dataset(f"folder:{tmp_path / 'xr'}")
    assert spec.local_path == tmp_path / "xr"
    assert spec.classes is None and spec.raw_name == "xr"
    assert spec.label_of("Lung_Opacity", "a.png") == "Lung_Opacity"  # the folder name is the label


def test_folder_dataset_relative_and_home(monkeypatch, tmp_path):
    (tmp_path / "xr").mkdir()
    monkeypatch.chdir(tmp_path)
    assert get_dataset("folder:xr").local_path == (tmp_path / "xr").resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_dataset("folder:~/xr").local_path == (tmp_path / "xr").resolve()


def test_folder_dataset_that_is_a_file_or_missing(tmp_path):
    (tmp_path / "images.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        get_dataset(f"folder:{tmp_path / 'images.zip'}")
    with pytest.raises(DatasetError, match="is not there") as caught:
        get_dataset(f"folder:{tmp_path / 'gone'}")
    assert str(tmp_path / "gone") in str(caught.value)


def test_dataset_dir_name_of_registry_entries_is_the_name():
    assert dataset_dir_name(get_dataset("pneumonia3")) == "pneumonia3"
    assert dataset_dir_name(get_dataset("synthetic")) == "synthetic"


def test_dataset_dir_names_of_two_folders_with_one_name_differ(tmp_path):
    (tmp_path / "a" / "xr").mkdir(parents=True)
    (tmp_path / "b" / "xr").mkdir(parents=True)
    first = dataset_dir_name(get_dataset(f"folder:{tmp_path / 'a' / 'xr'}"))
    second = dataset_dir_name(get_dataset(f"folder:{tmp_path / 'b' / 'xr'}"))
    assert first != second
    assert first.startswith("folder-xr-") and second.startswith("folder-xr-")
    assert first == dataset_dir_name(get_dataset(f"folder:{tmp_path / 'a' / 'xr'}"))  # stable


@pytest.mark.parametrize(("first", "second", "readable"), [("Röntgen Bilder", "Röntgen-Bilder", "R_ntgen_Bilder"),
                                                           ("胸部", "肺炎", "folder")])  # fmt: skip
def test_dataset_dir_names_of_non_ascii_folders_are_ascii_and_distinct(tmp_path, first, second, readable):
    names = []
    for name in (first, second):
        (tmp_path / name).mkdir()
        names.append(dataset_dir_name(get_dataset(f"folder:{tmp_path / name}")))
    assert names[0] != names[1]
    assert all(n.isascii() and "/" not in n and " " not in n for n in names)
    assert names[0].startswith(f"folder-{readable}-")


# --- find_dataset_root -------------------------------------------------------------------------------------------


def test_find_dataset_root_descends_wrapper_folders(tmp_path):
    root = write_tree(tmp_path, {"archive/chest_xray/chest_xray/train/NORMAL/IM-0001-{i}.jpeg": 1,
                                 "archive/chest_xray/chest_xray/test/NORMAL/IM-0002-{i}.jpeg": 1})  # fmt: skip
    (root / "archive" / "__MACOSX").mkdir()  # zip leftovers are not a second folder
    (root / "archive" / ".hidden").mkdir()
    assert find_dataset_root(root / "archive") == root / "archive" / "chest_xray" / "chest_xray"


def test_find_dataset_root_stops_at_class_folders(tmp_path):
    write_tree(tmp_path, {"wrap/data/COVID/a{i}.png": 1, "wrap/data/Normal/b{i}.png": 1})
    assert find_dataset_root(tmp_path / "wrap") == tmp_path / "wrap" / "data"


def test_find_dataset_root_of_a_file_or_missing_folder(tmp_path):
    (tmp_path / "chest_xray.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="a file, not a folder: point --source"):
        find_dataset_root(tmp_path / "chest_xray.zip")
    with pytest.raises(DatasetError, match="not there"):
        find_dataset_root(tmp_path / "nothing")


# --- scan_images ---------------------------------------------------------------------------------------------------


@pytest.fixture
def kermany(tmp_path):
    """A tiny Kermany archive, as Kaggle's zip unpacks: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}."""
    return write_tree(tmp_path / "download", {
        "chest_xray/train/NORMAL/IM-0115-000{i}.jpeg": 2,
        "chest_xray/train/NORMAL/NORMAL2-IM-0123-000{i}.jpeg": 1,
        "chest_xray/train/PNEUMONIA/person12_bacteria_{i}.jpeg": 2,
        "chest_xray/train/PNEUMONIA/person13_virus_{i}.jpeg": 1,
        "chest_xray/val/NORMAL/IM-0200-000{i}.jpeg": 1,
        "chest_xray/val/PNEUMONIA/person20_virus_{i}.jpeg": 1,
        "chest_xray/test/NORMAL/IM-0001-000{i}.jpeg": 1,
        "chest_xray/test/PNEUMONIA/person12_bacteria_{i}.jpeg": 1,
    })  # fmt: skip


def _summary(records):
    return sorted((r.path.name, r.label, r.official_split, r.patient_id) for r in records)


def test_scan_kermany_three_classes(kermany):
    records, skipped = scan_images(get_dataset("pneumonia3"), kermany)
    assert skipped == []
    assert _summary(records) == [
        ("IM-0001-0000.jpeg", "NORMAL", "test", "test/IM-0001"),
        ("IM-0115-0000.jpeg", "NORMAL", "train", "IM-0115"),
        ("IM-0115-0001.jpeg", "NORMAL", "train", "IM-0115"),
        ("IM-0200-0000.jpeg", "NORMAL", "val", "IM-0200"),
        ("NORMAL2-IM-0123-0000.jpeg", "NORMAL", "train", "NORMAL2-IM-0123"),
        ("person12_bacteria_0.jpeg", "BACTERIA", "test", "test/person12"),
        ("person12_bacteria_0.jpeg", "BACTERIA", "train", "person12"),
        ("person12_bacteria_1.jpeg", "BACTERIA", "train", "person12"),
        ("person13_virus_0.jpeg", "VIRUS", "train", "person13"),
        ("person20_virus_0.jpeg", "VIRUS", "val", "person20"),
    ]
    assert class_names(get_dataset("pneumonia3"), records) == ["NORMAL", "BACTERIA", "VIRUS"]


def test_scan_kermany_two_classes(kermany):
    records, _ = scan_images(get_dataset("pneumonia"), kermany)
    labels = {r.path.name: r.label for r in records if r.official_split == "train"}
    assert labels == {"IM-0115-0000.jpeg": "NORMAL", "IM-0115-0001.jpeg": "NORMAL",
                      "NORMAL2-IM-0123-0000.jpeg": "NORMAL", "person12_bacteria_0.jpeg": "PNEUMONIA",
                      "person12_bacteria_1.jpeg": "PNEUMONIA", "person13_virus_0.jpeg": "PNEUMONIA"}  # fmt: skip
    assert len(records) == 10


def test_scan_a_registry_dataset_missing_a_class_says_so(kermany):
    for path in (kermany / "chest_xray").rglob("*virus*"):
        path.unlink()
    with pytest.raises(DatasetError, match="pneumonia3: no images of class\\(es\\) VIRUS"):
        scan_images(get_dataset("pneumonia3"), kermany)


def test_scan_folder_without_splits_labels_by_folder(tmp_path):
    root = write_tree(tmp_path / "xr", {"COVID/c{i}.png": 2, "Viral Pneumonia/v{i}.png": 1, "Normal/n{i}.png": 3})
    records, skipped = scan_images(get_dataset(f"folder:{root}"), root)
    assert skipped == []
    assert sorted(r.label for r in records) == ["COVID"] * 2 + ["Normal"] * 3 + ["Viral Pneumonia"]
    assert {r.official_split for r in records} == {None}
    assert class_names(get_dataset(f"folder:{root}"), records) == ["COVID", "Normal", "Viral Pneumonia"]


def test_split_folder_aliases(tmp_path):
    root = write_tree(tmp_path, {"Training/A/a{i}.png": 2, "Training/B/b{i}.png": 2, "Testing/A/t{i}.png": 1,
                                 "Validation/B/v{i}.png": 1})  # fmt: skip
    records, _ = scan_images(get_dataset(f"folder:{root}"), root)
    assert sorted((r.official_split, r.label) for r in records) == [
        ("test", "A"), ("train", "A"), ("train", "A"), ("train", "B"), ("train", "B"), ("val", "B")]


def test_scan_without_a_train_folder(tmp_path):
    root = write_tree(tmp_path, {"test/NORMAL/IM-0001-{i}.jpeg": 1, "val/PNEUMONIA/person1_virus_{i}.jpeg": 1})
    with pytest.raises(DatasetError, match="folders but no train/ folder: add the training images"):
        scan_images(get_dataset("pneumonia"), root)


def test_scan_a_single_class(tmp_path):
    root = write_tree(tmp_path / "xr", {"train/NORMAL/IM-0001-{i}.jpeg": 3})
    with pytest.raises(DatasetError) as caught:
        scan_images(get_dataset(f"folder:{root}"), root)
    message = str(caught.value)
    assert "Found 3 images in 1 class folder(s)" in message and "at least two classes" in message


def test_scan_an_empty_class_folder(tmp_path):
    root = write_tree(tmp_path / "xr", {"train/NORMAL/IM-0001-{i}.jpeg": 2, "train/PNEUMONIA/person1_virus_{i}.jpeg": 2})
    (root / "train" / "EMPTY").mkdir()
    with pytest.raises(DatasetError, match="EMPTY holds no JPEG/PNG/BMP/GIF image: fill it or remove it"):
        scan_images(get_dataset(f"folder:{root}"), root)


@pytest.mark.parametrize(("dataset", "files", "folder"), [
    ("pneumonia", {"train/NORMAL/IM-1-{i}.jpeg": 2, "train/PNEUMONIA/person1_virus_{i}.jpeg": 2, "train/COVID/c{i}.png": 2},
     "COVID"),
    ("pneumonia3", {"train/NORMAL/IM-1-{i}.jpeg": 2, "train/PNEUMONIA/scan{i}.jpeg": 2}, "PNEUMONIA"),
])  # fmt: skip
def test_images_of_no_class_of_the_dataset_say_so(tmp_path, dataset, files, folder):
    """Images are there but none has a label in this dataset (a class it does not have; a pneumonia file whose name
    says neither bacteria nor virus): the message says that, not that the folder is empty."""
    root = write_tree(tmp_path / "xr", files)
    with pytest.raises(DatasetError) as caught:
        scan_images(get_dataset(dataset), root)
    assert str(caught.value).startswith(f"The 2 image(s) in {root / 'train' / folder} belong to no class of {dataset}")
    assert f"--dataset folder:{root}" in str(caught.value)


def test_class_folder_of_tiffs_only_is_empty_for_the_pipeline(tmp_path):
    root = write_tree(tmp_path / "xr", {"A/a{i}.png": 2, "B/b{i}.tif": 2})
    with pytest.raises(DatasetError, match="B holds no JPEG/PNG"):
        scan_images(get_dataset(f"folder:{root}"), root)


def test_unreadable_formats_are_reported_and_upper_case_suffixes_read(tmp_path):
    root = write_tree(tmp_path / "xr", {"train/A/a{i}.JPG": 2, "train/B/b{i}.BMP": 1, "train/B/c{i}.Png": 1,
                                        "train/B/d{i}.gif": 1})  # fmt: skip
    write_image(root / "train/A/scan.tif")
    write_image(root / "train/B/scan.TIFF")
    (root / "train/B/scan.dcm").write_bytes(b"DICM")
    (root / "train/A/notes.txt").write_text("not an image")
    (root / "train/A/.DS_Store").write_bytes(b"\0")
    write_image(root / "train/B/masks/b0.BMP")  # lesion masks are not images of the class
    write_image(root / "train/B/_previews/b0.png")
    records, skipped = scan_images(get_dataset(f"folder:{root}"), root)
    assert sorted(r.path.name for r in records) == ["a0.JPG", "a1.JPG", "b0.BMP", "c0.Png", "d0.gif"]
    assert sorted(p.name for p in skipped) == ["scan.TIFF", "scan.dcm", "scan.tif"]


def test_images_in_sub_folders_of_a_class_count(tmp_path):
    root = write_tree(tmp_path / "xr", {"A/site1/a{i}.png": 2, "A/site2/b{i}.png": 1, "B/c{i}.png": 1})
    records, _ = scan_images(get_dataset(f"folder:{root}"), root)
    assert sorted((r.label, r.path.name) for r in records) == [("A", "a0.png"), ("A", "a1.png"), ("A", "b0.png"),
                                                                ("B", "c0.png")]  # fmt: skip


def test_notebook_02_runs_on_a_folder_dataset_without_a_normal_class_named_normal(tmp_path, monkeypatch):
    """The exploration notebook takes its class names and healthy class from the data, not from Kermany's names:
    it runs on the COVID-19 database's class names (``Normal`` among four), here random images in a folder."""
    import nbformat
    from nbclient import NotebookClient

    from utils.course.cli import main
    from utils.course.config import PROJECT_ROOT

    names = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    images = write_tree(tmp_path / "xr", {f"{name}/{name[0]}{{i}}.png": 12 for name in names})
    for name, value in {"CXR_DATASET": f"folder:{images}", "CXR_DATA_DIR": tmp_path / "data",
                        "CXR_OUTPUT_DIR": tmp_path / "out", "CXR_PROFILE": "smoke"}.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    assert main(["prepare"]) == 0
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "02_eda.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(PROJECT_ROOT / "notebooks")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("normal_share" in o.get("data", {}).get("text/plain", "") for o in outputs)

"""The manifest (issue 11): unreadable files and files under two labels are left out and reported, duplicates
share a group and a split, writes are atomic, a manifest from another seed is kept beside the new one, files
gone since prepare fail in one line, folder: datasets get hashed folder names, unreadable formats are reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import one_line_error, write_image, write_tree

from utils.course.cli import main
from utils.course.config import get_settings
from utils.course.datasets import dataset_dir_name, get_dataset
from utils.course.manifest import (
    ManifestError,
    build_manifest,
    holdout_by_patient,
    load_prepared,
    prepare_dataset,
    report_problems,
    split_by_patient,
)


@pytest.fixture
def archive(tmp_path):
    files = {}
    for p in range(12):
        files[f"chest_xray/train/NORMAL/IM-{p:04d}-{{i}}.jpeg"] = 1 + p % 2
        files[f"chest_xray/train/PNEUMONIA/person{p}_bacteria_{{i}}.jpeg"] = 1 + p % 3
    for p in range(3):
        files[f"chest_xray/test/NORMAL/IM-9{p:03d}-{{i}}.jpeg"] = 1
        files[f"chest_xray/test/PNEUMONIA/person9{p}_virus_{{i}}.jpeg"] = 1
    root = write_tree(tmp_path / "src", files)
    (root / "chest_xray/train/NORMAL/IM-7777-0001.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(root / "chest_xray/train/NORMAL/IM-8888-0001.tif")
    (root / "chest_xray/train/PNEUMONIA/person50_virus_1.dcm").write_bytes(b"DICM")
    return root


def names(frame: pd.DataFrame) -> pd.Series:
    return frame["path"].str.rsplit("/", n=1).str[-1]


def test_unreadable_conflicting_and_skipped_files_are_left_out_and_reported(archive, tmp_path):
    shutil.copy(archive / "chest_xray/train/NORMAL/IM-0001-0.jpeg", archive / "chest_xray/train/PNEUMONIA/person77_bacteria_1.jpeg")
    manifest, report = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=1)
    left_out = {"IM-7777-0001.jpeg", "IM-0001-0.jpeg", "person77_bacteria_1.jpeg"}
    assert not set(names(manifest)) & left_out
    assert [r["path"].endswith("IM-7777-0001.jpeg") for r in report["unreadable"]] == [True]
    assert sorted(r["label"] for r in report["conflicting_labels"]) == ["NORMAL", "PNEUMONIA"]
    assert sorted(p.rsplit(".", 1)[1] for p in report["skipped_formats"]) == ["dcm", "tif"]
    lines = report_problems(report)
    assert len(lines) == 3 and "could not be decoded" in lines[0] and "appear under two labels" in lines[1]
    assert "convert them to PNG" in lines[2]
    assert report["images"] == len(manifest) == 18 + 24 + 6 - 1  # NORMAL, PNEUMONIA, test; the conflict pair out (one of them extra)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporary file


def test_duplicates_share_a_group_and_never_cross_splits(archive, tmp_path):
    src = archive / "chest_xray/train/NORMAL/IM-0002-0.jpeg"
    shutil.copy(src, archive / "chest_xray/train/NORMAL/IM-0500-0001.jpeg")
    shutil.copy(src, archive / "chest_xray/test/NORMAL/IM-0600-0001.jpeg")
    for seed in range(4):
        manifest, report = build_manifest(get_dataset("pneumonia"), archive, tmp_path / f"o{seed}", seed=seed)
        rows = manifest.set_index(names(manifest))
        dupes = rows.loc[["IM-0002-0.jpeg", "IM-0500-0001.jpeg", "IM-0600-0001.jpeg"]]
        assert dupes["group"].nunique() == 1 and dupes["split"].nunique() == 1
        assert report["duplicate_files"] == 2
        assert not (manifest.groupby("group")["split"].nunique() > 1).any()


def test_new_seed_keeps_the_previous_manifest_beside(archive, tmp_path, monkeypatch):
    spec = get_dataset("pneumonia")
    tmp_path = tmp_path / "m"
    build_manifest(spec, archive, tmp_path, seed=1)
    first = (tmp_path / "manifest.csv").read_text()
    build_manifest(spec, archive, tmp_path, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "prepare_report.json"]
    build_manifest(spec, archive, tmp_path, seed=2)
    kept = [p for p in tmp_path.glob("manifest-*.csv")]
    assert len(kept) == 1 and kept[0].read_text() == first
    assert len(list(tmp_path.glob("prepare_report-*.json"))) == 1


def test_interrupted_write_keeps_the_old_manifest(archive, tmp_path, monkeypatch):
    import utils.course.manifest as manifest_module

    build_manifest(get_dataset("pneumonia"), archive, tmp_path, seed=1)
    before = (tmp_path / "manifest.csv").read_text()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(manifest_module.os, "replace", crash)
    with pytest.raises(OSError):
        build_manifest(get_dataset("pneumonia"), archive, tmp_path, seed=1)
    assert (tmp_path / "manifest.csv").read_text() == before


def test_files_gone_since_prepare_fail_in_one_line(archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    settings = get_settings().with_(source=archive)
    prepared = prepare_dataset(settings, "pneumonia")
    gone = prepared.manifest["path"].iloc[3]
    assert load_prepared(settings, "pneumonia").manifest["path"].isin([gone]).sum() <= 1
    (tmp_path / "x").mkdir()
    shutil.move(gone, tmp_path / "x")
    with pytest.raises(ManifestError, match="missing or changed since") as info:
        load_prepared(settings, "pneumonia")
    assert gone in str(info.value) and "--force" in str(info.value)
    capsys.readouterr()
    assert main(["train", "--dataset", "pneumonia", "--model", "cnn"]) == 2  # before any training
    assert "missing or changed since" in one_line_error(capsys)


def test_folder_datasets_with_the_same_name_do_not_collide(tmp_path):
    a = write_tree(tmp_path / "a" / "xrays", {"NORMAL/n{i}.png": 2, "SICK/s{i}.png": 2})
    b = write_tree(tmp_path / "b" / "xrays", {"NORMAL/n{i}.png": 2, "SICK/s{i}.png": 2})
    name_a, name_b = (dataset_dir_name(get_dataset(f"folder:{p}")) for p in (a, b))
    assert name_a != name_b
    assert name_a.startswith("folder-xrays-") and len(name_a) == len("folder-xrays-") + 8
    assert dataset_dir_name(get_dataset(f"folder:{a}")) == name_a  # stable


def _notebook_01_images_folder(settings, dataset: str):
    """Run notebook 01's "Get the images" cell (the one that calls ``download_dataset``); the folder it picks."""
    from types import SimpleNamespace

    import nbformat

    from utils.course.config import PROJECT_ROOT

    cells = nbformat.read(PROJECT_ROOT / "notebooks" / "01_download_data.ipynb", as_version=4).cells
    [source] = [c.source for c in cells if c.cell_type == "code" and "download_dataset(spec" in c.source]
    namespace = {"ctx": SimpleNamespace(dataset=dataset, settings=settings)}
    exec(source, namespace)
    return Path(namespace["folder"])


def test_notebook_01_reads_the_images_prepare_dataset_reads(archive, tmp_path, monkeypatch):
    """Notebook 01 scans the folder that ``prepare`` builds the manifest from: a folder: dataset or CXR_SOURCE, not
    synthetic images drawn in their place."""
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    images = write_tree(tmp_path / "xrays", {"NORMAL/IM-{i:04d}-1.png": 6, "SICK/IM-1{i:03d}-1.png": 6})
    for settings, dataset in ((get_settings(), f"folder:{images}"), (get_settings().with_(source=archive), "pneumonia")):
        folder = _notebook_01_images_folder(settings, dataset)
        assert folder.resolve() == Path(prepare_dataset(settings, dataset).report["source"])
    assert not (tmp_path / "data" / "raw").exists()  # nothing generated or downloaded


def patient_table(patients: dict[str, int], official_test: int = 0, images_each: int = 2) -> pd.DataFrame:
    """``images_each`` images per patient, ``patients[label]`` patients per label; the first ``official_test``
    patients of each label come from the official test split."""
    rows = [{"group": f"{label}-{p}", "label": label, "official_split": "test" if p < official_test else "train"}
            for label, n in patients.items() for p in range(n) for _ in range(images_each)]  # fmt: skip
    return pd.DataFrame(rows)


def patient_shares(table: pd.DataFrame, part: pd.Series, among: pd.Series) -> dict[str, float]:
    """Per label, the share of the patients of ``among`` (a row mask) whose rows are in ``part`` (a row mask)."""
    pool = table[among]
    return {label: pool.loc[part[among] & pool["label"].eq(label), "group"].nunique()
            / pool.loc[pool["label"].eq(label), "group"].nunique() for label in table["label"].unique()}  # fmt: skip


def assert_no_patient_in_two_splits(table: pd.DataFrame, split: pd.Series) -> None:
    assert (split.groupby(table["group"]).nunique() == 1).all()


def test_split_by_patient_keeps_the_official_test_split_and_holds_out_patients_for_validation():
    table = patient_table({"NORMAL": 60, "PNEUMONIA": 120}, official_test=10)
    duplicate = table.iloc[[0]].assign(official_split="train")  # a test patient's image found in train too
    table = pd.concat([table, duplicate], ignore_index=True)
    split = split_by_patient(table, seed=0)
    official = table["official_split"].eq("test")
    assert (split[official] == "test").all() and split.iloc[-1] == "test"  # the duplicate follows its patient
    assert (split[~official].iloc[:-1] != "test").all()
    assert_no_patient_in_two_splits(table, split)
    shares = patient_shares(table, split == "val", split != "test")
    assert all(0.10 <= share <= 0.20 for share in shares.values()), shares  # about 15% of each class's patients
    assert split.equals(split_by_patient(table, seed=0)) and not split.equals(split_by_patient(table, seed=1))


def test_split_by_patient_holds_out_a_test_split_when_there_is_none():
    table = patient_table({"NORMAL": 60, "PNEUMONIA": 120})
    split = split_by_patient(table, seed=3, fraction=0.25)
    assert_no_patient_in_two_splits(table, split)
    test_shares = patient_shares(table, split == "test", split.notna())
    val_shares = patient_shares(table, split == "val", split != "test")
    for shares in (test_shares, val_shares):  # about a quarter of each class's patients, each time
        assert all(0.18 <= share <= 0.32 for share in shares.values()), (test_shares, val_shares)


def test_holdout_by_patient_leaves_a_class_of_one_patient_in_training():
    table = patient_table({"NORMAL": 1, "PNEUMONIA": 30})
    assert not holdout_by_patient(table, 0.15, seed=0).any()

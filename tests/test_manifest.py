"""Manifest building: decode checks, patient-grouped splits, duplicates, round trip, profile caps."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import write_image, write_tree

from utils.config import get_profile
from utils.datasets import get_dataset
from utils.manifest import (
    MANIFEST_COLUMNS,
    ManifestError,
    build_manifest,
    limit_per_class,
    load_manifest,
    patient_overlap,
    split_table,
)


@pytest.fixture
def archive(tmp_path):
    """40 NORMAL patients (1-2 images) and 40 pneumonia patients (1-3 images), plus a small test split."""
    files = {}
    for p in range(40):
        files[f"chest_xray/train/NORMAL/IM-{p:04d}-{{i}}.jpeg"] = 1 + p % 2
        files[f"chest_xray/train/PNEUMONIA/person{p}_bacteria_{{i}}.jpeg"] = 1 + p % 3
    for p in range(6):
        files[f"chest_xray/test/NORMAL/IM-{p:04d}-9{{i}}.jpeg"] = 1
        files[f"chest_xray/test/PNEUMONIA/person{p}_virus_9{{i}}.jpeg"] = 1
    root = write_tree(tmp_path / "src", files)
    # a corrupt image and an RGBA PNG
    (root / "chest_xray/train/NORMAL/IM-9999-0001.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(root / "chest_xray/train/PNEUMONIA/person99_virus_1.png", mode="RGBA")
    return root


def test_manifest_columns_and_unreadable_report(archive, tmp_path):
    result = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=1)
    manifest = result.manifest
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(result.report["unreadable"]) == 1
    assert "IM-9999-0001.jpeg" in result.report["unreadable"][0]["path"]
    assert not manifest["path"].str.contains("IM-9999").any()
    rgba = manifest[manifest["path"].str.endswith("person99_virus_1.png")].iloc[0]
    assert (rgba["width"], rgba["height"], rgba["channels"]) == (40, 32, 4)


def test_no_patient_in_two_splits(archive, tmp_path):
    manifest = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=3).manifest
    assert all(not ids for ids in patient_overlap(manifest).values())
    assert set(manifest["split"]) == {"train", "val", "test"}
    # the official test split stays the test split
    assert manifest.loc[manifest["split"] == "test", "path"].str.contains("/test/").all()
    # about 15% of train+val goes to val, both classes represented
    pool = manifest[manifest["split"] != "test"]
    share = (pool["split"] == "val").mean()
    assert 0.08 < share < 0.25
    assert set(pool.loc[pool["split"] == "val", "label"]) == {"NORMAL", "PNEUMONIA"}


def test_split_is_deterministic_and_seeded(archive, tmp_path):
    spec = get_dataset("pneumonia")
    a = build_manifest(spec, archive, tmp_path / "a", seed=7).manifest
    b = build_manifest(spec, archive, tmp_path / "b", seed=7).manifest
    c = build_manifest(spec, archive, tmp_path / "c", seed=8).manifest
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()


def test_duplicate_files_stay_together_and_are_reported(archive, tmp_path):
    src = archive / "chest_xray/train/NORMAL/IM-0001-0.jpeg"
    shutil.copy(src, archive / "chest_xray/train/NORMAL/IM-0500-0001.jpeg")  # same bytes, other "patient"
    shutil.copy(src, archive / "chest_xray/test/NORMAL/IM-0600-0001.jpeg")  # and one in the test split
    result = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=5)
    manifest = result.manifest.set_index(result.manifest["path"].str.rsplit("/", n=1).str[-1])
    assert manifest.loc["IM-0001-0.jpeg", "split"] == manifest.loc["IM-0500-0001.jpeg", "split"]
    across = result.report["duplicate_files_across_splits"]
    assert len(across) == 1 and len(across[0]) == 3


def test_dataset_without_test_split_gets_grouped_test(tmp_path):
    root = write_tree(tmp_path / "src", {f"{c}/{c}-{p}-{{i}}.png": 2 for c in ("a", "b") for p in range(20)})
    spec = get_dataset(f"folder:{root}")
    manifest = build_manifest(spec, root, tmp_path / "out", seed=0).manifest
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert 0.08 < (manifest["split"] == "test").mean() < 0.25


def test_round_trip_paths_are_relative_on_disk_and_absolute_loaded(archive, tmp_path):
    result = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=1)
    on_disk = pd.read_csv(result.path)
    assert not on_disk["path"].str.startswith("/").any()
    loaded = load_manifest(result.path)
    pd.testing.assert_frame_equal(loaded, result.manifest)
    assert all(p.startswith("/") for p in loaded["path"])
    assert all(pd.io.common.file_exists(p) for p in loaded["path"])


def test_missing_manifest_names_the_notebook(tmp_path):
    with pytest.raises(ManifestError, match="01_download_data.ipynb.*prepare --dataset pneumonia"):
        load_manifest(tmp_path / "pneumonia" / "manifest.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ManifestError, match="missing columns"):
        load_manifest(bad)


def test_limit_per_class_caps_each_class_and_split(archive, tmp_path):
    manifest = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=1).manifest
    smoke = get_profile("smoke")
    limited = limit_per_class(manifest, smoke, seed=0)
    counts = limited.groupby(["split", "label"]).size()
    assert counts.max() <= 16
    assert counts.loc[("test", "NORMAL")] == 6  # fewer than the cap: all kept
    assert limited.equals(limit_per_class(manifest, smoke, seed=0))
    assert list(limited.index) == sorted(limited.index)
    assert limit_per_class(manifest, get_profile("full")).equals(manifest)


def test_split_table_counts(archive, tmp_path):
    manifest = build_manifest(get_dataset("pneumonia"), archive, tmp_path / "out", seed=1).manifest
    table = split_table(manifest)
    assert table.loc["total", "total"] == len(manifest)
    assert table.loc["patients", "test"] == manifest.loc[manifest["split"] == "test", "patient_id"].nunique()

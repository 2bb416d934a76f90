"""From a dataset name to a manifest: resolution, reuse, the profile cap, errors naming notebook 01."""

from __future__ import annotations

import json

import pytest
from conftest import write_tree

from utils.config import get_settings
from utils.datasets import DatasetError
from utils.manifest import ManifestError
from utils.prepare import load_dataset, manifest_path, prepare_dataset, resolve_dataset

FILES = {
    f"chest_xray/{split}/{cls}/{name}": n
    for split, n in (("train", 12), ("test", 3))
    for cls, name in (("NORMAL", "IM-{i:04d}-0001.jpeg"), ("PNEUMONIA", "person{i}_bacteria_1.jpeg"))
}


@pytest.fixture
def settings(tmp_path, monkeypatch):
    for var in ("CXR_DATASET", "CXR_SOURCE", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return get_settings("smoke")


def test_resolution_order(settings, monkeypatch, tmp_path):
    name, reason = resolve_dataset(settings)
    assert name == "synthetic" and "no Kaggle credentials" in reason
    monkeypatch.setenv("CXR_SOURCE", str(tmp_path))
    assert resolve_dataset(get_settings("smoke"))[0] == "pneumonia"
    monkeypatch.delenv("CXR_SOURCE")
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", "secret")
    assert resolve_dataset(get_settings("smoke")) == (
        "pneumonia",
        "Kaggle credentials found: it will be downloaded",
    )
    monkeypatch.setenv("CXR_DATASET", "pneumonia3")
    assert resolve_dataset(get_settings("smoke")) == ("pneumonia3", "set by CXR_DATASET")
    monkeypatch.setenv("CXR_DATASET", "nope")
    with pytest.raises(DatasetError):
        resolve_dataset(get_settings("smoke"))


def test_prepare_from_source_then_reuse(settings, tmp_path):
    source = write_tree(tmp_path / "archive", FILES)
    prepared = prepare_dataset("pneumonia", settings, source=source)
    assert prepared.class_names == ["NORMAL", "PNEUMONIA"]
    assert len(prepared.manifest) == 30
    path = manifest_path(settings, "pneumonia")
    assert path == settings.data_dir / "pneumonia" / "manifest.csv" and path.exists()
    stamp = path.stat().st_mtime_ns
    again = prepare_dataset("pneumonia", settings, source=source)
    assert path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert again.manifest.equals(prepared.manifest)
    prepare_dataset("pneumonia", settings, source=source, force=True)
    assert json.loads((path.parent / "prepare_report.json").read_text())["images"] == 30


def test_load_dataset_caps_to_profile(settings, tmp_path):
    files = {**FILES, "chest_xray/train/NORMAL/IM-{i:04d}-0002.jpeg": 30}
    prepare_dataset("pneumonia", settings, source=write_tree(tmp_path / "archive", files))
    loaded = load_dataset("pneumonia", settings)
    assert loaded.manifest.groupby(["split", "label"]).size().max() <= settings.profile.limit("train")
    assert len(load_dataset("pneumonia", settings, limit=False).manifest) == 60


def test_missing_pieces_say_what_to_do(settings, tmp_path):
    with pytest.raises(ManifestError, match="01_download_data"):
        load_dataset("pneumonia", settings)
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_dataset("pneumonia", settings, source=tmp_path / "nowhere")

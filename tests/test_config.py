"""Profiles and settings from the environment."""

from __future__ import annotations

import pytest

from utils.config import PROFILES, PROJECT_ROOT, ConfigError, get_profile, get_settings


def test_profiles_grow_from_smoke_to_full():
    smoke, laptop, full = PROFILES["smoke"], PROFILES["laptop"], PROFILES["full"]
    assert (smoke.image_size, laptop.image_size, full.image_size) == (64, 128, 224)
    assert smoke.limit("train") == 16 and full.limit("train") is None
    assert smoke.weights == "none" and full.weights == "auto"
    assert smoke.epochs_head == smoke.epochs_finetune == 1


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "Smoke")
    assert get_profile().name == "smoke"
    monkeypatch.setenv("CXR_PROFILE", "huge")
    with pytest.raises(ConfigError, match="smoke, laptop, full"):
        get_profile()


def test_default_profile_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("CXR_PROFILE", raising=False)
    monkeypatch.setattr("utils.config.gpu_available", lambda: False)
    assert get_profile().name == "laptop"
    monkeypatch.setattr("utils.config.gpu_available", lambda: True)
    assert get_profile().name == "full"


def test_settings_defaults_and_overrides(monkeypatch, tmp_path):
    for var in ("CXR_DATASET", "CXR_DATA_DIR", "CXR_OUTPUT_DIR", "CXR_SEED", "CXR_SOURCE", "CXR_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    settings = get_settings("smoke")
    assert settings.data_dir == PROJECT_ROOT / "data"
    assert settings.output_dir == PROJECT_ROOT / "outputs"
    assert (settings.seed, settings.dataset, settings.source, settings.weights) == (42, None, None, "none")

    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", "elsewhere")
    monkeypatch.setenv("CXR_SEED", "7")
    monkeypatch.setenv("CXR_WEIGHTS", "imagenet")
    settings = get_settings("laptop")
    assert settings.data_dir == tmp_path / "d"
    assert settings.output_dir == PROJECT_ROOT / "elsewhere"
    assert settings.seed == 7 and settings.weights == "imagenet"
    assert settings.with_profile("smoke").weights == "imagenet"

    monkeypatch.setenv("CXR_SEED", "abc")
    with pytest.raises(ConfigError, match="CXR_SEED"):
        get_settings("smoke")

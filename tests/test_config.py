"""Settings from ``CXR_*`` variables (utils/course/config.py): the profile chosen and checked, paths resolved against
the project, weights choices checked, and every bad value refused with a message that names what is allowed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from utils.course import config
from utils.course.config import (
    PROFILES,
    PROJECT_ROOT,
    ConfigError,
    check_profile,
    check_weights,
    get_profile,
    get_settings,
)

# --- Profiles ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "name"), [("smoke", "smoke"), ("LAPTOP", "laptop"), ("  full ", "full")])
def test_profile_from_the_environment_ignores_case_and_spaces(monkeypatch, value, name):
    monkeypatch.setenv("CXR_PROFILE", value)
    assert get_profile() is PROFILES[name]
    assert get_settings().profile.name == name


def test_an_explicit_profile_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "full")
    assert get_profile("smoke").name == "smoke"
    assert get_settings("laptop").profile.name == "laptop"


@pytest.mark.parametrize(("gpu", "name"), [(True, "full"), (False, "laptop")])
def test_default_profile_depends_on_the_gpu(monkeypatch, gpu, name):
    monkeypatch.setattr(config, "gpu_available", lambda: gpu)
    assert get_profile().name == name
    monkeypatch.setenv("CXR_PROFILE", "")  # set but empty: the default too
    assert get_profile().name == name


def test_unknown_profile_names_the_choices(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "huge")
    with pytest.raises(ConfigError) as caught:
        get_settings()
    message = str(caught.value)
    assert "'huge'" in message and "CXR_PROFILE" in message
    assert "smoke, laptop, full" in message


def test_the_shipped_profiles_pass_their_own_check():
    for profile in PROFILES.values():
        assert check_profile(profile) is profile
    assert [PROFILES[n].image_size for n in ("smoke", "laptop", "full")] == [64, 128, 224]


def _smoke(**changes) -> config.Profile:
    return dataclasses.replace(PROFILES["smoke"], **changes)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"image_size": 31}, "at least 32 px"),
        ({"image_size": 0}, "got 0"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"head_epochs": 0, "finetune_epochs": 0}, "leave at least one epoch"),
        ({"epochs": 0}, "leave at least one epoch"),
        ({"head_epochs": -1, "finetune_epochs": 3}, "Epochs must be >= 0"),
        ({"finetune_epochs": -2}, "-2"),
        ({"epochs": -5}, "got -5 (from scratch)"),
        ({"learning_rate": 0.0}, "learning rate must lie in (0, 1), got 0.0"),
        ({"learning_rate": -1e-3}, "got -0.001"),
        ({"learning_rate": 1.0}, "got 1.0"),
        ({"learning_rate": 3.0}, "got 3.0"),
    ],
)
def test_check_profile_refuses_numbers_that_make_no_sense(changes, says):
    with pytest.raises(ConfigError) as caught:
        check_profile(_smoke(**changes))
    assert says in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [{"image_size": 32}, {"head_epochs": 0, "finetune_epochs": 1}, {"head_epochs": 1, "finetune_epochs": 0},
     {"epochs": 1}, {"learning_rate": 0.999}, {"batch_size": 1}],
)  # fmt: skip
def test_check_profile_accepts_the_smallest_valid_numbers(changes):
    profile = _smoke(**changes)
    assert check_profile(profile) == profile


# --- Settings ------------------------------------------------------------------------------------------------------


def test_defaults(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    settings = get_settings()
    assert settings.data_dir == PROJECT_ROOT / "data"
    assert settings.output_dir == PROJECT_ROOT / "outputs"
    assert settings.seed == 42
    assert settings.dataset is None and settings.source is None
    assert settings.weights == "cached"  # the smoke profile's own choice: never downloads in CI
    assert get_settings("laptop").weights == "auto"


def test_relative_directories_are_resolved_against_the_project_not_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_DATA_DIR", "my-data")
    monkeypatch.setenv("CXR_OUTPUT_DIR", "results/out")
    settings = get_settings()
    assert settings.data_dir == PROJECT_ROOT / "my-data"
    assert settings.output_dir == PROJECT_ROOT / "results" / "out"
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "abs"))
    assert get_settings().data_dir == tmp_path / "abs"


def test_home_directory_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_OUTPUT_DIR", "~/cxr-out")
    monkeypatch.setenv("CXR_SOURCE", "~/chest_xray")
    settings = get_settings()
    assert settings.output_dir == tmp_path / "cxr-out"
    assert settings.source == (tmp_path / "chest_xray").resolve()


def test_dataset_variable(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_DATASET", "synthetic3")
    assert get_settings().dataset == "synthetic3"
    monkeypatch.setenv("CXR_DATASET", "")
    assert get_settings().dataset is None


@pytest.mark.parametrize(("text", "seed"), [("7", 7), (" 123 ", 123), ("0", 0), ("4294967295", 2**32 - 1)])
def test_seed_from_the_environment(monkeypatch, text, seed):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_SEED", text)
    assert get_settings().seed == seed


@pytest.mark.parametrize("text", ["seven", "1.5", "1e3", "-3", "--3", "+5", "4-2", "²", "4294967296"])
def test_seed_that_is_not_a_whole_number_is_a_config_error(monkeypatch, text):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_SEED", text)
    with pytest.raises(ConfigError) as caught:
        get_settings()
    assert str(caught.value) == f"CXR_SEED must be a whole number from 0 to 4294967295, got {text!r}."


def test_weights_variable_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_WEIGHTS", " None ")
    assert get_settings().weights == "none"
    monkeypatch.setenv("CXR_WEIGHTS", str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="neither one of imagenet, auto, cached, none nor an existing file"):
        get_settings()


# --- check_weights ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [("ImageNet", "imagenet"), (" AUTO ", "auto"), ("cached", "cached"),
                                                 ("NONE", "none")])  # fmt: skip
def test_check_weights_lower_cases_a_choice(given, expected):
    assert check_weights(given) == expected


def test_check_weights_resolves_an_existing_file(monkeypatch, tmp_path):
    weights = tmp_path / "sub" / "my weights.h5"
    weights.parent.mkdir()
    weights.write_bytes(b"h5")
    monkeypatch.chdir(tmp_path)
    assert check_weights("sub/my weights.h5") == str(weights.resolve())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert check_weights("~/sub/my weights.h5") == str(weights.resolve())
    assert Path(check_weights(f"  {weights}  ")).is_absolute()


@pytest.mark.parametrize("given", ["imagenett", "no-such-file.h5", "."])
def test_check_weights_refuses_anything_else_and_says_what_to_do(given):
    with pytest.raises(ConfigError) as caught:
        check_weights(given)
    message = str(caught.value)
    assert repr(given) in message
    assert "imagenet, auto, cached, none" in message and "CXR_WEIGHTS" in message


# --- Settings.with_ -----------------------------------------------------------------------------------------------


def test_with_routes_profile_numbers_into_the_profile(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "laptop")
    settings = get_settings()
    changed = settings.with_(image_size=64, epochs=1, head_epochs=0, finetune_epochs=1, batch_size=4,
                             learning_rate=0.01, dataset="synthetic", seed=5)  # fmt: skip
    p = changed.profile
    assert (p.image_size, p.epochs, p.head_epochs, p.finetune_epochs, p.batch_size, p.learning_rate) == (64, 1, 0, 1, 4, 0.01)
    assert p.name == "laptop" and p.images == PROFILES["laptop"].images  # what was not given stays
    assert (changed.dataset, changed.seed) == ("synthetic", 5)
    assert settings.profile is PROFILES["laptop"] and settings.dataset is None  # the original is untouched
    assert PROFILES["laptop"].image_size == 128


def test_with_weights_changes_the_settings_not_the_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("CXR_PROFILE", "laptop")
    changed = get_settings().with_(weights="IMAGENET")
    assert changed.weights == "imagenet"
    assert changed.profile.weights == "auto"
    with pytest.raises(ConfigError, match="neither one of"):
        get_settings().with_(weights=str(tmp_path / "nope.h5"))


@pytest.mark.parametrize(("changes", "says"), [({"image_size": 16}, "at least 32 px"),
                                               ({"epochs": 0}, "at least one epoch"),
                                               ({"learning_rate": 2}, "learning rate")])  # fmt: skip
def test_with_checks_the_new_profile(monkeypatch, changes, says):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    with pytest.raises(ConfigError, match=says):
        get_settings().with_(**changes)


def test_with_an_unknown_setting_fails_loudly(monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    with pytest.raises(TypeError):
        get_settings().with_(imagesize=64)  # a typo must not pass silently


# --- Settings.for_model: a profile's recipe for one model --------------------------------------------------------

COURSE_MODELS = ("cnn", "vgg16", "resnet50", "mobilenet", "mobilenet_025", "densenet121")


def test_laptop_trains_mobilenet_025_with_the_course_recipe(monkeypatch):
    """The README's best CPU recipe is the laptop profile's default for MobileNet 0.25: 224 px, every image,
    5 + 10 epochs, patience 6; the rest of the profile (batch, learning rate) and the other models stay as they are."""
    monkeypatch.setenv("CXR_PROFILE", "laptop")
    settings = get_settings()
    recipe = settings.for_model("mobilenet_025").profile
    assert (recipe.name, recipe.image_size, recipe.head_epochs, recipe.finetune_epochs, recipe.patience) == (
        "laptop", 224, 5, 10, 6)  # fmt: skip
    assert recipe.images == {"train": None, "val": None, "test": None}
    assert (recipe.batch_size, recipe.learning_rate) == (settings.profile.batch_size, settings.profile.learning_rate)
    for model in set(COURSE_MODELS) - {"mobilenet_025", "cnn"}:
        assert settings.for_model(model) == settings
    assert settings.profile.image_size == 128 and PROFILES["laptop"].images["train"] == 1000  # nothing changed in place


def test_laptop_trains_and_validates_the_cnn_on_every_image_and_nothing_else_changes(monkeypatch):
    """The custom CNN's laptop recipe: every image of every split (the whole validation split, so that every seed
    is validated on the same images), everything else the profile's (128 px, 15 epochs, patience 4)."""
    monkeypatch.setenv("CXR_PROFILE", "laptop")
    settings = get_settings()
    cnn = settings.for_model("cnn")
    assert cnn.profile.images == {"train": None, "val": None, "test": None}
    assert cnn.with_(images=settings.profile.images) == settings  # the only difference
    assert settings.profile.images["train"] == 1000 and PROFILES["laptop"].images["train"] == 1000


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_smoke_and_full_have_no_model_recipe(name):
    settings = get_settings(name)
    assert all(settings.for_model(model) == settings for model in COURSE_MODELS)

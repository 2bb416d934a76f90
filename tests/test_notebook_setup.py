"""The standard setup cell's logic (utils.notebook): Colab simulated with a fake ``google.colab`` and a fake pip."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from utils import notebook
from utils.config import PROJECT_ROOT
from utils.notebook import (
    COLAB_PACKAGES,
    CPU_FULL_WARNING,
    NotebookSetupError,
    export_kaggle_secrets,
    missing_packages,
    setup_notebook,
    upload_kaggle_json,
)

SECRET_KEY = "0123456789abcdef-secret"


class Recorder:
    """Stands in for the command runner (pip): records every command, and any constraints file it names,
    instead of running it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.constraints: list[str] = []

    def __call__(self, command):
        command = list(command)
        self.calls.append(command)
        if "-c" in command:
            self.constraints.append(Path(command[command.index("-c") + 1]).read_text())


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean course environment: smoke profile, data/outputs/Kaggle config in tmp_path, no credentials."""
    for name in ("CXR_DATASET", "CXR_SOURCE", "CXR_WEIGHTS", "CXR_SEED", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CXR_PROFILE", "smoke")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(notebook, "_colab_done", False)
    return tmp_path


@pytest.fixture
def synthetic(monkeypatch):
    """Stands in for utils.prepare.resolve_dataset: nothing downloaded, so the synthetic set."""
    monkeypatch.setattr(notebook, "_resolve_dataset", lambda s: ("synthetic", "no dataset downloaded (test)"))


def fake_userdata(secrets: dict[str, str] | None = None, error: Exception | None = None) -> types.ModuleType:
    """A stand-in for ``google.colab.userdata``: ``get`` returns the secret or raises like Colab does."""
    module = types.ModuleType("google.colab.userdata")

    def get(name):
        if error is not None:
            raise error
        if secrets is None or name not in secrets:
            raise KeyError(f"Secret {name} does not exist.")
        return secrets[name]

    module.get = get
    return module


@pytest.fixture
def colab(monkeypatch):
    """Pretend to be on Colab: a fake ``google.colab`` with secrets and an upload button that records its use."""
    userdata = fake_userdata({"KAGGLE_USERNAME": "student", "KAGGLE_KEY": SECRET_KEY})
    files = types.ModuleType("google.colab.files")
    files.uploads = 0

    def upload():
        files.uploads += 1
        return {}

    files.upload = upload
    package = types.ModuleType("google.colab")
    package.userdata, package.files = userdata, files
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    monkeypatch.setitem(sys.modules, "google.colab.files", files)
    return package


def test_colab_packages_are_real_distribution_names():
    """Every name the setup cell may install is a distribution this course's environment has, so none is a typo
    and nothing would be installed here."""
    assert missing_packages() == []
    assert not {"tensorflow", "keras"} & {name.lower() for name in COLAB_PACKAGES}


def test_missing_packages_never_lists_tensorflow_or_keras():
    installed = {"pandas", "scipy"}
    required = ("kaggle", "tensorflow", "Keras", "pandas", "seaborn", "tf-keras", "scipy")
    assert missing_packages(required, lambda name: name in installed) == ["kaggle", "seaborn"]


def test_in_colab_detects_the_colab_module(colab):
    assert notebook.in_colab()


def test_not_in_colab_here():
    assert "google.colab" not in sys.modules
    assert not notebook.in_colab()


def test_colab_setup_installs_only_missing_packages_and_exports_secrets(
    env, synthetic, colab, monkeypatch, capsys
):
    monkeypatch.setattr(notebook, "_installed", lambda name: name not in {"kaggle", "seaborn"})
    pip = Recorder()
    ctx = setup_notebook(runner=pip)  # Colab detected from the fake module
    assert ctx.in_colab
    assert len(pip.calls) == 1
    command = pip.calls[0]
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"] and command[-2:] == [
        "kaggle",
        "seaborn",
    ]
    assert not any(p in command for p in ("tensorflow", "keras", "-U", "--upgrade"))
    # the installed TensorFlow and Keras are pinned, so no dependency of kaggle or seaborn can replace them
    pins = pip.constraints[0].split()
    assert (
        f"tensorflow=={metadata.version('tensorflow')}" in pins
        and f"keras=={metadata.version('keras')}" in pins
    )
    assert os.environ["KAGGLE_USERNAME"] == "student"
    assert os.environ["KAGGLE_KEY"] == SECRET_KEY
    assert colab.files.uploads == 0  # setup never waits for an upload
    out = capsys.readouterr().out
    assert SECRET_KEY not in out and SECRET_KEY not in ctx.banner
    assert "(Colab)" in ctx.banner


def test_colab_setup_twice_is_harmless(env, synthetic, colab, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "_installed", lambda name: name != "kaggle")
    pip = Recorder()
    first = setup_notebook(runner=pip)
    second = setup_notebook(runner=pip)
    assert len(pip.calls) == 1  # the second run installs nothing
    assert (first.dataset, first.profile, first.gpus) == (second.dataset, second.profile, second.gpus)
    assert os.environ["KAGGLE_KEY"] == SECRET_KEY
    assert SECRET_KEY not in capsys.readouterr().out


def test_secret_errors_fall_back_without_credentials(env, monkeypatch):
    class SecretNotFoundError(Exception):
        pass

    assert export_kaggle_secrets(fake_userdata(error=SecretNotFoundError("KAGGLE_KEY"))) is None
    assert export_kaggle_secrets(fake_userdata({"KAGGLE_USERNAME": "student"})) is None
    assert "KAGGLE_USERNAME" not in os.environ and "KAGGLE_KEY" not in os.environ


def test_existing_credentials_are_kept(env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "mine")
    monkeypatch.setenv("KAGGLE_KEY", "my-key")
    secrets = fake_userdata({"KAGGLE_USERNAME": "other", "KAGGLE_KEY": "other-key"})
    assert export_kaggle_secrets(secrets) == "environment"
    assert os.environ["KAGGLE_KEY"] == "my-key"


def test_pip_failure_says_what_to_do(env, synthetic, colab, monkeypatch):
    monkeypatch.setattr(notebook, "_installed", lambda name: name != "kaggle")

    def failing(command):
        raise subprocess.CalledProcessError(1, command)

    with pytest.raises(NotebookSetupError, match="could not install kaggle.*internet"):
        setup_notebook(runner=failing)


def _uploader(content: bytes):
    files = types.SimpleNamespace(uploads=0)

    def upload():
        files.uploads += 1
        return {"kaggle.json": content}

    files.upload = upload
    return files


def test_upload_kaggle_json_saves_a_private_file_and_exports_it(env, capsys):
    files = _uploader(json.dumps({"username": "student", "key": SECRET_KEY}).encode())
    path = upload_kaggle_json(files)
    assert path == env / "kaggle" / "kaggle.json"
    assert json.loads(path.read_text())["key"] == SECRET_KEY
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.environ["KAGGLE_USERNAME"] == "student"
    assert SECRET_KEY not in capsys.readouterr().out
    other = _uploader(b'{"username": "x", "key": "y"}')
    assert upload_kaggle_json(other) == path  # an existing kaggle.json is used, never overwritten
    assert other.uploads == 0 and json.loads(path.read_text())["key"] == SECRET_KEY


def test_upload_rejects_a_file_that_is_not_a_token(env):
    with pytest.raises(NotebookSetupError, match="not a Kaggle API token"):
        upload_kaggle_json(_uploader(b"<html>not json</html>"))
    assert not (env / "kaggle" / "kaggle.json").exists()


def test_upload_outside_colab_explains_instead_of_waiting(env):
    with pytest.raises(NotebookSetupError, match="kaggle.json.*KAGGLE_USERNAME"):
        upload_kaggle_json()


def test_local_setup_installs_nothing_and_reports_the_run(env, synthetic, capsys):
    pip = Recorder()
    ctx = setup_notebook(colab=False, runner=pip)
    assert pip.calls == []
    assert not ctx.in_colab
    assert ctx.profile.name == "smoke" and ctx.dataset == "synthetic" and ctx.settings.dataset == "synthetic"
    assert ctx.root == PROJECT_ROOT and ctx.output_dir == env / "outputs"
    out = capsys.readouterr().out
    assert out.strip() == ctx.banner.strip()
    assert "smoke (CI check" in out and "synthetic (no dataset downloaded (test))" in out
    assert "NOT real chest X-rays" in out and "CXR_SOURCE" in out and "KAGGLE_USERNAME" in out
    assert "random initialisation" in out  # smoke uses no ImageNet weights, and says so
    assert ("CPU only" in out) == (not ctx.gpus)


def test_real_dataset_has_no_synthetic_warning(env, monkeypatch):
    monkeypatch.setattr(notebook, "_resolve_dataset", lambda s: ("pneumonia", "downloaded earlier"))
    ctx = setup_notebook(colab=False, quiet=True)
    assert ctx.dataset == "pneumonia" and not ctx.synthetic
    assert "pneumonia (downloaded earlier)" in ctx.banner
    assert "SYNTHETIC" not in ctx.banner


def test_full_profile_without_gpu_warns(env, synthetic, monkeypatch):
    monkeypatch.setenv("CXR_PROFILE", "full")
    ctx = setup_notebook(colab=False, quiet=True)
    assert ctx.profile.name == "full"
    assert (CPU_FULL_WARNING in ctx.banner) == (not ctx.gpus)
    cpu = notebook.format_banner(dataclasses.replace(ctx, gpus=[]), "TF x")
    gpu = notebook.format_banner(dataclasses.replace(ctx, gpus=["NVIDIA H100"]), "TF x")
    assert "set CXR_PROFILE=laptop" in cpu and "CPU only" in cpu
    assert CPU_FULL_WARNING not in gpu and "GPU NVIDIA H100" in gpu


def test_setup_seeds_every_run_the_same_way(env, synthetic, monkeypatch):
    def draws():  # the global generators that keras.utils.set_random_seed seeds
        return random.random(), np.random.random()  # noqa: NPY002

    setup_notebook(colab=False, quiet=True)
    first = draws()
    setup_notebook(colab=False, quiet=True)
    assert draws() == first
    monkeypatch.setenv("CXR_SEED", "7")
    setup_notebook(colab=False, quiet=True)
    assert draws() != first


def test_setup_sets_display_defaults(env, synthetic):
    import matplotlib as mpl
    import pandas as pd

    setup_notebook(colab=False, quiet=True)
    assert mpl.rcParams["image.cmap"] == "gray"
    assert pd.get_option("display.precision") == 3


def test_setup_with_the_real_dataset_resolver(env, monkeypatch):
    """No data, no source, no credentials: the course falls back to the synthetic set and says so loudly."""
    ctx = setup_notebook(colab=False, quiet=True)
    assert ctx.dataset == "synthetic"
    assert "NOT real chest X-rays" in ctx.banner
    assert Path(ctx.settings.data_dir) == env / "data"


def test_cancelled_upload_goes_on_without_credentials(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle"))
    files = types.SimpleNamespace(upload=lambda: {})
    assert upload_kaggle_json(files) is None
    assert "synthetic dataset" in capsys.readouterr().out
    assert not (tmp_path / "kaggle" / "kaggle.json").exists()

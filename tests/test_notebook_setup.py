"""What the first code cell of every notebook does (utils/course/notebook.py, utils/course/runtime.py), without
running a notebook: where the cell finds the course, which dataset setup picks and what it prints, Colab's package
install and Kaggle secrets (faked), and the library noise it silences."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pandas as pd
import pytest

from utils.course import notebook
from utils.course.config import PROJECT_ROOT
from utils.course.links import CLONE_DIR, repo_url, setup_cell_source
from utils.course.notebook import (
    PROTECTED,
    NotebookSetupError,
    export_kaggle_secrets,
    install_missing,
    missing_packages,
    setup_notebook,
    synthetic_notice,
    upload_kaggle_json,
)
from utils.course.runtime import quiet_libraries


@pytest.fixture
def kaggle_env(monkeypatch):
    """KAGGLE_USERNAME and KAGGLE_KEY unset now and again after the test, even when the code under test sets them."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


# --- The setup cell's own lines --------------------------------------------------------------------------------------


def _find_root(cwd: Path, monkeypatch) -> tuple[str, list]:
    """Run the setup cell up to (not including) the import of the course, in ``cwd``; (ROOT, clone commands)."""
    clones = []

    def fake_clone(command, check=False, **_):
        clones.append(command)
        (Path(command[-1]) / "utils").mkdir(parents=True)
        (Path(command[-1]) / "utils" / "__init__.py").write_text("")
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_clone)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(cwd)
    namespace: dict = {}
    exec("\n".join(setup_cell_source().splitlines()[:-2]), namespace)
    assert sys.path[0] == os.path.abspath(namespace["ROOT"])
    return namespace["ROOT"], clones


def test_setup_cell_finds_the_course_from_the_notebooks_folder(monkeypatch):
    root, clones = _find_root(PROJECT_ROOT / "notebooks", monkeypatch)
    assert root == ".." and clones == []


def test_setup_cell_finds_the_course_from_its_root(monkeypatch):
    root, clones = _find_root(PROJECT_ROOT, monkeypatch)
    assert root == "." and clones == []


def test_setup_cell_clones_the_course_once_elsewhere(monkeypatch, tmp_path):
    root, clones = _find_root(tmp_path, monkeypatch)
    assert root == CLONE_DIR
    assert clones == [["git", "clone", "-q", "--depth", "1", repo_url(), CLONE_DIR]]
    root, clones = _find_root(tmp_path, monkeypatch)  # the cell run again: the clone is there
    assert root == CLONE_DIR and clones == []


# --- setup_notebook -------------------------------------------------------------------------------------------------


@pytest.fixture
def notebook_env(monkeypatch, tmp_path, kaggle_env):
    """A laptop run with data and outputs in tmp_path, no Kaggle credentials, and the display settings that setup
    changes restored afterwards."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_PROFILE", "laptop")
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CXR_OUTPUT_DIR", str(tmp_path / "out"))
    with pd.option_context("display.precision", 6, "display.width", 80), matplotlib.rc_context():
        yield tmp_path


def test_setup_without_kermany_picks_synthetic_and_says_so(notebook_env, capsys):
    ctx = setup_notebook(colab=False)
    assert ctx.dataset == "synthetic" and ctx.synthetic and not ctx.in_colab
    assert ctx.output_dir == notebook_env / "out" and ctx.profile.name == "laptop"
    assert ctx.dataset_reason == "no Kermany download, no CXR_SOURCE and no Kaggle credentials"
    out = capsys.readouterr().out
    assert out.startswith("profile  laptop: CPU: 128 px")
    assert "dataset  synthetic (no Kermany download" in out and "devices CPU only" in out
    assert f"versions tensorflow {metadata.version('tensorflow')}, keras {metadata.version('keras')}" in out
    assert "SYNTHETIC DATA: generated images, NOT real chest X-rays" in out
    assert pd.get_option("display.precision") == 3 and matplotlib.rcParams["image.cmap"] == "gray"
    assert setup_notebook(colab=False, quiet=True) == ctx  # running the cell twice does no harm
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("variables", "dataset", "reason"),
    [
        ({"CXR_DATASET": "synthetic3"}, "synthetic3", "set by CXR_DATASET"),
        ({"KAGGLE_USERNAME": "ada", "KAGGLE_KEY": "k" * 32}, "pneumonia", "Kaggle credentials found: it will be downloaded"),
    ],
)
def test_setup_picks_the_dataset_asked_for_or_kermany(notebook_env, monkeypatch, capsys, variables, dataset, reason):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    ctx = setup_notebook(colab=False)
    assert (ctx.dataset, ctx.dataset_reason) == (dataset, reason)
    out = capsys.readouterr().out
    assert ("SYNTHETIC DATA" in out) == dataset.startswith("synthetic")
    assert "k" * 32 not in out


def test_setup_with_a_source_folder_and_a_typo(notebook_env, monkeypatch):
    (notebook_env / "chest_xray").mkdir()
    monkeypatch.setenv("CXR_SOURCE", str(notebook_env / "chest_xray"))
    ctx = setup_notebook(colab=False, quiet=True)
    assert ctx.dataset == "pneumonia" and ctx.dataset_reason == f"CXR_SOURCE={notebook_env / 'chest_xray'}"
    monkeypatch.setenv("CXR_DATASET", "pneumonai")
    with pytest.raises(ValueError, match="Unknown dataset 'pneumonai'"):
        setup_notebook(colab=False, quiet=True)


def test_full_profile_on_a_cpu_warns(notebook_env, monkeypatch, capsys):
    monkeypatch.setenv("CXR_PROFILE", "full")
    monkeypatch.setattr(notebook, "configure", lambda seed, eager=False: [])  # no GPU, whatever this machine has
    setup_notebook(colab=False)
    assert "WARNING: the full profile on a CPU takes many hours: set CXR_PROFILE=laptop" in capsys.readouterr().out


def test_setup_on_colab_installs_and_reads_secrets_first(notebook_env, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(notebook, "install_missing", lambda: calls.append("install"))
    monkeypatch.setattr(notebook, "export_kaggle_secrets", lambda: calls.append("secrets") or True)
    ctx = setup_notebook(colab=True)
    assert calls == ["install", "secrets"] and ctx.in_colab
    assert "(Colab)" in capsys.readouterr().out


def test_synthetic_notice_is_a_box_holding_the_reason():
    reason = "no Kermany download, no CXR_SOURCE and no Kaggle credentials"
    lines = synthetic_notice(reason).splitlines()
    assert {len(line) for line in lines} == {92}  # every line of the box as wide as its border
    assert lines[0] == lines[-1] == "!" * 92
    assert all(line.startswith("!! ") and line.endswith(" !!") for line in lines[1:-1])
    body = " ".join(line[3:-3].strip() for line in lines[1:-1])
    assert f"Why: {reason}." in body and "CXR_SOURCE=/path/to/chest_xray" in body


# --- Colab helpers (faked) ------------------------------------------------------------------------------------------


def test_missing_packages_never_lists_tensorflow_or_keras():
    assert missing_packages(("numpy", "surely-not-installed-cxr-package", "tensorflow", "keras", "tf-keras")) == [
        "surely-not-installed-cxr-package"
    ]


def test_install_missing_pins_the_installed_tensorflow_and_keras(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(notebook, "missing_packages", lambda required: asked.append(required) or ["seaborn"])
    commands = []

    def fake_pip(command):
        commands.append(command)
        constraints = Path(command[command.index("-c") + 1]).read_text().split()
        commands.append(constraints)
        return SimpleNamespace(returncode=0)

    assert install_missing(run=fake_pip) == ["seaborn"]
    assert install_missing(("gradio",), run=fake_pip) == ["seaborn"]  # notebook 11's packages, the same pins
    assert asked == [notebook.COLAB_PACKAGES, ("gradio",)]
    command, constraints = commands[:2]
    assert commands[2][-1] == "seaborn" and commands[3] == constraints
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"] and command[-1] == "seaborn"

    installed = {}
    for name in PROTECTED:
        with contextlib.suppress(metadata.PackageNotFoundError):  # tf-keras, here: not pinned, and no crash
            installed[name] = metadata.version(name)
    assert sorted(constraints) == sorted(f"{name}=={version}" for name, version in installed.items())
    assert f"tensorflow=={metadata.version('tensorflow')}" in constraints
    assert f"keras=={metadata.version('keras')}" in constraints
    assert "Installing seaborn" in capsys.readouterr().out


def test_install_missing_failure_and_nothing_to_do(monkeypatch):
    monkeypatch.setattr(notebook, "missing_packages", lambda required: ["kaggle", "scipy"])
    with pytest.raises(NotebookSetupError, match="pip could not install kaggle, scipy: check the internet connection"):
        install_missing(run=lambda command: SimpleNamespace(returncode=1))
    monkeypatch.setattr(notebook, "missing_packages", lambda required: [])

    def never(command):
        raise AssertionError("pip ran with nothing to install")

    assert install_missing(run=never) == []


class Secrets:
    def __init__(self, **values):
        self.values = values

    def get(self, name):
        if name not in self.values:
            raise KeyError(f"secret {name} not shared with this notebook")  # what Colab raises
        return self.values[name]


def test_kaggle_secrets_are_exported(kaggle_env):
    assert export_kaggle_secrets(Secrets(KAGGLE_USERNAME="ada", KAGGLE_KEY=" abc123 \n"))
    assert os.environ["KAGGLE_USERNAME"] == "ada" and os.environ["KAGGLE_KEY"] == "abc123"


@pytest.mark.parametrize("secrets", [Secrets(KAGGLE_USERNAME="ada"), Secrets(KAGGLE_USERNAME="ada", KAGGLE_KEY=""), None])
def test_missing_or_unshared_secrets(kaggle_env, secrets):
    assert export_kaggle_secrets(secrets) is False  # None: no google.colab here
    assert "KAGGLE_KEY" not in os.environ and "KAGGLE_USERNAME" not in os.environ


def test_variables_already_set_win_over_secrets(kaggle_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", "env-key")
    assert export_kaggle_secrets(Secrets(KAGGLE_USERNAME="other", KAGGLE_KEY="other"))
    assert os.environ["KAGGLE_USERNAME"] == "env-user"


class Uploads:
    def __init__(self, files: dict):
        self.files, self.calls = files, 0

    def upload(self):
        self.calls += 1
        return self.files


def test_upload_kaggle_json_saves_it_privately(kaggle_env, tmp_path, capsys):
    target = tmp_path / ".kaggle" / "kaggle.json"
    content = json.dumps({"username": "ada", "key": "abc123"}).encode()
    assert upload_kaggle_json(Uploads({"kaggle.json": content}), target) == target
    assert target.read_bytes() == content and (target.stat().st_mode & 0o777) == 0o600
    assert os.environ["KAGGLE_USERNAME"] == "ada" and os.environ["KAGGLE_KEY"] == "abc123"
    assert "abc123" not in capsys.readouterr().out
    again = Uploads({"kaggle.json": b"{}"})
    assert upload_kaggle_json(again, target) == target and again.calls == 0  # an existing file is kept


def test_upload_cancelled_or_not_a_token(kaggle_env, tmp_path, capsys):
    target = tmp_path / ".kaggle" / "kaggle.json"
    assert upload_kaggle_json(Uploads({}), target) is None
    assert "goes on with the synthetic images" in capsys.readouterr().out
    with pytest.raises(NotebookSetupError) as caught:
        upload_kaggle_json(Uploads({"token.json": b'{"user": "ada", "secret": "abc123"}'}), target)
    assert "token.json is not a Kaggle API token" in str(caught.value) and "abc123" not in str(caught.value)
    assert not target.exists()


# --- Quiet libraries --------------------------------------------------------------------------------------------------


def test_quiet_libraries_silences_only_the_harmless_warnings(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # another test may have set it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tf = quiet_libraries()
        assert tf.__name__ == "tensorflow" and tf.get_logger().level >= 40
        warnings.warn("`shuffle=True` was passed, but will be ignored since the data `x` was provided as a dataset.", UserWarning, stacklevel=1)
        warnings.warn("Skipping variable loading for optimizer 'adam', because it has 9 variables", UserWarning, stacklevel=1)
        warnings.warn("The model's input is not what you think", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["The model's input is not what you think"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"

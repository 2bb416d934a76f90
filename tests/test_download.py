"""Kaggle credentials and the download, with a fake kaggle package (no network). The key never appears in any
message: every error path is checked with a key that the failure itself quotes."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
from conftest import write_tree

from utils.course import download
from utils.course.cli import main
from utils.course.datasets import get_dataset
from utils.course.download import (
    DownloadError,
    KaggleCredentials,
    download_dataset,
    explain_failure,
    find_kaggle_credentials,
)

SECRET = "0123456789abcdef0123456789abcdef"
SPEC = dataclasses.replace(get_dataset("pneumonia"), min_images={"NORMAL": 3, "PNEUMONIA": 3})
CREDS = KaggleCredentials("user", SECRET, "file /home/x/.kaggle/kaggle.json")


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.setitem(sys.modules, "google.colab", None)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return home


def write_json(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    return path


class HttpError(Exception):
    def __init__(self, status: int):
        super().__init__(f"{status} Client Error for url: https://api.kaggle.com/v1/datasets?key={SECRET}")
        self.response = types.SimpleNamespace(status_code=status)


def fake_kaggle(monkeypatch, error: BaseException | None = None, auth_error: BaseException | None = None,
                files: dict[str, int] | None = None) -> list[str]:
    """A kaggle package whose download raises ``error`` or writes ``files`` (a write_tree pattern); returns the
    list of datasets it was asked for."""
    asked: list[str] = []

    class KaggleApi:
        def authenticate(self):
            print(f"kaggle chatter with {SECRET}")
            if auth_error is not None:
                raise auth_error

        def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False):
            asked.append(dataset)
            if error is not None:
                raise error
            write_tree(Path(path), files or {})
            (Path(path) / "__MACOSX").mkdir()  # the junk a zip made on a Mac carries
            (Path(path) / "chest_xray" / ".DS_Store").write_text("junk")

    for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
        module = types.ModuleType(name)
        module.KaggleApi = KaggleApi
        monkeypatch.setitem(sys.modules, name, module)
    return asked


def test_credentials_from_environment_hide_the_key(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key) == ("env-user", SECRET)
    assert creds.environment() == {"KAGGLE_USERNAME": "env-user", "KAGGLE_KEY": SECRET}
    assert "env-user" in str(creds) and SECRET not in str(creds) and SECRET not in repr(creds)


def test_credentials_from_kaggle_json(home):
    write_json(home / ".kaggle" / "kaggle.json", json.dumps({"username": "u", "key": SECRET}))
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key) == ("u", SECRET) and "kaggle.json" in creds.source
    assert find_kaggle_credentials.__module__ == download.__name__


def test_new_style_token(monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_" + SECRET)
    creds = find_kaggle_credentials()
    assert creds.username is None and creds.environment() == {"KAGGLE_API_TOKEN": "KGAT_" + SECRET}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"username": "u", "key": "' + SECRET + '"', "not valid JSON"),  # truncated
        ('{"username": "u", "key": "' + SECRET + '",}', "not valid JSON"),
        ('{"username": "", "key": "' + SECRET + '"}', "has no username"),
        ('{"user": "u", "secret": "' + SECRET + '"}', "has no username and key"),
        ('["' + SECRET + '"]', "has no username and key"),
    ],
)
def test_bad_kaggle_json_is_named_and_its_key_never_shown(home, content, says):
    path = write_json(home / ".kaggle" / "kaggle.json", content)
    with pytest.raises(DownloadError, match=says) as info:
        find_kaggle_credentials()
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value)


def test_unreadable_kaggle_json(home):
    path = write_json(home / ".kaggle" / "kaggle.json", "x")
    path.write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(DownloadError, match="Cannot read") as info:
        find_kaggle_credentials()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (HttpError(401), "401 Unauthorized"),
        (HttpError(403), "403 Forbidden"),
        (HttpError(404), "404 Not Found"),
        (HttpError(429), "429 Too Many Requests"),
        (HttpError(500), "failed"),
        (RuntimeError(f"bad key {SECRET} for user"), "failed"),
        (OSError(28, f"No space left on device: /tmp/{SECRET}"), "disk is full"),
        (ValueError(SECRET), "failed"),
    ],
)
def test_explain_failure_masks_the_key(error, says):
    message = str(explain_failure(error, SPEC, CREDS))
    assert says in message
    assert SECRET not in message
    assert download.ALTERNATIVES in message


@pytest.mark.parametrize(
    ("error", "auth_error"),
    [(HttpError(401), None), (RuntimeError(f"boom {SECRET}"), None), (None, SystemExit(1)),
     (None, RuntimeError(f"auth {SECRET}"))],
)  # fmt: skip
def test_download_errors_never_show_the_key(monkeypatch, tmp_path, capsys, error, auth_error):
    monkeypatch.setenv("KAGGLE_USERNAME", "user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: True)
    fake_kaggle(monkeypatch, error=error, auth_error=auth_error)
    with pytest.raises(DownloadError) as info:
        download_dataset(SPEC, tmp_path / "data")
    out = capsys.readouterr()
    assert SECRET not in str(info.value) and SECRET not in out.out + out.err
    assert not any((tmp_path / "data" / "raw").glob(".partial-*"))  # nothing half-written is left


def test_no_credentials_fails_fast_and_says_what_to_do(tmp_path):
    with pytest.raises(DownloadError, match="No Kaggle credentials found") as info:
        download_dataset(SPEC, tmp_path)
    assert "CXR_DATASET=synthetic" in str(info.value)


def test_cli_download_with_a_credentials_file_never_prints_the_key(monkeypatch, tmp_path, home, capsys):
    write_json(home / ".kaggle" / "kaggle.json", json.dumps({"username": "u", "key": SECRET}))
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: True)

    def failing_fetch(spec, credentials, folder):
        raise explain_failure(RuntimeError(f"403 for {credentials.key}"), spec, credentials)

    monkeypatch.setattr(download, "_fetch", failing_fetch)
    assert main(["download", "--dataset", "pneumonia"]) == 2
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Downloading paultimothymooney/chest-xray-pneumonia failed")


KERMANY_FILES = {"chest_xray/train/NORMAL/IM-{i}.jpeg": 3, "chest_xray/train/PNEUMONIA/person{i}_virus_1.jpeg": 3,
                 "chest_xray/test/NORMAL/IM-9{i}.jpeg": 1, "chest_xray/test/PNEUMONIA/person9{i}_bacteria_1.jpeg": 1}


def test_download_installs_a_complete_archive_once(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KAGGLE_USERNAME", "user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: True)
    asked = fake_kaggle(monkeypatch, files=KERMANY_FILES)
    target = download_dataset(SPEC, tmp_path / "data")
    assert target == tmp_path / "data" / "raw" / SPEC.raw_name and asked == [SPEC.kaggle]
    assert len(list(target.rglob("*.jpeg"))) == 8
    assert not (target / "__MACOSX").exists() and not (target / "chest_xray" / ".DS_Store").exists()  # junk gone
    marker = json.loads((target / download.COMPLETE).read_text())
    assert marker["counts"] == {"NORMAL": 4, "PNEUMONIA": 4} and marker["slug"] == SPEC.kaggle
    assert not list(target.parent.glob(".partial-*")) and not list(target.parent.glob(".replaced-*"))
    assert "Downloaded 8 images" in capsys.readouterr().out
    assert download_dataset(SPEC, tmp_path / "data") == target and asked == [SPEC.kaggle]  # complete: not again
    download_dataset(SPEC, tmp_path / "data", force=True)
    assert asked == [SPEC.kaggle] * 2 and (target / download.COMPLETE).is_file()  # force: again, swapped in whole
    assert sorted(p.name for p in target.parent.iterdir()) == [SPEC.raw_name]  # the old copy removed after the swap


def test_download_refuses_an_incomplete_archive_and_an_unfinished_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: True)
    fake_kaggle(monkeypatch, files={k: v for k, v in KERMANY_FILES.items() if "NORMAL" not in k or "test" in k})
    with pytest.raises(DownloadError, match=r"too few images: NORMAL 1 \(at least 3\)"):
        download_dataset(SPEC, tmp_path / "data")
    raw = tmp_path / "data" / "raw"
    assert list(raw.iterdir()) == []  # nothing installed, nothing half-written left
    mine = write_tree(raw / SPEC.raw_name, {"my_notes/{i}.png": 1})  # a folder there without the marker
    with pytest.raises(DownloadError, match="holds no finished download"):
        download_dataset(SPEC, tmp_path / "data")
    assert (mine / "my_notes" / "0.png").is_file()  # not deleted

"""Kaggle credentials discovery and the atomic, idempotent download, with a fake kaggle package (no network)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import time
import types
import warnings
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_tree

from utils import download
from utils.datasets import get_dataset, scan_images
from utils.download import (
    COMPLETE_MARKER,
    DownloadError,
    KaggleCredentials,
    credentials_help,
    download_dataset,
    find_kaggle_credentials,
    kaggle_reachable,
    remove_archive_junk,
    validate_download,
)

SECRET = "0123456789abcdef0123456789abcdef"
SPEC = dataclasses.replace(get_dataset("pneumonia"), min_images={"NORMAL": 3, "PNEUMONIA": 3})
KERMANY_TREE = {
    "chest_xray/train/NORMAL/IM-00{i}-0001.jpeg": 3,
    "chest_xray/train/PNEUMONIA/person{i}_bacteria_1.jpeg": 3,
    "chest_xray/train/PNEUMONIA/person1{i}_virus_2.jpeg": 1,
    "chest_xray/test/NORMAL/IM-01{i}-0001.jpeg": 1,
    "chest_xray/test/PNEUMONIA/person2{i}_virus_3.jpeg": 1,
    "chest_xray/val/NORMAL/NORMAL2-IM-02{i}-0001.jpeg": 1,
    "chest_xray/val/PNEUMONIA/person3{i}_bacteria_4.jpeg": 1,
}


def expected_counts(tree: dict[str, int]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for pattern, n in tree.items():
        counts[pattern.split("/")[2]] += n
    return dict(counts)


def write_kermany_archive(folder: Path, tree: dict[str, int] = KERMANY_TREE) -> None:
    """What unzipping the Kaggle Kermany archive gives: junk, and a nested duplicate of ``chest_xray``."""
    write_tree(folder, tree)
    shutil.copytree(folder / "chest_xray", folder / "copy")
    (folder / "copy").rename(folder / "chest_xray" / "chest_xray")
    (folder / "chest_xray" / "chest_xray" / "train" / ".DS_Store").write_bytes(b"\0\1")
    (folder / "chest_xray" / "train" / ".DS_Store").write_bytes(b"\0\1\2")
    (folder / "chest_xray" / "train" / "NORMAL" / "._IM-000-0001.jpeg").write_bytes(b"mac resource fork")
    macosx = folder / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    macosx.mkdir(parents=True)
    (macosx / "._IM-000-0001.jpeg").write_bytes(b"mac resource fork")


class FakeKaggle:
    """Stands in for ``kaggle.api.kaggle_api_extended``: records calls, writes a tree or raises."""

    def __init__(
        self,
        writer=write_kermany_archive,
        error: BaseException | None = None,
        auth_error: BaseException | None = None,
    ):
        self.writer, self.error, self.auth_error = writer, error, auth_error
        self.downloads: list[dict] = []
        self.auth_env: list[dict] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeKaggle:
        fake = self

        class KaggleApi:
            def authenticate(self) -> None:
                print("kaggle chatter on stdout")
                fake.auth_env.append({k: v for k, v in os.environ.items() if k.startswith("KAGGLE_")})
                if fake.auth_error is not None:
                    raise fake.auth_error

            def dataset_download_files(
                self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()
            ):
                fake.downloads.append({"dataset": dataset, "path": Path(path), "unzip": unzip})
                if fake.error is not None:
                    raise fake.error
                fake.writer(Path(path))

        for name in ("kaggle", "kaggle.api", "kaggle.api.kaggle_api_extended"):
            module = types.ModuleType(name)
            module.KaggleApi = KaggleApi
            monkeypatch.setitem(sys.modules, name, module)
        return self


class HttpError(Exception):
    def __init__(self, status: int):
        super().__init__(f"{status} Client Error for url: https://api.kaggle.com/v1/datasets")
        self.response = types.SimpleNamespace(status_code=status)


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Kaggle variables, an empty home folder, not on Colab, no proxy; returns the home folder."""
    for name in (
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        "KAGGLE_CONFIG_DIR",
        "XDG_CONFIG_HOME",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.setitem(sys.modules, "google.colab", None)  # import fails, as outside Colab
    return home


def write_json(path: Path, username: str, key: str = SECRET, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"username": username, "key": key}))
    path.chmod(mode)
    return path


def fake_colab(
    monkeypatch: pytest.MonkeyPatch, secrets: dict[str, str], error: type[Exception] | None = None
):
    class SecretNotFoundError(Exception):
        pass

    def get(name: str) -> str:
        if error is not None:
            raise error(name)
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    colab = types.ModuleType("google.colab")
    colab.userdata = types.SimpleNamespace(get=get, SecretNotFoundError=SecretNotFoundError)
    monkeypatch.setitem(sys.modules, "google.colab", colab)


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)


def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: True)


def assert_secret_hidden(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


# --- Credentials -----------------------------------------------------------------------------------------------


def test_no_credentials_anywhere():
    assert find_kaggle_credentials() is None


def test_credentials_from_environment(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key, creds.is_token) == ("env-user", SECRET, False)
    assert "KAGGLE_USERNAME" in creds.source
    assert creds.environment() == {"KAGGLE_USERNAME": "env-user", "KAGGLE_KEY": SECRET}
    assert "env-user" in str(creds) and "env-user" in repr(creds)
    assert_secret_hidden(str(creds), repr(creds), f"{creds}", f"{creds!r}")


def test_username_alone_is_not_credentials(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    assert find_kaggle_credentials() is None


def test_credentials_from_config_dir(monkeypatch, tmp_path):
    path = write_json(tmp_path / "cfg" / "kaggle.json", "cfg-user")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(path.parent))
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key, creds.source) == ("cfg-user", SECRET, str(path))


def test_credentials_from_home(no_credentials):
    path = write_json(no_credentials / ".kaggle" / "kaggle.json", "home-user")
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key, creds.source) == ("home-user", SECRET, str(path))


def test_new_style_token_from_environment_and_file(monkeypatch, no_credentials):
    token_file = no_credentials / ".kaggle" / "access_token"
    token_file.parent.mkdir()
    token_file.write_text("KGAT_file_token\n")
    token_file.chmod(0o600)
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key, creds.is_token) == (None, "KGAT_file_token", True)
    assert creds.environment() == {"KAGGLE_API_TOKEN": "KGAT_file_token"}
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_env_token")
    assert find_kaggle_credentials().key == "KGAT_env_token"


def test_token_in_kaggle_json_is_sent_as_api_token(no_credentials):
    write_json(no_credentials / ".kaggle" / "kaggle.json", "home-user", key="KGAT_abc")
    creds = find_kaggle_credentials()
    assert creds.is_token
    assert creds.environment() == {"KAGGLE_API_TOKEN": "KGAT_abc", "KAGGLE_USERNAME": "home-user"}


def test_credentials_from_colab_secrets(monkeypatch):
    fake_colab(monkeypatch, {"KAGGLE_USERNAME": "colab-user", "KAGGLE_KEY": SECRET})
    creds = find_kaggle_credentials()
    assert (creds.username, creds.key) == ("colab-user", SECRET)
    assert "Colab" in creds.source


@pytest.mark.parametrize(
    "secrets", [{}, {"KAGGLE_USERNAME": "colab-user"}, {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": " "}]
)
def test_missing_colab_secrets_are_absent(monkeypatch, secrets):
    fake_colab(monkeypatch, secrets)
    assert find_kaggle_credentials() is None


def test_colab_notebook_access_disabled_is_absent(monkeypatch):
    class NotebookAccessError(Exception):
        pass

    fake_colab(
        monkeypatch, {"KAGGLE_USERNAME": "colab-user", "KAGGLE_KEY": SECRET}, error=NotebookAccessError
    )
    assert find_kaggle_credentials() is None


def test_order_of_precedence(monkeypatch, tmp_path, no_credentials):
    fake_colab(monkeypatch, {"KAGGLE_USERNAME": "colab-user", "KAGGLE_KEY": SECRET})
    write_json(no_credentials / ".kaggle" / "kaggle.json", "home-user")
    config = write_json(tmp_path / "cfg" / "kaggle.json", "cfg-user")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config.parent))
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    found = []
    for remove in (
        lambda: monkeypatch.delenv("KAGGLE_KEY"),
        lambda: monkeypatch.delenv("KAGGLE_CONFIG_DIR"),
        lambda: (no_credentials / ".kaggle" / "kaggle.json").unlink(),
        lambda: None,
    ):
        found.append(find_kaggle_credentials().username)
        remove()
    assert found == ["env-user", "cfg-user", "home-user", "colab-user"]


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('["a", "b"]', "has no username and key"),
        ('{"username": "someone"}', "has no key"),
        ('{"key": "' + SECRET + '"}', "has no username"),
    ],
)
def test_malformed_kaggle_json_names_the_file(no_credentials, content, says):
    path = no_credentials / ".kaggle" / "kaggle.json"
    path.parent.mkdir()
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(DownloadError, match=says) as info:
        find_kaggle_credentials()
    assert str(path) in str(info.value)
    assert_secret_hidden(str(info.value))


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_kaggle_json_readable_by_others_warns(no_credentials):
    path = write_json(no_credentials / ".kaggle" / "kaggle.json", "home-user", mode=0o644)
    with pytest.warns(UserWarning, match=f"chmod 600 {path}"):
        assert find_kaggle_credentials().username == "home-user"
    path.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_kaggle_credentials().username == "home-user"


def test_credentials_help_lists_every_way():
    text = credentials_help()
    for needed in (
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "~/.kaggle/kaggle.json",
        "KAGGLE_CONFIG_DIR",
        "chmod 600",
        "Colab",
        "Secrets",
        "https://www.kaggle.com/settings",
        "Create New Token",
        "CXR_DATASET=synthetic",
        "python -m utils prepare --dataset synthetic",
        "CXR_SOURCE",
        "--source",
    ):
        assert needed in text, needed


# --- Failing fast --------------------------------------------------------------------------------------------


def test_no_credentials_fails_fast_without_touching_kaggle(monkeypatch, tmp_path):
    fake = FakeKaggle().install(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download_dataset(SPEC, tmp_path / "data")
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert message.startswith("No Kaggle credentials found")
    assert credentials_help() in message
    assert fake.auth_env == [] and fake.downloads == []
    assert not (tmp_path / "data").exists()


def test_offline_fails_fast_with_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    offline(monkeypatch)
    fake = FakeKaggle().install(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(DownloadError, match="Cannot reach www.kaggle.com") as info:
        download_dataset(SPEC, tmp_path / "data")
    assert time.perf_counter() - start < 2
    assert "CXR_DATASET=synthetic" in str(info.value) and "CXR_SOURCE" in str(info.value)
    assert_secret_hidden(str(info.value))
    assert fake.downloads == [] and not (tmp_path / "data").exists()


def test_reachability_probe(monkeypatch):
    opened = []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def connect(address, timeout):
        opened.append((address, timeout))
        return Connection()

    monkeypatch.setattr(socket, "create_connection", connect)
    assert kaggle_reachable(timeout=3)
    assert opened == [(("www.kaggle.com", 443), 3)]
    offline(monkeypatch)
    assert not kaggle_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # a direct probe means nothing behind a proxy
    assert kaggle_reachable()


def test_not_a_kaggle_dataset(tmp_path):
    with pytest.raises(DownloadError, match="prepare --dataset synthetic"):
        download_dataset(get_dataset("synthetic"), tmp_path)


# --- Downloading -----------------------------------------------------------------------------------------------


def test_download_is_clean_complete_and_done_once(monkeypatch, tmp_path, no_credentials, capsys):
    write_json(no_credentials / ".kaggle" / "kaggle.json", "home-user")
    online(monkeypatch)
    fake = FakeKaggle().install(monkeypatch)
    data = tmp_path / "data"

    folder = download_dataset(SPEC, data)

    assert folder == data / "raw" / SPEC.raw_name
    assert [call["dataset"] for call in fake.downloads] == [SPEC.kaggle]
    assert fake.downloads[0]["unzip"] and fake.downloads[0]["path"].parent == data / "raw"
    # kaggle saw the credentials as variables while it authenticated; they are gone again afterwards
    assert fake.auth_env == [{"KAGGLE_USERNAME": "home-user", "KAGGLE_KEY": SECRET}]
    assert "KAGGLE_KEY" not in os.environ and "KAGGLE_USERNAME" not in os.environ
    names = [p.name for p in folder.rglob("*")]
    assert "__MACOSX" not in names and ".DS_Store" not in names
    assert not [n for n in names if n.startswith("._")]
    assert not (folder / "chest_xray" / "chest_xray").exists()
    assert sorted(p.name for p in (folder / "chest_xray").iterdir()) == ["test", "train", "val"]
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["slug"] == SPEC.kaggle and marker["dataset"] == "pneumonia"
    assert marker["counts"] == expected_counts(KERMANY_TREE)
    assert marker["images"] == sum(KERMANY_TREE.values()) == len(scan_images(SPEC, folder))
    assert marker["date"][:4].isdigit()
    assert [p.name for p in (data / "raw").iterdir()] == [SPEC.raw_name]  # no temporary folder left
    output = capsys.readouterr()
    assert "kaggle chatter" not in output.out
    assert_secret_hidden(output.out, output.err)

    # Second call: no kaggle, no credentials, no network needed.
    (no_credentials / ".kaggle" / "kaggle.json").unlink()
    offline(monkeypatch)
    monkeypatch.setattr(download, "kaggle_reachable", lambda *a, **k: False)
    assert download_dataset(SPEC, data) == folder
    assert len(fake.downloads) == 1 and len(fake.auth_env) == 1


def test_missing_class_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    normal_only = {k: v for k, v in KERMANY_TREE.items() if "/NORMAL/" in k}
    FakeKaggle(writer=lambda folder: write_kermany_archive(folder, normal_only)).install(monkeypatch)
    data = tmp_path / "data"
    with pytest.raises(DownloadError, match="PNEUMONIA"):
        download_dataset(SPEC, data)
    assert list((data / "raw").iterdir()) == []
    assert os.environ["KAGGLE_KEY"] == SECRET  # the user's own variables are kept


def test_too_few_images_is_rejected(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    FakeKaggle().install(monkeypatch)
    spec = dataclasses.replace(SPEC, min_images={"NORMAL": 3, "PNEUMONIA": 500})
    found = expected_counts(KERMANY_TREE)["PNEUMONIA"]
    with pytest.raises(DownloadError, match=rf"PNEUMONIA {found} \(expected at least 500\)"):
        download_dataset(spec, tmp_path / "data")
    assert list((tmp_path / "data" / "raw").iterdir()) == []


@pytest.mark.parametrize(
    "status, says",
    [
        (401, "key is wrong, or the token expired"),
        (403, "accept the dataset's rules"),
        (404, "renamed, removed or made private"),
    ],
)
def test_kaggle_http_errors_are_explained(monkeypatch, tmp_path, status, says):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    FakeKaggle(error=HttpError(status)).install(monkeypatch)
    with pytest.raises(DownloadError, match=says) as info:
        download_dataset(SPEC, tmp_path / "data")
    assert f"({status} " in str(info.value)
    if status == 403:
        assert SPEC.url in str(info.value)
    assert_secret_hidden(str(info.value))
    assert list((tmp_path / "data" / "raw").iterdir()) == []


def test_rejected_credentials_at_authentication(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_" + SECRET)
    online(monkeypatch)
    fake = FakeKaggle(auth_error=SystemExit(1)).install(monkeypatch)
    with pytest.raises(DownloadError, match="did not accept") as info:
        download_dataset(SPEC, tmp_path / "data")
    assert fake.auth_env == [{"KAGGLE_API_TOKEN": "KGAT_" + SECRET}]
    assert fake.downloads == []
    assert_secret_hidden(str(info.value))


def test_unfinished_folder_is_never_deleted(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    fake = FakeKaggle().install(monkeypatch)
    target = tmp_path / "data" / "raw" / SPEC.raw_name
    target.mkdir(parents=True)
    (target / "my_notes.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(DownloadError, match="Nothing was deleted") as info:
            download_dataset(SPEC, tmp_path / "data", force=force)
        assert str(target) in str(info.value)
    assert (target / "my_notes.txt").read_text() == "keep me"
    assert fake.downloads == []


def test_empty_target_folder_is_filled(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    FakeKaggle().install(monkeypatch)
    target = tmp_path / "data" / "raw" / SPEC.raw_name
    target.mkdir(parents=True)
    assert download_dataset(SPEC, tmp_path / "data") == target
    assert (target / COMPLETE_MARKER).is_file()


def test_force_replaces_a_complete_download_only_after_success(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)
    data = tmp_path / "data"
    target = data / "raw" / SPEC.raw_name
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old download")
    (target / COMPLETE_MARKER).write_text("{}")

    normal_only = {k: v for k, v in KERMANY_TREE.items() if "/NORMAL/" in k}
    FakeKaggle(writer=lambda folder: write_kermany_archive(folder, normal_only)).install(monkeypatch)
    with pytest.raises(DownloadError):
        download_dataset(SPEC, data, force=True)
    assert (target / "old.txt").read_text() == "old download"  # a failed forced download keeps the old one

    fake = FakeKaggle().install(monkeypatch)
    assert download_dataset(SPEC, data) == target and fake.downloads == []  # complete: reused
    assert download_dataset(SPEC, data, force=True) == target
    assert len(fake.downloads) == 1
    assert not (target / "old.txt").exists()
    assert json.loads((target / COMPLETE_MARKER).read_text())["counts"] == expected_counts(KERMANY_TREE)
    assert [p.name for p in (data / "raw").iterdir()] == [SPEC.raw_name]


def test_interrupted_download_removes_its_temporary_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "env-user")
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    online(monkeypatch)

    def interrupted(folder: Path) -> None:
        write_tree(folder, {"chest_xray/train/NORMAL/IM-00{i}-0001.jpeg": 1})
        raise KeyboardInterrupt

    FakeKaggle(writer=interrupted).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        download_dataset(SPEC, tmp_path / "data")
    assert list((tmp_path / "data" / "raw").iterdir()) == []


# --- Cleaning and checking -------------------------------------------------------------------------------------


def test_nested_copy_is_kept_when_it_differs(tmp_path):
    write_tree(
        tmp_path, {"chest_xray/train/NORMAL/a{i}.png": 2, "chest_xray/chest_xray/train/NORMAL/a{i}.png": 1}
    )
    assert remove_archive_junk(tmp_path) == []
    assert (tmp_path / "chest_xray" / "chest_xray" / "train" / "NORMAL" / "a0.png").is_file()


def test_min_images_may_name_a_class_folder(tmp_path):
    """pneumonia3 labels the PNEUMONIA folder's files BACTERIA or VIRUS; its minimum may still name the folder."""
    write_tree(tmp_path / "archive", KERMANY_TREE)
    by_folder = expected_counts(KERMANY_TREE)
    by_kind = {
        kind: sum(n for k, n in KERMANY_TREE.items() if f"_{kind.lower()}_" in k)
        for kind in ("BACTERIA", "VIRUS")
    }
    assert by_kind["BACTERIA"] + by_kind["VIRUS"] == by_folder["PNEUMONIA"]
    spec = dataclasses.replace(get_dataset("pneumonia3"), min_images=by_folder)
    assert validate_download(spec, tmp_path / "archive") == {"NORMAL": by_folder["NORMAL"], **by_kind}
    too_many = dataclasses.replace(spec, min_images={"PNEUMONIA": by_folder["PNEUMONIA"] + 1})
    with pytest.raises(DownloadError, match=rf"PNEUMONIA {by_folder['PNEUMONIA']} \(expected at least"):
        validate_download(too_many, tmp_path / "archive")


def test_dataset_without_class_list_needs_two_classes(tmp_path):
    folder = write_tree(tmp_path / "archive", {"train/only/x{i}.png": 2})
    spec = get_dataset("cxr6")
    with pytest.raises(DownloadError, match="at least two"):
        validate_download(spec, folder)
    write_tree(folder, {"train/other/y{i}.png": 1})
    assert validate_download(spec, folder) == {"only": 2, "other": 1}


def test_key_object_repr_is_safe():
    creds = KaggleCredentials("user", SECRET, "somewhere")
    assert_secret_hidden(repr(creds), str(creds), repr([creds]), str({"c": creds}))

"""Kaggle credentials, and the one-time download of a dataset into ``<data dir>/raw/<raw name>/``.

A download is complete when its folder holds ``.complete`` (JSON: dataset, Kaggle slug, image counts, date); a
complete folder is reused without network or credentials. A new download is unzipped into a temporary folder
beside the target (same file system), cleaned of archive junk, checked with :func:`utils.datasets.scan_images`
and the dataset's minimum image counts, and only then renamed into place, so an interrupted or rejected download
never leaves a half-filled dataset behind, and nothing that was already there is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .datasets import JUNK_NAMES, DatasetError, DatasetSpec, ImageRecord, find_dataset_root, scan_images

KAGGLE_HOST = "www.kaggle.com"
SETTINGS_URL = "https://www.kaggle.com/settings"
COMPLETE_MARKER = ".complete"
TOKEN_PREFIX = "KGAT_"  # Kaggle's newer API tokens; the kaggle package sends them as KAGGLE_API_TOKEN
PARTIAL_PREFIX = ".partial-"  # temporary download folders: <data dir>/raw/.partial-<raw name>-XXXXXX
STALE_AFTER_S = 24 * 3600  # a temporary folder this old was left by a killed process and is removed
_AUTH_VARIABLES = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

ALTERNATIVES = (
    "Without Kaggle you can still follow the course: use the embedded synthetic dataset "
    "(set CXR_DATASET=synthetic, or run `python -m utils prepare --dataset synthetic`), or point the course at "
    "an archive you already downloaded and extracted (CXR_SOURCE=/path/to/chest_xray, or "
    "`python -m utils prepare --dataset pneumonia --source /path/to/chest_xray`)."
)


class DownloadError(RuntimeError):
    """A download that cannot start or did not succeed; the message says why and what to do instead."""


@dataclass(frozen=True)
class KaggleCredentials:
    """A Kaggle user name and key (or an API token, then ``username`` may be None) and where they were found.

    The key never appears in ``repr``/``str``.
    """

    username: str | None
    key: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"Kaggle credentials of {self.username or 'an API token'} (from {self.source})"

    @property
    def is_token(self) -> bool:
        """True for a new-style API token (sent as KAGGLE_API_TOKEN), False for a legacy user name + key."""
        return self.username is None or self.key.startswith(TOKEN_PREFIX)

    def environment(self) -> dict[str, str]:
        """The ``KAGGLE_*`` variables that make the kaggle package use these credentials."""
        if self.is_token:
            return {
                "KAGGLE_API_TOKEN": self.key,
                **({"KAGGLE_USERNAME": self.username} if self.username else {}),
            }
        return {"KAGGLE_USERNAME": str(self.username), "KAGGLE_KEY": self.key}


def credentials_help() -> str:
    """How to give the course Kaggle credentials (three ways), and what to use without them."""
    return "\n".join(
        [
            "Give the course your Kaggle credentials in one of three ways:",
            "1. Environment variables: KAGGLE_USERNAME=<your user name> and KAGGLE_KEY=<your key> "
            "(a new-style token alone: KAGGLE_API_TOKEN=<token>).",
            '2. A kaggle.json file, {"username": "<your user name>", "key": "<your key>"}, saved as '
            "~/.kaggle/kaggle.json or in the folder named by KAGGLE_CONFIG_DIR; keep it private with "
            "`chmod 600 ~/.kaggle/kaggle.json`.",
            "3. On Colab: add the secrets KAGGLE_USERNAME and KAGGLE_KEY in the Secrets panel (key icon, left bar) "
            "and switch on 'Notebook access'.",
            f"To get a key: sign in at {SETTINGS_URL}, section 'API', click 'Create New Token' (a legacy key downloads "
            "as kaggle.json; a new token is copied and used as KAGGLE_API_TOKEN).",
            ALTERNATIVES,
        ]
    )


# --- Finding credentials ---------------------------------------------------------------------------------------


def find_kaggle_credentials() -> KaggleCredentials | None:
    """The first credentials found, in this order, or None.

    1. environment variables ``KAGGLE_USERNAME`` + ``KAGGLE_KEY`` (else ``KAGGLE_API_TOKEN``);
    2. ``$KAGGLE_CONFIG_DIR/kaggle.json``;
    3. ``~/.kaggle/kaggle.json`` (then ``~/.kaggle/access_token`` and ``~/.config/kaggle/kaggle.json``, where
       newer kaggle versions keep them);
    4. Colab secrets ``KAGGLE_USERNAME`` + ``KAGGLE_KEY`` (else ``KAGGLE_API_TOKEN``), only on Colab.

    Raises :class:`DownloadError` naming the file when a kaggle.json is unreadable or malformed, and warns when
    one is readable by other users.
    """
    for finder in (_from_environment, _from_config_dir, _from_home, _from_colab):
        credentials = finder()
        if credentials is not None:
            return credentials
    return None


def _from_environment() -> KaggleCredentials | None:
    username = os.environ.get("KAGGLE_USERNAME", "").strip()
    key = os.environ.get("KAGGLE_KEY", "").strip()
    if username and key:
        return KaggleCredentials(username, key, "environment variables KAGGLE_USERNAME and KAGGLE_KEY")
    token = os.environ.get("KAGGLE_API_TOKEN", "").strip()
    if token and os.path.isfile(token):  # the kaggle package also accepts a path to a token file here
        token = _read_token_file(Path(token)) or ""
    if token:
        return KaggleCredentials(username or None, token, "environment variable KAGGLE_API_TOKEN")
    return None


def _from_config_dir() -> KaggleCredentials | None:
    folder = os.environ.get("KAGGLE_CONFIG_DIR", "").strip()
    return _read_kaggle_json(Path(folder).expanduser() / "kaggle.json") if folder else None


def _from_home() -> KaggleCredentials | None:
    try:
        home = Path.home()
    except RuntimeError:  # no home folder can be determined
        return None
    credentials = _read_kaggle_json(home / ".kaggle" / "kaggle.json")
    if credentials is not None:
        return credentials
    for token_file in (home / ".kaggle" / "access_token", home / ".kaggle" / "access_token.txt"):
        token = _read_token_file(token_file)
        if token:
            return KaggleCredentials(None, token, str(token_file))
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return _read_kaggle_json(config_home / "kaggle" / "kaggle.json")


def _from_colab() -> KaggleCredentials | None:
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None

    def secret(name: str) -> str | None:
        try:
            value = userdata.get(name)
        except Exception:  # SecretNotFoundError, NotebookAccessError (access switched off), TimeoutException
            return None
        return value.strip() if isinstance(value, str) and value.strip() else None

    username, key = secret("KAGGLE_USERNAME"), secret("KAGGLE_KEY")
    if username and key:
        return KaggleCredentials(username, key, "Colab secrets KAGGLE_USERNAME and KAGGLE_KEY")
    token = secret("KAGGLE_API_TOKEN")
    return KaggleCredentials(username, token, "Colab secret KAGGLE_API_TOKEN") if token else None


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise DownloadError(
            f"Cannot read the Kaggle credentials file {path} ({reason}): fix its permissions "
            f"(chmod 600 {path}) or replace it with a fresh one from {SETTINGS_URL}."
        ) from None
    _warn_if_shared(path)
    return text


def _read_token_file(path: Path) -> str | None:
    text = _read_text(path)
    return (text.strip() or None) if text is not None else None


def _read_kaggle_json(path: Path) -> KaggleCredentials | None:
    text = _read_text(path)
    if text is None:
        return None
    expected = (
        f'It should hold {{"username": "<your Kaggle user name>", "key": "<your key>"}}: fix it, or '
        f"download a fresh one from {SETTINGS_URL} (API, Create New Token)."
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:  # the message names the position only, never the file's content
        raise DownloadError(
            f"The Kaggle credentials file {path} is not valid JSON ({err.msg} at line "
            f"{err.lineno}, column {err.colno}). {expected}"
        ) from None
    data = data if isinstance(data, dict) else {}
    username, key = data.get("username"), data.get("key")
    username = username.strip() if isinstance(username, str) and username.strip() else None
    key = key.strip() if isinstance(key, str) else ""
    if not key or (username is None and not key.startswith(TOKEN_PREFIX)):
        missing = " and ".join(name for name, value in (("username", username), ("key", key)) if not value)
        raise DownloadError(f"The Kaggle credentials file {path} has no {missing or 'username'}. {expected}")
    return KaggleCredentials(username, key, str(path))


def _warn_if_shared(path: Path) -> None:
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.warn(
                f"{path} is readable by other users of this computer: run `chmod 600 {path}`.",
                UserWarning,
                stacklevel=2,
            )


# --- Downloading -----------------------------------------------------------------------------------------------


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished download (its ``.complete`` marker)."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def kaggle_reachable(host: str = KAGGLE_HOST, port: int = 443, timeout: float = 4.0) -> bool:
    """True when a TCP connection to Kaggle opens within ``timeout`` seconds (name lookup included).

    Behind an HTTPS proxy (``HTTPS_PROXY``/``ALL_PROXY``) a direct probe says nothing, so it answers True.
    """
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # bounds a slow DNS lookup too
    thread.start()
    thread.join(timeout + 0.5)
    return bool(answer and answer[0])


def download_dataset(spec: DatasetSpec, data_dir: Path, *, force: bool = False) -> Path:
    """Download ``spec`` from Kaggle into ``data_dir/raw/<spec.raw_name>`` once, and return that folder.

    A complete earlier download is returned at once (no network, no credentials); ``force=True`` downloads
    again and replaces it only once the new copy has passed the checks. A folder there without ``.complete``
    is never deleted: the error names it. Raises :class:`DownloadError` with what to do (credentials, network,
    Kaggle's answer, unexpected archive content).
    """
    if not spec.kaggle:
        raise DownloadError(
            f"{spec.name} is not a Kaggle dataset: build it with "
            f"`python -m utils prepare --dataset {spec.name}`."
        )
    raw_dir = Path(data_dir) / "raw"
    target = raw_dir / spec.raw_name
    if is_complete(target) and not force:
        return target
    if not is_complete(target) and _has_content(target):
        raise DownloadError(_unfinished_message(target))
    credentials = find_kaggle_credentials()
    if credentials is None:
        raise DownloadError(
            f"No Kaggle credentials found, so {spec.kaggle} cannot be downloaded.\n{credentials_help()}"
        )
    if not kaggle_reachable():
        raise DownloadError(
            f"Cannot reach {KAGGLE_HOST} (no network, or it is blocked here), so {spec.kaggle} "
            f"cannot be downloaded.\n{ALTERNATIVES}"
        )
    raw_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(raw_dir, spec.raw_name)
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{spec.raw_name}-", dir=raw_dir))
    try:
        print(f"Downloading {spec.kaggle} from Kaggle with the {credentials} into {target} ...", flush=True)
        _fetch(spec, credentials, partial)
        remove_archive_junk(partial)
        counts = validate_download(spec, partial)
        _write_marker(partial, spec, counts)
        _install(partial, target)
    except BaseException:  # KeyboardInterrupt included: never leave a half-written folder behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    summary = ", ".join(f"{label} {n}" for label, n in counts.items())
    print(f"Downloaded {sum(counts.values())} images ({summary}) into {target}", flush=True)
    return target


def _has_content(folder: Path) -> bool:
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return True
    return folder.is_dir() and any(folder.iterdir())


def _unfinished_message(target: Path) -> str:
    return (
        f"{target} exists but has no {COMPLETE_MARKER} marker: it is an unfinished download or other files. "
        f"Nothing was deleted. Look at it, then delete or rename that folder yourself and run the download "
        f"again (if it holds a complete extracted archive, use it with CXR_SOURCE={target} or --source)."
    )


def _remove_stale_partials(raw_dir: Path, raw_name: str) -> None:
    for folder in raw_dir.glob(f"{PARTIAL_PREFIX}{raw_name}-*"):
        with contextlib.suppress(OSError):
            if (
                folder.is_dir()
                and not folder.is_symlink()
                and time.time() - folder.stat().st_mtime > STALE_AFTER_S
            ):
                shutil.rmtree(folder)
                print(f"Removed {folder}, left by an interrupted download.")


@contextlib.contextmanager
def _kaggle_environment(credentials: KaggleCredentials) -> Iterator[None]:
    """Export exactly these credentials as ``KAGGLE_*`` variables, and restore the environment afterwards."""
    saved = {name: os.environ.get(name) for name in _AUTH_VARIABLES}
    wanted = credentials.environment()
    try:
        for name in _AUTH_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(wanted)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _fetch(spec: DatasetSpec, credentials: KaggleCredentials, folder: Path) -> None:
    """Download and unzip ``spec.kaggle`` into ``folder`` with the kaggle package."""
    with _kaggle_environment(credentials):
        try:
            # Importing kaggle authenticates at once and prints to stdout, hence after the export and silenced.
            with contextlib.redirect_stdout(io.StringIO()):
                from kaggle.api.kaggle_api_extended import KaggleApi

                api = KaggleApi()
                api.authenticate()
        except ImportError as err:
            raise DownloadError(f"The kaggle package is missing ({err}): run `pip install kaggle`.") from None
        except SystemExit:  # kaggle calls exit(1) when it accepts none of the credentials it finds
            raise DownloadError(
                f"The kaggle package did not accept the {credentials}: check the user name and "
                f"key, or create a new token at {SETTINGS_URL}."
            ) from None
        except Exception as err:  # e.g. a token check that Kaggle answered with an HTTP error
            raise _explain(err, spec, credentials, folder) from err
        try:
            api.dataset_download_files(spec.kaggle, path=str(folder), unzip=True, quiet=False)
        except SystemExit:
            raise DownloadError(f"The kaggle package stopped while downloading {spec.kaggle}.") from None
        except Exception as err:
            raise _explain(err, spec, credentials, folder) from err


def _explain(
    err: Exception, spec: DatasetSpec, credentials: KaggleCredentials, folder: Path
) -> DownloadError:
    """A DownloadError saying what a kaggle failure means for the user (never showing the key)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    page = spec.url or f"https://www.kaggle.com/datasets/{spec.kaggle}"
    detail = str(err).replace(credentials.key, "***") or type(err).__name__
    if status == 401:
        text = (
            f"Kaggle rejected the {credentials} (401 Unauthorized): the key is wrong, or the token expired or "
            f"was replaced by a newer one. Create a new token at {SETTINGS_URL} and update {credentials.source}."
        )
    elif status == 403:
        text = (
            f"Kaggle refused access to {spec.kaggle} (403 Forbidden): open {page}, sign in and accept the "
            f"dataset's rules or terms if it shows any (and verify your account if Kaggle asks), then run again."
        )
    elif status == 404:
        text = (
            f"Kaggle has no dataset {spec.kaggle} (404 Not Found): it may have been renamed, removed or made "
            f"private; check {page}."
        )
    elif status == 429:
        text = (
            "Kaggle is rate-limiting this account (429 Too Many Requests): wait a few minutes and run again."
        )
    elif status is not None:
        text = f"Kaggle answered HTTP {status} while downloading {spec.kaggle} ({detail}): try again later."
    elif isinstance(err, OSError) and err.errno == errno.ENOSPC:
        text = (
            f"The disk is full while downloading {spec.kaggle} into {folder.parent}: the download needs "
            f"about twice the archive's size free there (zip + extracted files). Free space and run again."
        )
    elif "connection" in type(err).__name__.lower() or "timeout" in type(err).__name__.lower():
        text = (
            f"The connection to Kaggle broke off or was refused while downloading {spec.kaggle} "
            f"({type(err).__name__}): check the network (api.kaggle.com must be reachable) and run again."
        )
    else:
        text = f"Downloading {spec.kaggle} failed ({type(err).__name__}: {detail}): run again."
    return DownloadError(f"{text}\n{ALTERNATIVES}")


def remove_archive_junk(folder: Path) -> list[Path]:
    """Delete archive junk under ``folder`` (``__MACOSX``, ``.DS_Store``, ``._*`` files) and nested copies of a
    folder inside itself (``chest_xray/chest_xray`` holding the same files as its parent). Returns what was removed.

    Only for a fresh download: it deletes files.
    """
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in [d for d in dirnames if _is_junk(d)]:
            shutil.rmtree(base / name)
            dirnames.remove(name)
            removed.append(base / name)
        for name in filter(_is_junk, filenames):
            (base / name).unlink()
            removed.append(base / name)
    for dirpath, dirnames, _ in os.walk(folder):
        parent = Path(dirpath)
        nested = parent / parent.name
        if (
            parent.name in dirnames
            and _file_index(nested)
            and _file_index(nested) == _file_index(parent, nested)
        ):
            shutil.rmtree(nested)
            dirnames.remove(parent.name)
            removed.append(nested)
    return removed


def _is_junk(name: str) -> bool:
    return name in JUNK_NAMES or name.startswith("._")


def _file_index(folder: Path, skip: Path | None = None) -> set[tuple[str, int]]:
    """(relative path, size) of every file under ``folder``, leaving out the ``skip`` subtree."""
    index = set()
    for path in folder.rglob("*"):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file():
            index.add((path.relative_to(folder).as_posix(), path.stat().st_size))
    return index


def validate_download(spec: DatasetSpec, folder: Path) -> dict[str, int]:
    """Images per label in ``folder``; raises :class:`DownloadError` unless the layout and counts are as expected.

    ``spec.min_images`` gives a minimum per class; a name that is not a label of ``spec`` is counted by class
    folder (``pneumonia3`` reads the ``PNEUMONIA`` folder as BACTERIA and VIRUS). A dataset without a fixed
    class list needs at least two classes.
    """
    what = spec.kaggle or spec.name
    try:
        records = scan_images(spec, folder)
    except DatasetError as err:
        raise DownloadError(f"The download of {what} does not have the expected layout: {err}") from err
    counts = Counter(record.label for record in records)
    if spec.classes is None and len(counts) < 2:
        raise DownloadError(
            f"The download of {what} holds {len(counts)} class folder(s) ({', '.join(counts)}); "
            f"a classification dataset needs at least two."
        )
    by_folder = _class_folder_counts(folder, records)
    short = [
        f"{name} {counts.get(name, by_folder.get(name, 0))} (expected at least {minimum})"
        for name, minimum in (spec.min_images or {}).items()
        if counts.get(name, by_folder.get(name, 0)) < minimum
    ]
    if short:
        raise DownloadError(
            f"The download of {what} has too few images: {'; '.join(short)}. It is incomplete or "
            f"not the expected archive; nothing was installed, run the download again."
        )
    return dict(sorted(counts.items()))


def _class_folder_counts(folder: Path, records: list[ImageRecord]) -> Counter[str]:
    """Images per class folder (the folder under the split folder, or under the root without splits)."""
    root = find_dataset_root(folder)
    return Counter(
        record.path.relative_to(root).parts[1 if record.official_split else 0] for record in records
    )


def _write_marker(folder: Path, spec: DatasetSpec, counts: dict[str, int]) -> None:
    marker = {
        "dataset": spec.name,
        "slug": spec.kaggle,
        "url": spec.url,
        "counts": counts,
        "images": sum(counts.values()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _install(partial: Path, target: Path) -> None:
    """Rename the checked download into place; a complete old copy is swapped out, anything else is kept."""
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()
    if not is_complete(target):
        if target.exists() or target.is_symlink():
            raise DownloadError(_unfinished_message(target))
        os.replace(partial, target)
        return
    holder = Path(tempfile.mkdtemp(prefix=f".replaced-{target.name}-", dir=target.parent))
    os.replace(target, holder / target.name)
    try:
        os.replace(partial, target)
    except BaseException:
        os.replace(holder / target.name, target)
        raise
    shutil.rmtree(holder, ignore_errors=True)

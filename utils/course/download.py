"""Kaggle credentials, and the one-time download of a dataset into ``<data dir>/raw/<raw name>/``.

A download is complete when its folder holds ``.complete`` (JSON: dataset, slug, image counts, date); a complete
folder is reused without network or credentials. A new download is unzipped into a temporary folder beside the
target, cleaned of archive junk, checked (layout and minimum image counts) and only then renamed into place: an
interrupted or rejected download never leaves a half-filled dataset, and nothing already there is deleted.
The Kaggle key never appears in any message.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .datasets import COMPLETE, DatasetError, DatasetSpec, scan_images

KAGGLE_HOST = "www.kaggle.com"
SETTINGS_URL = "https://www.kaggle.com/settings"
JUNK = {"__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints"}
ALTERNATIVES = (
    "Without Kaggle you can still follow the course: use the built-in synthetic images (CXR_DATASET=synthetic), or "
    "an archive you downloaded and extracted yourself (CXR_SOURCE=/path/to/chest_xray, or `python -m utils prepare "
    "--dataset pneumonia --source /path/to/chest_xray`)."
)
HTTP_ADVICE = {
    401: "Kaggle rejected the {who} (401 Unauthorized): the key is wrong, or the token expired. Create a new token "
         f"at {SETTINGS_URL} and update {{where}}.",
    403: "Kaggle refused access to {slug} (403 Forbidden): open {page}, sign in and accept the dataset's rules if "
         "it shows any, then run again.",
    404: "Kaggle has no dataset {slug} (404 Not Found): it may have been renamed or removed; check {page}.",
    429: "Kaggle is rate-limiting this account (429 Too Many Requests): wait a few minutes and run again.",
}  # fmt: skip


class DownloadError(RuntimeError):
    """A download that cannot start or did not succeed; the message says why and what to do instead."""


@dataclass(frozen=True)
class KaggleCredentials:
    """A Kaggle user name and key (or a new-style API token) and where they were found; ``repr`` hides the key."""

    username: str | None
    key: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"Kaggle credentials of {self.username or 'an API token'} (from {self.source})"

    def environment(self) -> dict[str, str]:
        """The ``KAGGLE_*`` variables that make the kaggle package use these credentials."""
        if self.username is None or self.key.startswith("KGAT_"):
            return {"KAGGLE_API_TOKEN": self.key} | ({"KAGGLE_USERNAME": self.username} if self.username else {})
        return {"KAGGLE_USERNAME": self.username, "KAGGLE_KEY": self.key}


def credentials_help() -> str:
    """How to give the course Kaggle credentials, and what to use without them."""
    return "\n".join([
        "Give the course your Kaggle credentials in one of three ways:",
        "1. environment variables KAGGLE_USERNAME and KAGGLE_KEY (or a new-style token as KAGGLE_API_TOKEN);",
        '2. a file ~/.kaggle/kaggle.json (or in $KAGGLE_CONFIG_DIR) holding {"username": "...", "key": "..."}, '
        "private: `chmod 600 ~/.kaggle/kaggle.json`;",
        "3. on Colab, the secrets KAGGLE_USERNAME and KAGGLE_KEY (key icon, left bar) with 'Notebook access' on.",
        f"To get a key: sign in at {SETTINGS_URL}, section API, 'Create New Token'.",
        ALTERNATIVES,
    ])  # fmt: skip


def _read_kaggle_json(path: Path) -> KaggleCredentials | None:
    """Credentials from a kaggle.json; errors name the file and the problem, never its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise DownloadError(f"Cannot read the Kaggle credentials file {path} ({type(err).__name__}): fix its "
                            f"permissions (chmod 600 {path}) or replace it with a new one from {SETTINGS_URL}.") from None  # fmt: skip
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"{path} is readable by other users of this computer: run `chmod 600 {path}`.", stacklevel=2)
    expected = f'It must hold {{"username": "...", "key": "..."}}: fix it, or download a new one from {SETTINGS_URL}.'
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:  # the position only, never the content
        raise DownloadError(f"The Kaggle credentials file {path} is not valid JSON ({err.msg} at line {err.lineno}). "
                            f"{expected}") from None  # fmt: skip
    data = data if isinstance(data, dict) else {}
    username, key = (str(data.get(k) or "").strip() for k in ("username", "key"))
    if not key or not (username or key.startswith("KGAT_")):
        missing = " and ".join(k for k, v in (("username", username), ("key", key)) if not v)
        raise DownloadError(f"The Kaggle credentials file {path} has no {missing}. {expected}")
    return KaggleCredentials(username or None, key, str(path))


def find_kaggle_credentials() -> KaggleCredentials | None:
    """The first credentials found: environment variables, ``$KAGGLE_CONFIG_DIR/kaggle.json``,
    ``~/.kaggle/kaggle.json``, then Colab secrets; None when there are none."""
    username, key = (os.environ.get(v, "").strip() for v in ("KAGGLE_USERNAME", "KAGGLE_KEY"))
    if username and key:
        return KaggleCredentials(username, key, "environment variables KAGGLE_USERNAME and KAGGLE_KEY")
    if token := os.environ.get("KAGGLE_API_TOKEN", "").strip():
        return KaggleCredentials(username or None, token, "environment variable KAGGLE_API_TOKEN")
    for folder in (os.environ.get("KAGGLE_CONFIG_DIR"), Path.home() / ".kaggle"):
        if folder and (found := _read_kaggle_json(Path(folder).expanduser() / "kaggle.json")):
            return found
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        values = [userdata.get(name) for name in ("KAGGLE_USERNAME", "KAGGLE_KEY")]
    except Exception:  # not on Colab, or a secret missing or not shared with the notebook
        return None
    return KaggleCredentials(values[0], values[1], "Colab secrets") if all(values) else None


def connection_problem(host: str, port: int, timeout: float) -> str | None:
    """None when ``host:port`` accepts a connection within ``timeout`` seconds, else why not (Kaggle's and Keras's
    download hosts are probed with it, so that offline machines fail in seconds)."""
    answer: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(None)
        except OSError as err:
            answer.append(f"{type(err).__name__}: {err}")

    thread = threading.Thread(target=probe, daemon=True)  # bounds a slow name lookup too
    thread.start()
    thread.join(timeout + 0.5)
    return answer[0] if answer else f"no answer from {host} within {timeout:.0f} s"


def kaggle_reachable(host: str = KAGGLE_HOST, timeout: float = 4.0) -> bool:
    """True when Kaggle answers within ``timeout`` seconds (or an HTTPS proxy is set: a probe says nothing then)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    return connection_problem(host, 443, timeout) is None


def download_dataset(spec: DatasetSpec, data_dir: Path, force: bool = False) -> Path:
    """Download ``spec`` from Kaggle into ``data_dir/raw/<raw name>`` once and return that folder (a complete
    earlier download comes back at once). Raises :class:`DownloadError` saying what to do."""
    if not spec.kaggle:
        raise DownloadError(f"{spec.name} is not a Kaggle dataset: run `python -m utils prepare --dataset {spec.name}`.")
    target = Path(data_dir) / "raw" / spec.raw_name
    if (target / COMPLETE).is_file() and not force:
        return target
    if not (target / COMPLETE).is_file() and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DownloadError(f"{target} exists but holds no finished download ({COMPLETE} missing). Nothing was "
                            f"deleted: look at it, then move it away and run again (or use it as CXR_SOURCE={target}).")  # fmt: skip
    credentials = find_kaggle_credentials()
    if credentials is None:
        raise DownloadError(f"No Kaggle credentials found, so {spec.kaggle} cannot be downloaded.\n{credentials_help()}")
    if not kaggle_reachable():
        raise DownloadError(f"Cannot reach {KAGGLE_HOST} (no network, or it is blocked here), so {spec.kaggle} "
                            f"cannot be downloaded.\n{ALTERNATIVES}")  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{spec.raw_name}-", dir=target.parent))
    try:
        print(f"Downloading {spec.kaggle} with the {credentials} into {target} ...", flush=True)
        _fetch(spec, credentials, partial)
        remove_archive_junk(partial)
        counts = validate_download(spec, partial)
        marker = {"dataset": spec.name, "slug": spec.kaggle, "counts": counts,
                  "date": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        (partial / COMPLETE).write_text(json.dumps(marker, indent=1))
        old = target.with_name(f".replaced-{target.name}")
        if target.is_dir():
            os.replace(target, old)  # a complete old copy (force=True) or an empty folder, kept until the swap
        os.replace(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:  # KeyboardInterrupt included: never leave a half-written folder behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"Downloaded {sum(counts.values())} images ({counts}) into {target}", flush=True)
    return target


def _fetch(spec: DatasetSpec, credentials: KaggleCredentials, folder: Path) -> None:
    """Download and unzip ``spec.kaggle`` into ``folder`` with the kaggle package, these credentials only."""
    saved = {v: os.environ.pop(v, None) for v in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN")}
    os.environ.update(credentials.environment())
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # importing kaggle authenticates and prints
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
        api.dataset_download_files(spec.kaggle, path=str(folder), unzip=True, quiet=False)
    except SystemExit:  # kaggle calls exit(1) when it accepts none of the credentials it finds
        raise DownloadError(f"The kaggle package did not accept the {credentials}: check them, or create a new "
                            f"token at {SETTINGS_URL}.") from None  # fmt: skip
    except Exception as err:
        raise explain_failure(err, spec, credentials) from None
    finally:
        for variable, value in saved.items():
            os.environ.pop(variable, None)
            if value is not None:
                os.environ[variable] = value


def explain_failure(err: Exception, spec: DatasetSpec, credentials: KaggleCredentials) -> DownloadError:
    """A DownloadError saying what a kaggle failure means (the key masked wherever it would appear)."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    detail = f"{type(err).__name__}: {err}"
    if status in HTTP_ADVICE:
        text = HTTP_ADVICE[status].format(who=credentials, where=credentials.source, slug=spec.kaggle, page=spec.url)
    elif isinstance(err, OSError) and err.errno == 28:
        text = f"The disk is full: downloading {spec.kaggle} needs about twice the archive's size free. Free space and run again."
    else:
        text = f"Downloading {spec.kaggle} failed ({detail}): check the network and run again."
    return DownloadError(f"{text}\n{ALTERNATIVES}".replace(credentials.key, "***"))


def remove_archive_junk(folder: Path) -> list[Path]:
    """Delete archive junk (``__MACOSX``, ``.DS_Store``, ``._*`` files) under a fresh download; returns what went."""
    removed = []
    for path in sorted(Path(folder).rglob("*"), reverse=True):
        if path.name in JUNK or path.name.startswith("._"):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def validate_download(spec: DatasetSpec, folder: Path) -> dict[str, int]:
    """Images per label; a :class:`DownloadError` unless the layout and the minimum counts are as expected."""
    try:
        records, _ = scan_images(spec, folder)
    except DatasetError as err:
        raise DownloadError(f"The download of {spec.kaggle} does not have the expected layout: {err}") from None
    counts = dict(sorted(Counter(r.label for r in records).items()))
    short = [f"{name} {counts.get(name, 0)} (at least {n})" for name, n in (spec.min_images or {}).items()
             if counts.get(name, 0) < n]  # fmt: skip
    if short:
        raise DownloadError(f"The download of {spec.kaggle} has too few images: {'; '.join(short)}. It is incomplete "
                            "or not the expected archive; nothing was installed: run the download again.")  # fmt: skip
    return counts

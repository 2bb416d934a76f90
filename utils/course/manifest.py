"""The manifest: one CSV per dataset that every notebook reads, and the steps that make it (``prepare``).

``prepare_dataset`` gets the images (a ``--source`` folder, a download, or the generator), checks that every file
decodes, leaves out unreadable files and files that appear under two labels (both said on the console and in
``prepare_report.json``), splits by patient (:func:`split_by_patient`, taught in notebook 01) and writes
``manifest.csv`` atomically. A manifest made from another source or seed is kept beside the new one, never
overwritten, and the runs trained on it keep their own copy of their split (``utils.course.runs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from .config import SPLITS, Profile, Settings
from .datasets import (
    COMPLETE,
    DatasetError,
    DatasetSpec,
    class_names,
    dataset_dir_name,
    get_dataset,
    pipeline_problem,
    scan_images,
)

COLUMNS = ["path", "label", "split", "patient_id", "group", "width", "height", "channels", "bytes"]
MANIFEST_NAME, REPORT_NAME = "manifest.csv", "prepare_report.json"
DEFAULT_DATASET = "pneumonia"


class ManifestError(DatasetError):
    """A manifest is missing, malformed or stale; the message names the command that fixes it."""


def _check(path: Path) -> tuple[int, int, int, str, str | None]:
    """(width, height, channels, sha1, error) of one file, decoding it fully; a format that Pillow reads but the
    training pipeline cannot (BMP, GIF, CMYK JPEG) is an error too."""
    try:
        data = path.read_bytes()
        with Image.open(path) as image:
            image.load()
            if problem := pipeline_problem(image.format, image.mode):
                return 0, 0, 0, "", problem
            return image.width, image.height, len(image.getbands()), hashlib.sha1(data).hexdigest(), None
    except Exception as err:  # any decoder failure means the file is unusable
        return 0, 0, 0, "", f"{type(err).__name__}: {err}"


def _groups(patients: pd.Series, hashes: pd.Series) -> pd.Series:
    """Patient ids joined so that byte-identical files share one group (union-find over hash clusters)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for ids in patients.groupby(hashes.to_numpy()).unique():
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    return patients.map(find)


# saved in utils/course/manifest.py
def holdout_by_patient(table: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask over ``table``'s rows: about ``fraction`` of the patients (column ``group``), stratified by label."""
    n_splits = min(round(1 / fraction), table.groupby("label")["group"].nunique().min())
    held_out = np.zeros(len(table), dtype=bool)
    if n_splits >= 2:  # a class with a single patient cannot be split: it all stays in training
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, index = next(folds.split(table, table["label"], table["group"]))
        held_out[index] = True
    return held_out


# saved in utils/course/manifest.py
def split_by_patient(table: pd.DataFrame, seed: int, fraction: float = 0.15) -> pd.Series:
    """The ``split`` column: the official test images stay test (without one, patients are held out for it);
    the rest is split into train and about ``fraction`` val, by patient, stratified by label."""
    split = pd.Series("train", index=table.index)
    official = table["official_split"].eq("test")
    test = table["group"].isin(table.loc[official, "group"]).to_numpy()  # a duplicate of a test image is test too
    if not test.any():
        test = holdout_by_patient(table, fraction, seed)
    split[test] = "test"
    pool = table[~test]
    split[pool.index[holdout_by_patient(pool, fraction, seed)]] = "val"
    return split


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_manifest(spec: DatasetSpec, source: Path, out_dir: Path, seed: int) -> tuple[pd.DataFrame, dict]:
    """Scan ``source`` as ``spec``, check every image, split by patient; write the manifest and its report."""
    records, skipped = scan_images(spec, source)
    with ThreadPoolExecutor(max_workers=8) as pool:  # Pillow decodes outside the GIL
        checks = list(pool.map(_check, [r.path for r in records], chunksize=32))
    frame = pd.DataFrame([vars(r) for r in records])
    frame[["width", "height", "channels", "sha1", "error"]] = pd.DataFrame(checks, index=frame.index)
    unreadable = frame[frame["error"].notna()]
    frame = frame[frame["error"].isna()]
    conflicting = frame[frame.groupby("sha1")["label"].transform("nunique") > 1]
    frame = frame.drop(conflicting.index).reset_index(drop=True)
    if frame.empty:
        raise DatasetError(f"None of the {len(records)} images under {source} could be used: see the messages above.")
    frame["group"] = _groups(frame["patient_id"], frame["sha1"])
    frame["split"] = split_by_patient(frame, seed)
    frame["bytes"] = [p.stat().st_size for p in frame["path"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = frame.assign(path=[_relative(p, out_dir) for p in frame["path"]])[COLUMNS]
    report = {
        "dataset": spec.name, "source": str(Path(source).resolve()), "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "class_names": class_names(spec, records),
        "images": len(manifest),
        "counts": {s: manifest[manifest["split"] == s]["label"].value_counts().sort_index().to_dict() for s in SPLITS},
        "unreadable": [{"path": str(p), "error": e} for p, e in zip(unreadable["path"], unreadable["error"], strict=True)],
        "conflicting_labels": [{"path": str(p), "label": lab} for p, lab in zip(conflicting["path"], conflicting["label"], strict=True)],
        "skipped_formats": [str(p) for p in skipped],
        "duplicate_files": int(frame.duplicated("sha1").sum()),
    }  # fmt: skip
    _keep_previous(out_dir, report)
    write_atomic(out_dir / MANIFEST_NAME, manifest.to_csv(index=False))
    write_atomic(out_dir / REPORT_NAME, json.dumps(report, indent=1))
    return load_manifest(out_dir / MANIFEST_NAME), report


def _keep_previous(out_dir: Path, report: dict) -> None:
    """Rename a manifest made from another source or seed to ``manifest-<created>.csv`` (and its report)."""
    old = load_report(out_dir / MANIFEST_NAME)
    if not old or (old.get("source"), old.get("seed")) == (report["source"], report["seed"]):
        return
    stamp = str(old.get("created", "old")).replace(":", "")
    while (out_dir / f"manifest-{stamp}.csv").exists():  # two manifests made within one second
        stamp += "-1"
    for name in (MANIFEST_NAME, REPORT_NAME):
        if (out_dir / name).exists():
            os.replace(out_dir / name, out_dir / name.replace(".", f"-{stamp}.", 1))


def report_problems(report: dict) -> list[str]:
    """One console line per kind of image the manifest left out."""
    lines = []
    for key, what in [("unreadable", "could not be decoded (damaged, or BMP, GIF or CMYK: convert them to PNG)"),
                      ("conflicting_labels", "appear under two labels"),
                      ("skipped_formats", "are in a format the pipeline cannot read (convert them to PNG)")]:  # fmt: skip
        items = report.get(key, [])
        if items:
            first = items[0]["path"] if isinstance(items[0], dict) else items[0]
            lines.append(f"left out {len(items)} file(s) that {what}, e.g. {first}")
    return lines


def load_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest (paths made absolute); a missing, malformed or stale one says what to run."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"No manifest at {path}: run notebook 01, or `python -m utils prepare --dataset <name>`.")
    manifest = pd.read_csv(path, dtype={"patient_id": str, "group": str, "label": str, "split": str})
    if missing := [c for c in COLUMNS if c not in manifest.columns]:
        raise ManifestError(f"{path} is not a course manifest (no {missing}): rebuild it with `python -m utils prepare --force`.")
    manifest["path"] = [str((path.parent / p).resolve()) for p in manifest["path"]]
    return manifest


def stale_files(manifest: pd.DataFrame) -> list[str]:
    """The manifest's files that are gone or whose size changed since it was made (a cheap ``stat`` each)."""
    def changed(path: str, size: int) -> bool:
        try:
            return os.stat(path).st_size != size
        except OSError:
            return True

    return [p for p, n in zip(manifest["path"], manifest["bytes"], strict=True) if changed(p, int(n))]


def check_fresh(manifest: pd.DataFrame, path: Path, dataset: str) -> pd.DataFrame:
    """``manifest`` unchanged, or a :class:`ManifestError` saying ``prepare --force`` when files are gone or
    changed since it was made (a rebuild would re-split, so it is never done behind the user's back)."""
    if stale := stale_files(manifest):
        raise ManifestError(
            f"{len(stale)} image(s) of {path} are missing or changed since it was made, e.g. {stale[0]}: "
            f"run `python -m utils prepare --dataset {dataset} --force` (runs trained before keep their own split)."
        )
    return manifest


def load_report(manifest_path: Path) -> dict:
    report = Path(manifest_path).parent / REPORT_NAME
    return json.loads(report.read_text()) if report.is_file() else {}


def take_images(manifest: pd.DataFrame, profile: Profile, seed: int) -> pd.DataFrame:
    """At most ``profile.images[split]`` images of each split, drawn with the class shares kept, order kept."""
    parts = []
    for split, rows in manifest.groupby("split", sort=False):
        limit = profile.images.get(split)
        if limit is None or len(rows) <= limit:
            parts.append(rows)
            continue
        shares = rows["label"].value_counts(normalize=True)
        for label, share in shares.items():
            of_label = rows[rows["label"] == label]
            parts.append(of_label.sample(max(1, round(limit * share)), random_state=seed))
    return manifest.loc[sorted(pd.concat(parts).index)]


@dataclass
class Prepared:
    """A dataset ready for training: its registry entry, manifest, class names and preparation report."""

    spec: DatasetSpec
    manifest: pd.DataFrame
    path: Path
    class_names: list[str]
    report: dict

    @property
    def name(self) -> str:
        return self.spec.name


def manifest_path(settings: Settings, dataset: str) -> Path:
    return settings.data_dir / dataset_dir_name(get_dataset(dataset)) / MANIFEST_NAME


def _raw_dir(settings: Settings, spec: DatasetSpec) -> Path:
    return settings.data_dir / "raw" / spec.raw_name


def resolve_dataset(settings: Settings) -> tuple[str, str]:
    """The dataset to use and why: CXR_DATASET, else Kermany when it is here, given as CXR_SOURCE or downloadable
    with Kaggle credentials, else the course's synthetic set."""
    if settings.dataset:
        get_dataset(settings.dataset)  # fail early on a typo
        return settings.dataset, "set by CXR_DATASET"
    if settings.source:
        return DEFAULT_DATASET, f"CXR_SOURCE={settings.source}"
    spec = get_dataset(DEFAULT_DATASET)
    if manifest_path(settings, DEFAULT_DATASET).exists() or (_raw_dir(settings, spec) / COMPLETE).exists():
        return DEFAULT_DATASET, "downloaded earlier"
    from .download import find_kaggle_credentials

    if find_kaggle_credentials() is not None:
        return DEFAULT_DATASET, "Kaggle credentials found: it will be downloaded"
    return "synthetic", "no Kermany download, no CXR_SOURCE and no Kaggle credentials"


def _fetch(spec: DatasetSpec, settings: Settings, source: Path | None) -> Path:
    if source is not None:
        return Path(source).expanduser().resolve()
    if spec.local_path is not None:
        return spec.local_path
    if spec.raw_name == "synthetic":
        from .synthetic import generate_synthetic

        return generate_synthetic(_raw_dir(settings, spec))
    from .download import download_dataset

    return download_dataset(spec, settings.data_dir)


def prepare_dataset(settings: Settings, dataset: str, *, force: bool = False) -> Prepared:
    """Get ``dataset`` and build its manifest, or reuse the one built earlier from the same source and seed (a
    :class:`ManifestError` saying ``--force`` when its files changed since). ``settings.source`` is an extracted
    archive to read instead of downloading."""
    spec = get_dataset(dataset)
    path = manifest_path(settings, dataset)
    report = load_report(path)
    source = settings.source
    if source is not None and not source.is_dir():
        raise DatasetError(f"Source {source} is {'a file' if source.is_file() else 'not there'}: give the folder of the extracted archive.")
    same = report.get("seed") == settings.seed and (source is None or report.get("source") == str(source))
    if path.is_file() and same and not force:
        manifest = check_fresh(load_manifest(path), path, dataset)
        return Prepared(spec, manifest, path, report["class_names"], report)
    manifest, report = build_manifest(spec, _fetch(spec, settings, source), path.parent, settings.seed)
    for line in report_problems(report):
        print(line)
    return Prepared(spec, manifest, path, report["class_names"], report)


def load_prepared(settings: Settings, dataset: str | None = None, *, limit: bool = True) -> Prepared:
    """The prepared dataset for a later notebook or command, capped to the profile's images (``limit``).

    Fails with the command to run when it was never prepared, or when files changed since."""
    name = dataset or settings.dataset
    if not name:
        raise ManifestError("No dataset given: set CXR_DATASET or pass --dataset (see notebook 01).")
    path = manifest_path(settings, name)
    manifest = check_fresh(load_manifest(path), path, name)
    report = load_report(path)
    manifest = take_images(manifest, settings.profile, settings.seed) if limit else manifest
    return Prepared(get_dataset(name), manifest, path, report.get("class_names") or sorted(set(manifest["label"])), report)

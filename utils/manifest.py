"""The manifest: one CSV per dataset that every notebook reads.

``build_manifest`` scans a dataset folder through the registry, checks that every image decodes (unreadable files
are listed in the report and left out, never silently), splits train/val by patient and writes
``manifest.csv`` (``path,label,split,patient_id,width,height,channels``) and ``prepare_report.json``.

Splitting rules:

- the official test split stays the test split (a dataset without one gets a patient-grouped test split);
- the official val split (16 images in Kermany) is merged back into train, and train/val are re-split about
  85/15, stratified by label and grouped by patient (``StratifiedGroupKFold``), with a fixed seed;
- byte-identical files are kept in one group, so a duplicate never straddles train and val; identical files
  across the final splits (e.g. train and the official test) are reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

from .config import SPLITS, Profile
from .datasets import DatasetSpec, ImageRecord, class_names, scan_images

MANIFEST_COLUMNS = ["path", "label", "split", "patient_id", "width", "height", "channels"]
MANIFEST_NAME = "manifest.csv"
REPORT_NAME = "prepare_report.json"


class ManifestError(FileNotFoundError):
    """A manifest is missing or malformed; the message names the step that creates it."""


@dataclass
class ImageCheck:
    """What decoding one file told us."""

    width: int = 0
    height: int = 0
    channels: int = 0
    sha1: str = ""
    error: str | None = None


@dataclass
class ManifestResult:
    """A written manifest, its path and the preparation report."""

    manifest: pd.DataFrame
    path: Path
    report: dict = field(default_factory=dict)


def check_image(path: Path) -> ImageCheck:
    """Decode ``path`` fully (JPEG in draft mode: every block is still decoded) and hash its bytes."""
    try:
        data = path.read_bytes()
        with Image.open(path) as image:
            width, height = image.size
            channels = len(image.getbands())
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, width // 4), max(1, height // 4)))
            image.load()
        return ImageCheck(width, height, channels, hashlib.sha1(data).hexdigest())
    except Exception as err:  # any decoder failure means the file is unusable
        return ImageCheck(error=f"{type(err).__name__}: {err}")


def check_images(paths: list[Path], workers: int | None = None) -> list[ImageCheck]:
    """:func:`check_image` over many files in a thread pool (Pillow decodes outside the GIL)."""
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_image, paths, chunksize=32))


def _duplicate_groups(patients: pd.Series, hashes: pd.Series) -> pd.Series:
    """Patient ids merged so that byte-identical files share one group (union-find over hash clusters)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, members in patients.groupby(hashes):
        ids = members.unique()
        for other in ids[1:]:
            parent[find(other)] = find(ids[0])
    return patients.map(find)


def _grouped_holdout(labels: pd.Series, groups: pd.Series, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a holdout of about ``fraction`` of the rows, stratified by label, grouped by ``groups``."""
    n_splits = max(2, round(1 / fraction))
    smallest = groups.groupby(labels).nunique().min()
    n_splits = int(max(2, min(n_splits, smallest)))
    if groups.nunique() < 2:
        return np.zeros(len(labels), dtype=bool)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" warnings on tiny datasets
        _, holdout = next(splitter.split(np.zeros(len(labels)), labels.to_numpy(), groups.to_numpy()))
    mask = np.zeros(len(labels), dtype=bool)
    mask[holdout] = True
    return mask


def assign_splits(
    frame: pd.DataFrame, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> pd.Series:
    """The ``split`` column: official test kept, train+val re-split by patient (needs ``official_split``,
    ``label``, ``patient_id`` and ``sha1`` columns)."""
    groups = _duplicate_groups(frame["patient_id"], frame["sha1"])
    split = pd.Series("train", index=frame.index, dtype=object)
    is_test = (frame["official_split"] == "test").to_numpy()
    if not is_test.any():
        is_test = _grouped_holdout(frame["label"], groups, test_fraction, seed)
    split[is_test] = "test"
    pool = ~is_test
    is_val = _grouped_holdout(frame.loc[pool, "label"], groups[pool], val_fraction, seed)
    split[frame.index[pool][is_val]] = "val"
    return split


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def patient_overlap(manifest: pd.DataFrame) -> dict[str, list[str]]:
    """Patient ids found in more than one split, per pair of splits (empty lists mean no leakage)."""
    sets = {s: set(manifest.loc[manifest["split"] == s, "patient_id"]) for s in SPLITS}
    return {f"{a}/{b}": sorted(sets[a] & sets[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]}


def build_manifest(
    spec: DatasetSpec,
    source: Path,
    out_dir: Path,
    *,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> ManifestResult:
    """Scan ``source`` as ``spec``, check every image, split by patient and write the manifest and report."""
    records: list[ImageRecord] = scan_images(spec, Path(source))
    checks = check_images([r.path for r in records])
    frame = pd.DataFrame(
        {
            "path": [r.path for r in records],
            "label": [r.label for r in records],
            "official_split": [r.official_split for r in records],
            "patient_id": [r.patient_id for r in records],
            "width": [c.width for c in checks],
            "height": [c.height for c in checks],
            "channels": [c.channels for c in checks],
            "sha1": [c.sha1 for c in checks],
            "error": [c.error for c in checks],
        }
    )
    unreadable = frame[frame["error"].notna()]
    frame = frame[frame["error"].isna()].reset_index(drop=True)
    frame["split"] = assign_splits(frame, seed, val_fraction, test_fraction)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = frame.assign(path=[_relative(p, out_dir) for p in frame["path"]])[MANIFEST_COLUMNS]
    manifest_path = out_dir / MANIFEST_NAME
    manifest.to_csv(manifest_path, index=False)

    duplicates = frame[frame.duplicated("sha1", keep=False)].groupby("sha1")
    across = [
        sorted(_relative(p, out_dir) for p in g["path"]) for _, g in duplicates if g["split"].nunique() > 1
    ]
    report = {
        "dataset": spec.name,
        "source": str(Path(source).resolve()),
        "seed": seed,
        "class_names": class_names(spec, records),
        "images": int(len(manifest)),
        "counts": {
            s: manifest[manifest["split"] == s]["label"].value_counts().sort_index().to_dict() for s in SPLITS
        },
        "patients": {s: int(manifest.loc[manifest["split"] == s, "patient_id"].nunique()) for s in SPLITS},
        "patient_overlap": patient_overlap(manifest),
        "unreadable": [
            {"path": str(p), "error": e} for p, e in zip(unreadable["path"], unreadable["error"], strict=True)
        ],
        "duplicate_files_across_splits": across,
        "duplicate_files_total": int(frame.duplicated("sha1").sum()),
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2))
    return ManifestResult(load_manifest(manifest_path), manifest_path, report)


def load_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest CSV and make its paths absolute; a missing file says how to create it."""
    path = Path(path)
    if not path.exists():
        dataset = path.parent.name
        raise ManifestError(
            f"No manifest at {path}. Run notebooks/01_download_data.ipynb first, or "
            f"`python -m utils prepare --dataset {dataset}`."
        )
    manifest = pd.read_csv(path, dtype={"patient_id": str, "label": str, "split": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"{path} is not a course manifest (missing columns {missing}); rebuild it with "
            f"`python -m utils prepare --force`."
        )
    base = path.parent
    manifest["path"] = [str((base / p).resolve()) if not os.path.isabs(p) else p for p in manifest["path"]]
    return manifest


def load_report(manifest_path: Path) -> dict:
    """The preparation report written beside a manifest ({} when absent)."""
    report = Path(manifest_path).parent / REPORT_NAME
    return json.loads(report.read_text()) if report.exists() else {}


def limit_per_class(manifest: pd.DataFrame, profile: Profile, seed: int = 42) -> pd.DataFrame:
    """At most ``profile.limit(split)`` images per class and split, drawn with a fixed seed, order kept."""
    parts = []
    for (split, _), rows in manifest.groupby(["split", "label"], sort=False):
        limit = profile.limit(split)
        parts.append(rows if limit is None or len(rows) <= limit else rows.sample(limit, random_state=seed))
    return manifest.loc[sorted(pd.concat(parts).index)] if parts else manifest


def split_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per class (rows) and split (columns), with patients and totals: the table notebooks show."""
    table = pd.crosstab(manifest["label"], manifest["split"], margins=True, margins_name="total")
    table = table.reindex(columns=[s for s in (*SPLITS, "total") if s in table.columns])
    patients = manifest.groupby("split")["patient_id"].nunique()
    table.loc["patients"] = [patients.get(s, manifest["patient_id"].nunique()) for s in table.columns]
    return table

"""From a dataset name to its manifest: pick the dataset, get its files (source, download or generator), build
the manifest once, and load it for the later notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .config import Settings
from .datasets import DatasetError, DatasetSpec, dataset_dir_name, get_dataset
from .manifest import MANIFEST_NAME, build_manifest, limit_per_class, load_manifest, load_report

DEFAULT_DATASET = "pneumonia"


@dataclass
class PreparedDataset:
    """A dataset ready for training: its registry entry, manifest, class names and preparation report."""

    spec: DatasetSpec
    manifest: pd.DataFrame
    manifest_path: Path
    class_names: list[str]
    report: dict

    @property
    def name(self) -> str:
        return self.spec.name


def manifest_path(settings: Settings, dataset: str) -> Path:
    """Where the manifest of ``dataset`` lives: ``<data dir>/<dataset>/manifest.csv``."""
    return settings.data_dir / dataset_dir_name(get_dataset(dataset)) / MANIFEST_NAME


def raw_dir(settings: Settings, spec: DatasetSpec) -> Path:
    """Where a download or generated dataset lands: ``<data dir>/raw/<raw name>``."""
    return settings.data_dir / "raw" / spec.raw_name


def resolve_dataset(settings: Settings) -> tuple[str, str]:
    """The dataset a run uses, and why: CXR_DATASET, else Kermany ``pneumonia`` when it is already here, given
    as CXR_SOURCE or downloadable with Kaggle credentials, else the embedded ``synthetic`` set."""
    if settings.dataset:
        get_dataset(settings.dataset)  # fail early on a typo
        return settings.dataset, "set by CXR_DATASET"
    spec = get_dataset(DEFAULT_DATASET)
    if settings.source:
        return DEFAULT_DATASET, f"CXR_SOURCE={settings.source}"
    if manifest_path(settings, DEFAULT_DATASET).exists() or (raw_dir(settings, spec) / ".complete").exists():
        return DEFAULT_DATASET, "downloaded earlier"
    from .download import find_kaggle_credentials

    if find_kaggle_credentials() is not None:
        return DEFAULT_DATASET, "Kaggle credentials found: it will be downloaded"
    return "synthetic", "no dataset downloaded, no CXR_SOURCE and no Kaggle credentials found"


def fetch_dataset(spec: DatasetSpec, settings: Settings, source: Path | None = None) -> Path:
    """The folder holding the dataset's images: ``source`` as given, the ``folder:`` path, the generated
    synthetic set, or the Kaggle download (made once; a complete download is reused)."""
    if source is not None:
        source = Path(source).expanduser()
        if not source.is_dir():
            raise DatasetError(
                f"Source folder {source} does not exist: give the folder of the extracted archive."
            )
        return source
    if spec.local_path is not None:
        return spec.local_path
    if spec.name == "synthetic":
        from .synthetic import generate_synthetic

        return generate_synthetic(raw_dir(settings, spec))
    from .download import download_dataset

    return download_dataset(spec, settings.data_dir)


def prepare_dataset(
    dataset: str, settings: Settings, *, source: Path | None = None, force: bool = False
) -> PreparedDataset:
    """Get ``dataset`` and build its manifest, or reuse the manifest built earlier with the same seed and source.

    ``source`` (or CXR_SOURCE) is an already extracted archive to read instead of downloading.
    """
    spec = get_dataset(dataset)
    source = source or settings.source
    path = manifest_path(settings, dataset)
    report = load_report(path)
    reusable = (
        path.exists()
        and not force
        and report.get("seed") == settings.seed
        and (source is None or report.get("source") == str(Path(source).resolve()))
    )
    if reusable:
        manifest = load_manifest(path)
    else:
        folder = fetch_dataset(spec, settings, source)
        result = build_manifest(spec, folder, path.parent, seed=settings.seed)
        manifest, report = result.manifest, result.report
    return PreparedDataset(
        spec, manifest, path, report.get("class_names") or sorted(manifest["label"].unique()), report
    )


def load_dataset(dataset: str, settings: Settings, *, limit: bool = True) -> PreparedDataset:
    """The prepared dataset for a later notebook, capped to the profile's images per class and split.

    Raises :class:`~utils.manifest.ManifestError` naming notebook 01 when the dataset was never prepared.
    """
    spec = get_dataset(dataset)
    path = manifest_path(settings, dataset)
    manifest = load_manifest(path)
    report = load_report(path)
    if limit:
        manifest = limit_per_class(manifest, settings.profile, settings.seed)
    names = report.get("class_names") or sorted(manifest["label"].unique())
    return PreparedDataset(spec, manifest, path, names, report)

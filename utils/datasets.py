"""The dataset registry: what each dataset is, where it comes from, and how its layout maps to labels and patients.

Every entry reads a class-per-folder tree, with or without ``train``/``val``/``test`` folders, through one scanner
(:func:`scan_images`); entries differ only in where the files come from, how a file's label is read and how its
patient is recognised.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
JUNK_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", ".ipynb_checkpoints"}
IGNORED_FOLDERS = {"masks", "mask"}

KERMANY_CITATION = (
    "Kermany D., Zhang K., Goldbaum M. (2018). Labeled Optical Coherence Tomography (OCT) and Chest X-Ray Images "
    "for Classification. Mendeley Data v2, doi:10.17632/rscbjbr9sj.2; Kermany et al., Cell 172(5), 2018, "
    "doi:10.1016/j.cell.2018.02.010."
)
COVID_CITATION = (
    "Chowdhury M.E.H. et al. (2020). Can AI help in screening viral and COVID-19 pneumonia? IEEE Access 8, "
    "doi:10.1109/ACCESS.2020.3010287; Rahman T. et al. (2021), Comput. Biol. Med. 132, "
    "doi:10.1016/j.compbiomed.2021.104319."
)


class DatasetError(ValueError):
    """A dataset name or folder layout the course cannot read; the message says what to do."""


@dataclass(frozen=True)
class ImageRecord:
    """One image found in a dataset folder, before validation and splitting."""

    path: Path
    label: str
    official_split: str | None
    patient_id: str


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry.

    ``label_of(class_folder, file_name)`` returns the label or None to leave the file out;
    ``patient_of(file_name, official_split)`` returns a patient id.
    """

    name: str
    title: str
    classes: tuple[str, ...] | None
    raw_name: str
    kaggle: str | None = None
    url: str = ""
    license: str = ""
    citation: str = ""
    min_images: dict[str, int] | None = None
    label_of: Callable[[str, str], str | None] = lambda folder, name: folder
    patient_of: Callable[[str, str | None], str] = lambda name, split: Path(name).stem
    local_path: Path | None = None

    @property
    def binary(self) -> bool:
        return self.classes is not None and len(self.classes) == 2


# --- Kermany (pneumonia / pneumonia3) -------------------------------------------------------------------------

_KERMANY_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)", re.IGNORECASE)


def kermany_patient_id(file_name: str, official_split: str | None = None) -> str:
    """Patient id from a Kermany file name (``person12_bacteria_3``, ``IM-0115-0001``, ``NORMAL2-IM-0012-0001``).

    The archive numbers patients separately in its train and test folders (the same ``personN`` in both is not
    the same child), so ids from the official test folder are prefixed ``test/`` to keep the namespaces apart.
    """
    stem = Path(file_name).stem
    match = _KERMANY_PATIENT.match(stem)
    patient = match.group(1) if match else stem
    return f"test/{patient}" if official_split == "test" else patient


def kermany_three_class(folder: str, file_name: str) -> str | None:
    """NORMAL from the NORMAL folder; BACTERIA or VIRUS from a PNEUMONIA file's name."""
    if folder.upper() == "NORMAL":
        return "NORMAL"
    lowered = file_name.lower()
    if "bacteria" in lowered:
        return "BACTERIA"
    if "virus" in lowered:
        return "VIRUS"
    return None


def _upper_folder(folder: str, file_name: str) -> str | None:
    return folder.upper() if folder.upper() in {"NORMAL", "PNEUMONIA"} else None


_KERMANY = dict(
    raw_name="chest-xray-pneumonia",
    kaggle="paultimothymooney/chest-xray-pneumonia",
    url="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    license="CC BY 4.0",
    citation=KERMANY_CITATION,
    min_images={"NORMAL": 1000, "PNEUMONIA": 3000},
    patient_of=kermany_patient_id,
)

REGISTRY: dict[str, DatasetSpec] = {
    "pneumonia": DatasetSpec(
        name="pneumonia",
        title="Kermany paediatric chest X-rays: NORMAL vs PNEUMONIA",
        classes=("NORMAL", "PNEUMONIA"),
        label_of=_upper_folder,
        **_KERMANY,
    ),
    "pneumonia3": DatasetSpec(
        name="pneumonia3",
        title="Kermany paediatric chest X-rays: NORMAL, BACTERIA, VIRUS",
        classes=("NORMAL", "BACTERIA", "VIRUS"),
        label_of=kermany_three_class,
        **{**_KERMANY, "min_images": {"NORMAL": 1000, "BACTERIA": 2000, "VIRUS": 1000}},
    ),
    "covid19-radiography": DatasetSpec(
        name="covid19-radiography",
        title="COVID-19 Radiography Database",
        classes=("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"),
        raw_name="covid19-radiography-database",
        kaggle="tawsifurrahman/covid19-radiography-database",
        url="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        license="see the Kaggle page (research use; cite the authors)",
        citation=COVID_CITATION,
        min_images={"COVID": 3000, "Lung_Opacity": 5000, "Normal": 10000, "Viral Pneumonia": 1000},
    ),
    "cxr6": DatasetSpec(
        name="cxr6",
        title="Chest X-ray, 6 classes",
        classes=None,
        raw_name="chest-x-ray-6-classes-dataset",
        kaggle="mohamedasak/chest-x-ray-6-classes-dataset",
        url="https://www.kaggle.com/datasets/mohamedasak/chest-x-ray-6-classes-dataset",
        license="see the Kaggle page",
        citation="See the dataset's Kaggle page for its sources.",
    ),
    "synthetic": DatasetSpec(
        name="synthetic",
        title="Synthetic chest-X-ray-like images with lesion masks (generated locally)",
        classes=("NORMAL", "BACTERIA", "VIRUS"),
        raw_name="synthetic",
        label_of=kermany_three_class,
        patient_of=kermany_patient_id,
        license="generated by this course (CC0)",
        citation="Generated by utils.synthetic; not real patients.",
    ),
}


def registry_table() -> pd.DataFrame:
    """The registry as a table: name, title, classes, source, licence (for notebook 01 and the README)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "name": s.name,
                "title": s.title,
                "classes": ", ".join(s.classes) if s.classes else "the folders found",
                "source": f"Kaggle {s.kaggle}" if s.kaggle else "generated locally",
                "licence": s.license,
            }
            for s in REGISTRY.values()
        ]
    ).set_index("name")


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry called ``name``; ``folder:PATH`` reads any class-per-folder tree at PATH."""
    if name.startswith("folder:"):
        path = Path(name.split(":", 1)[1]).expanduser().resolve()
        if not path.is_dir():
            raise DatasetError(
                f"folder:{path} is not a folder. Give a class-per-folder tree, e.g. folder:/data/xr."
            )
        return DatasetSpec(
            name=f"folder:{path}",
            title=f"Images under {path}",
            classes=None,
            raw_name=path.name,
            local_path=path,
            citation="Your own images.",
        )
    if name not in REGISTRY:
        choices = ", ".join([*REGISTRY, "folder:PATH"])
        raise DatasetError(f"Unknown dataset {name!r}: choose one of {choices}.")
    return REGISTRY[name]


def dataset_dir_name(spec: DatasetSpec) -> str:
    """Folder name under the data directory for this dataset's manifest (``folder:`` entries get a safe name)."""
    if spec.local_path is not None:
        return "folder-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.local_path.name)
    return spec.name


# --- Layout scanning --------------------------------------------------------------------------------------------


def _is_junk(path: Path) -> bool:
    return path.name in JUNK_NAMES or path.name.startswith("._") or path.name.startswith(".")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_junk(p))


def _split_folders(folder: Path) -> dict[str, Path]:
    return {SPLIT_ALIASES[p.name.lower()]: p for p in _subfolders(folder) if p.name.lower() in SPLIT_ALIASES}


def find_dataset_root(folder: Path) -> Path:
    """Descend through wrapper folders (``chest_xray/``, ``COVID-19_Radiography_Dataset/``) to the tree's root.

    The root is the first folder that holds split folders or more than one non-junk subfolder. Archive junk
    (``__MACOSX``, ``.DS_Store``) is ignored, and so is the nested duplicate ``chest_xray/chest_xray`` of the
    Kermany zip, because the scan stops at the first folder with split folders.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder: point --source / CXR_SOURCE at the extracted archive.")
    while True:
        if _split_folders(folder):
            return folder
        children = _subfolders(folder)
        if len(children) != 1:
            return folder
        folder = children[0]


def _images_under(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        parts = path.relative_to(folder).parts
        if any(_is_junk(Path(p)) or p.lower() in IGNORED_FOLDERS for p in parts):
            continue
        yield path


def scan_images(spec: DatasetSpec, folder: Path) -> list[ImageRecord]:
    """Every image of ``spec`` under ``folder``, with its label, official split (or None) and patient id.

    Raises :class:`DatasetError` with the expected layout when no class folders with images are found.
    """
    root = find_dataset_root(folder)
    splits = _split_folders(root) or {None: root}
    records: list[ImageRecord] = []
    for split, split_root in splits.items():
        for class_dir in _subfolders(split_root):
            if class_dir.name.lower() in IGNORED_FOLDERS:
                continue
            for path in _images_under(class_dir):
                label = spec.label_of(class_dir.name, path.name)
                if label is None:
                    continue
                records.append(ImageRecord(path, label, split, spec.patient_of(path.name, split)))
    if not records:
        raise DatasetError(
            f"No images found in class folders under {root}. Expected a layout like "
            f"{root}/train/<CLASS>/*.jpeg and {root}/test/<CLASS>/*.jpeg, or {root}/<CLASS>/*.png."
        )
    if spec.classes is not None:
        missing = sorted(set(spec.classes) - {r.label for r in records})
        if missing:
            raise DatasetError(
                f"{spec.name}: no images for class(es) {', '.join(missing)} under {root}. "
                f"Expected class folders for {', '.join(spec.classes)}: is this the right archive?"
            )
    return records


def class_names(spec: DatasetSpec, records: list[ImageRecord] | None = None) -> list[str]:
    """The dataset's classes in a fixed order: the registry's, else the folder names found, sorted."""
    if spec.classes is not None:
        return list(spec.classes)
    return sorted({r.label for r in records or []})

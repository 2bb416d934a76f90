"""How fast can images reach the model? Images/s of the course pipeline against the loader the seeds used.

The seeds' loader was Keras 2's ``ImageDataGenerator.flow_from_directory``: a Python loop that opens each image
with PIL as RGB, resizes it, draws one random affine map (rotation, zoom, shift) and applies it per channel
with ``scipy.ndimage.affine_transform``, then scales to [0, 1]. Keras 3 dropped it, so :func:`seeds_loader`
re-does that algorithm (``pil_affine=True`` applies the map with Pillow instead: a faster, generous variant).
``benchmarks/pipeline.py`` and notebook 03 both measure with these functions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd


def random_affine(rng: np.random.Generator, size: int) -> tuple[float, float, float, float]:
    """The seeds' random transform: rotation +-5 degrees, zoom +-10 %, shift +-5 % as (angle, zoom, tx, ty)."""
    shift = 0.05 * size
    return rng.uniform(-5, 5), rng.uniform(0.9, 1.1), rng.uniform(-shift, shift), rng.uniform(-shift, shift)


def inverse_matrix(angle: float, zoom: float, tx: float, ty: float, size: int) -> np.ndarray:
    """3x3 matrix mapping an output pixel (row, col) to its input pixel; rotation and zoom about the centre."""
    a = math.radians(angle)
    centre = (size - 1) / 2
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    move = np.array([[zoom, 0, ty], [0, zoom, tx], [0, 0, 1]])
    to_centre = np.array([[1, 0, centre], [0, 1, centre], [0, 0, 1]])
    from_centre = np.array([[1, 0, -centre], [0, 1, -centre], [0, 0, 1]])
    return to_centre @ rot @ move @ from_centre


def seeds_loader(
    paths: Sequence[str], size: int, batch: int, pil_affine: bool = False, seed: int = 0
) -> Iterator[tuple[np.ndarray, None]]:
    """One epoch of the seeds' per-image Python loop, shuffled: batches of float32 (B, size, size, 3) in [0, 1]."""
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    for start in range(0, len(paths), batch):
        images = []
        for i in order[start : start + batch]:
            image = Image.open(paths[i]).convert("RGB").resize((size, size), Image.NEAREST)
            m = inverse_matrix(*random_affine(rng, size), size)
            if pil_affine:  # Pillow wants (x, y) = (col, row) coefficients
                coeffs = (m[1, 1], m[1, 0], m[1, 2], m[0, 1], m[0, 0], m[0, 2])
                x = np.asarray(image.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR))
                x = x.astype(np.float32)
            else:
                x = np.asarray(image, dtype=np.float32)
                x = np.stack(
                    [
                        ndimage.affine_transform(x[..., c], m[:2, :2], m[:2, 2], order=1, mode="nearest")
                        for c in range(3)
                    ],
                    axis=-1,
                )
            images.append(x / 255.0)
        yield np.stack(images), None


def timed_epoch(batches: Iterable, expected: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads) to run through ``batches``, which must hold ``expected`` images."""
    start, cpu, count = time.perf_counter(), time.process_time(), 0
    for images, _ in batches:
        count += len(images)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if count != expected:
        raise RuntimeError(f"A loader gave {count} images, expected {expected}.")
    return seconds, cpu


def compare_loaders(
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    image_size: int,
    batch_size: int = 32,
    split: str = "train",
    cached_epochs: int = 2,
) -> pd.DataFrame:
    """Images/s of one epoch of the seeds' loader and of :func:`utils.pipeline.make_dataset` with augmentation
    (its first, uncached epoch, then ``cached_epochs`` cached ones) on the same images of ``split``.

    Returns a table with ``loader``, ``images/s`` and ``x seeds`` (speed relative to the seeds' loader).
    """
    from .pipeline import make_dataset

    rows = manifest[manifest["split"] == split]
    paths = rows["path"].astype(str).tolist()
    if not paths:
        raise ValueError(f"No {split!r} images in the manifest.")
    n = len(paths)
    for path in paths:  # every loader finds the files in the OS cache
        with open(path, "rb") as handle:
            handle.read()
    seeds, _ = timed_epoch(seeds_loader(paths, image_size, batch_size), n)
    ours = make_dataset(
        rows, split, class_names, image_size=image_size, batch_size=batch_size, training=True, augment=True
    )
    first, _ = timed_epoch(ours, n)
    cached = min(timed_epoch(ours, n)[0] for _ in range(max(cached_epochs, 1)))
    table = pd.DataFrame(
        {
            "loader": [
                "seeds' loader (PIL + scipy affine, as ImageDataGenerator)",
                "course pipeline, first epoch (decode + augment)",
                "course pipeline, cached epoch (augment only)",
            ],
            "images/s": [n / seeds, n / first, n / cached],
        }
    )
    table["x seeds"] = table["images/s"] / table["images/s"].iloc[0]
    table.attrs["images"] = n
    return table.round(1)

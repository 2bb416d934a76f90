"""The loader the seeds used, as a baseline for ``benchmarks/pipeline.py``: Keras 2's ``ImageDataGenerator``.

Its ``flow_from_directory`` was a Python loop: open each image with PIL as RGB, resize it (nearest neighbour),
draw one random affine map (rotation +-5 degrees, zoom +-10 %, shift +-5 %) and apply it per channel with
``scipy.ndimage.affine_transform`` (order 1), then scale to [0, 1]. Keras 3 dropped it, so :func:`seeds_loader`
re-does that algorithm; ``pil_affine=True`` applies the map with Pillow on the 8-bit image instead (a faster,
generous variant).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np


def inverse_matrix(angle: float, zoom: float, tx: float, ty: float, size: int) -> np.ndarray:
    """3x3 matrix mapping an output pixel (row, col) to its input pixel; rotation and zoom about the centre."""
    a, c = math.radians(angle), (size - 1) / 2
    rotate = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    move = np.array([[zoom, 0, ty], [0, zoom, tx], [0, 0, 1]])
    return np.array([[1, 0, c], [0, 1, c], [0, 0, 1]]) @ rotate @ move @ np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1]])


def seeds_loader(
    paths: Sequence[str], size: int, batch: int, pil_affine: bool = False, seed: int = 0
) -> Iterator[tuple[np.ndarray, None]]:
    """One shuffled epoch of the seeds' per-image loop: batches of float32 ``(B, size, size, 3)`` in [0, 1]."""
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    for start in range(0, len(paths), batch):
        images = []
        for i in order[start : start + batch]:
            image = Image.open(paths[i]).convert("RGB").resize((size, size), Image.NEAREST)
            shift = 0.05 * size
            m = inverse_matrix(rng.uniform(-5, 5), rng.uniform(0.9, 1.1), *rng.uniform(-shift, shift, 2), size)
            if pil_affine:  # Pillow wants (x, y) = (col, row) coefficients
                coeffs = (m[1, 1], m[1, 0], m[1, 2], m[0, 1], m[0, 0], m[0, 2])
                x = np.asarray(image.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR), np.float32)
            else:
                x = np.asarray(image, dtype=np.float32)
                x = np.stack(
                    [ndimage.affine_transform(x[..., c], m[:2, :2], m[:2, 2], order=1, mode="nearest") for c in range(3)],
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

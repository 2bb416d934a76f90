"""The seeds' loader re-implementation and the loader comparison that notebook 03 and the benchmark show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils.throughput import compare_loaders, inverse_matrix, seeds_loader, timed_epoch


def write_images(tmp_path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = ("NORMAL", "PNEUMONIA")[i % 2]
        path = tmp_path / label / f"{i}.jpeg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "label": label, "split": "train"})
    return pd.DataFrame(rows)


def test_identity_transform_maps_pixels_to_themselves():
    m = inverse_matrix(0.0, 1.0, 0.0, 0.0, size=10)
    np.testing.assert_allclose(m, np.eye(3), atol=1e-12)
    # a 90 degree rotation about the centre keeps the centre fixed
    centre = np.array([4.5, 4.5, 1.0])
    np.testing.assert_allclose(inverse_matrix(90.0, 1.0, 0.0, 0.0, size=10) @ centre, centre, atol=1e-12)


@pytest.mark.parametrize("pil_affine", [False, True])
def test_seeds_loader_yields_every_image_once_as_rgb_in_unit_range(tmp_path, pil_affine):
    paths = write_images(tmp_path, 5)["path"].tolist()
    batches = [images for images, _ in seeds_loader(paths, 16, batch=2, pil_affine=pil_affine)]
    assert [len(b) for b in batches] == [2, 2, 1]
    images = np.concatenate(batches)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_timed_epoch_checks_the_image_count():
    batches = [(np.zeros((3, 2)), None), (np.zeros((2, 2)), None)]
    seconds, cpu = timed_epoch(batches, 5)
    assert seconds >= 0 and cpu >= 0
    with pytest.raises(RuntimeError, match="gave 5 images, expected 6"):
        timed_epoch(batches, 6)


def test_compare_loaders_reports_positive_rates_relative_to_the_seeds(tmp_path):
    manifest = write_images(tmp_path, 6)
    table = compare_loaders(manifest, ["NORMAL", "PNEUMONIA"], image_size=16, batch_size=4, cached_epochs=1)
    assert len(table) == 3 and table.attrs["images"] == 6
    assert (table["images/s"] > 0).all()
    assert table["x seeds"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="No 'test' images"):
        compare_loaders(manifest, ["NORMAL", "PNEUMONIA"], image_size=16, split="test")

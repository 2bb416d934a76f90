"""Deployment size and speed: a Keras model against its exported copies (``utils/deploy.py``, notebook 11).

Usage (from the repository root)::

    python benchmarks/export.py [--models cnn mobilenet_025] [--image-size 224] [--seconds 2]

Each model is built with RANDOM weights (size and speed do not depend on the values; no training, no download)
and exported with ``utils.deploy.export_model`` into a temporary folder: SavedModel, LiteRT float32, LiteRT int8
(dynamic-range quantised weights) and ONNX (from the SavedModel). Keras is the same model saved as ``.keras``.
Per format, on the CPU:

- file size (MB; a SavedModel is a folder: all its files);
- load time: a fresh load of the file and its first inference (one image), in seconds;
- images/s at batch 1 and at batch 32: calls repeated for ``--seconds`` after one warm-up call, best of 2 windows.
  Keras runs ``predict_on_batch`` (its compiled predict step without ``predict``'s per-call setup); the others
  run through ``utils.deploy.load_predictor``: TensorFlow, LiteRT's interpreter (XNNPACK, all cores) and ONNX
  Runtime (CPU provider), each with its default threads.

Ratios are to Keras (x 2.0 = twice as fast / twice as large). Prints one table, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def size_mb(path: Path) -> float:
    return (sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size) / 1e6


def images_per_second(predict, images, seconds: float) -> float:
    """Best throughput of two windows of ``seconds`` each, after one warm-up call."""
    predict(images)
    best = 0.0
    for _ in range(2):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
            predict(images)
            calls += 1
        best = max(best, calls * len(images) / elapsed)
    return best


def measure(name: str, image_size: int, seconds: float, folder: Path) -> list[dict]:
    import keras
    import numpy as np

    from utils.deploy import export_model, load_predictor
    from utils.models import BACKBONES, build_cnn, build_transfer_model

    keras.utils.set_random_seed(0)
    model = build_cnn(2, image_size) if name == "cnn" else build_transfer_model(BACKBONES[name], 2, image_size, None)
    model.save(folder / "model.keras")
    files = {"keras": folder / "model.keras", **export_model(model, folder)}
    batches = {b: np.random.default_rng(b).uniform(0, 255, (b, image_size, image_size, 3)).astype(np.float32) for b in (1, 32)}
    rows = []
    for fmt, path in files.items():
        start = time.perf_counter()
        if fmt == "keras":
            loaded = keras.models.load_model(path, compile=False)
            predict = loaded.predict_on_batch
        else:
            predict = load_predictor(path)
        predict(batches[1])
        load_s = time.perf_counter() - start
        speed = {b: images_per_second(predict, x, seconds) for b, x in batches.items()}
        rows.append({"model": name, "format": fmt, "MB": size_mb(path), "load s": load_s, "b1": speed[1], "b32": speed[32]})
        print(f"  {name} {fmt}: done", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_025"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing window")
    args = parser.parse_args()

    from utils.course.runtime import quiet_libraries

    quiet_libraries()
    import pandas as pd

    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows += measure(name, args.image_size, args.seconds, Path(tmp))
    table = pd.DataFrame(rows)
    keras_rows = table[table["format"] == "keras"].set_index("model")
    for column, ratio in (("MB", "size x"), ("b1", "b1 x"), ("b32", "b32 x")):
        table[ratio] = table[column] / table["model"].map(keras_rows[column])
    table = table.rename(columns={"b1": "img/s b1", "b32": "img/s b32"})
    print(f"Export formats, RANDOM weights, {args.image_size} px, CPU ({os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}); x = ratio to Keras")  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()

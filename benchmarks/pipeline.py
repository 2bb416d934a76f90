"""Input-pipeline speed: images/s of ``utils.pipeline.make_dataset`` against the seeds' loader and raw decoding.

Usage (from the repository root)::

    python benchmarks/pipeline.py [--n 2000] [--image-size 224] [--batch-size 32] [--repeats 3] [--source DIR]

All loaders read the same N JPEGs (``DIR/<CLASS>/*.jpeg``, default ``../shared/data/chest_xray_224/train``); the
files are read once beforehand so that every loader finds them in the OS cache. Measured per epoch:

1. raw decode: ``read_file + decode_jpeg(channels=1) + tf.image.resize`` in a parallel tf.data map, batched,
   nothing else: the ceiling for a first epoch; (1b) the same plus the 3-channel float32 batch every model
   input needs (the one step our pipeline must add);
2. the seeds' loader: Keras 3 has no ``ImageDataGenerator``, so its algorithm is re-done in a Python loop (PIL
   load as RGB + resize, random rotation +-5 deg / zoom +-10 % / shift +-5 % as ONE affine map applied with
   ``scipy.ndimage.affine_transform`` per channel, order 1, as ``ImageDataGenerator.apply_transform`` did, /255);
   (2b) the same map applied by Pillow on the 8-bit image: a faster, generous stand-in for the seeds;
3. ``make_dataset(training=True, augment=True)``: the first (uncached) epoch, then 3 cached epochs;
   (3b) the first epoch without augmentation, to compare with raw decode.

Every loader runs ``--repeats`` times, interleaved, and the best run counts (other processes on the machine
slow runs down at random; the load average is printed). The process's CPU time per image (all threads) is
printed too: it barely depends on other processes. Projected 10-epoch time: seeds = 10 x one epoch (no
cache); ours = first epoch + 9 x a cached epoch. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "chest_xray_224" / "train"
GOALS = "goals: 10-epoch >= 5x the seeds' loader; first epoch >= 80% of raw decode"


def find_jpegs(source: Path, n: int) -> list[Path]:
    """N JPEGs spread evenly over the sorted file list (so every class is represented)."""
    files = sorted(p for p in source.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg"})
    if len(files) > n:
        files = [files[round(i * len(files) / n)] for i in range(n)]
    return files


def load() -> str:
    """The 1-minute load average (other processes slow every loader down)."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def raw_decode(paths: list[str], size: int, batch: int, model_format: bool):
    """Decode + resize only; ``model_format`` adds what every model input needs: 3 channels, float32."""
    import tensorflow as tf

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=1)
        return tf.image.resize(image, [size, size]), 0

    ds = tf.data.Dataset.from_tensor_slices(paths).map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    if model_format:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def run(args: argparse.Namespace) -> None:
    import keras
    import pandas as pd
    import tensorflow as tf

    from utils.pipeline import make_dataset
    from utils.throughput import seeds_loader
    from utils.throughput import timed_epoch as timed

    files = find_jpegs(args.source, args.n)
    paths = [str(p) for p in files]
    for p in files:  # warm the OS file cache for every loader alike
        p.read_bytes()
    manifest = pd.DataFrame({"path": paths, "label": [p.parent.name for p in files], "split": "train"})
    class_names = sorted(manifest["label"].unique())
    size, batch, n = args.image_size, args.batch_size, len(paths)
    print(f"{n} JPEGs from {args.source}, {size} px, batch {batch}, best of {args.repeats} runs")
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores, load {load()}"
    )
    if hasattr(getattr(keras.preprocessing, "image", None), "ImageDataGenerator"):
        print("note: this Keras has ImageDataGenerator; its re-implementation below is measured anyway")

    def ours(augment: bool):
        return make_dataset(
            manifest, "train", class_names, image_size=size, batch_size=batch, training=True, augment=augment
        )

    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for repeat in range(args.repeats):
        runs["raw"].append(timed(raw_decode(paths, size, batch, model_format=False), n))
        runs["raw_format"].append(timed(raw_decode(paths, size, batch, model_format=True), n))
        runs["seeds"].append(timed(seeds_loader(paths, size, batch, pil_affine=False, seed=repeat), n))
        runs["seeds_pil"].append(timed(seeds_loader(paths, size, batch, pil_affine=True, seed=repeat), n))
        dataset = ours(augment=True)
        runs["first"].append(timed(dataset, n))
        runs["cached"] += [timed(dataset, n) for _ in range(3)]
        runs["first_plain"].append(timed(ours(augment=False), n))
    best = {key: min(wall for wall, _ in times) for key, times in runs.items()}
    cpu = {key: min(c for _, c in times) for key, times in runs.items()}

    print(f"\nper epoch: images/s (best run; median run), CPU ms per image (least), load {load()}:")
    for key, label in [
        ("raw", "(1) raw decode: decode_jpeg + resize"),
        ("raw_format", "(1b) raw decode + batch, 3 channels float32"),
        ("seeds", "(2) seeds' loader (scipy.ndimage, as IDG)"),
        ("seeds_pil", "(2b) seeds' loader, Pillow affine variant"),
        ("first", "(3) ours, first (uncached) epoch, augment"),
        ("cached", "(4) ours, cached epochs, augment"),
        ("first_plain", "(3b) ours, first (uncached) epoch, no augment"),
    ]:
        median = statistics.median(wall for wall, _ in runs[key])
        print(f"  {label:<48} {n / best[key]:7.0f}  ({n / median:5.0f})  {1000 * cpu[key] / n:6.2f} ms")

    ours_10 = best["first"] + 9 * best["cached"]
    print("\nprojected 10 epochs with augmentation (seeds: 10 x one epoch; ours: first + 9 x cached):")
    for key, label in [("seeds", "seeds' loader (scipy, as IDG)"), ("seeds_pil", "seeds' loader (Pillow)")]:
        print(
            f"  {label:<30} {10 * best[key]:7.1f} s   ours {ours_10:6.1f} s   speed-up {10 * best[key] / ours_10:5.1f}x"
        )
    ours_cpu = cpu["first"] + 9 * cpu["cached"]
    print("  CPU time instead (robust to other processes; ours uses all cores, the seeds' loop one):")
    for key, label in [("seeds", "seeds' loader (scipy, as IDG)"), ("seeds_pil", "seeds' loader (Pillow)")]:
        print(
            f"  {label:<30} {10 * cpu[key]:7.1f} s   ours {ours_cpu:6.1f} s   ratio    {10 * cpu[key] / ours_cpu:5.1f}x"
        )
    print("first epoch rate / raw decode rate:")
    for key, label in [("first_plain", "no augmentation"), ("first", "with augmentation")]:
        print(
            f"  {label:<18} vs (1) {best['raw'] / best[key]:5.0%}   vs (1b) {best['raw_format'] / best[key]:5.0%}"
            f"   (CPU time: vs (1) {cpu['raw'] / cpu[key]:4.0%}, vs (1b) {cpu['raw_format'] / cpu[key]:4.0%})"
        )
    print(GOALS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs (default 2000)")
    parser.add_argument("--image-size", type=int, default=224, help="square side S in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each loader; the best counts (default 3)"
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder with <CLASS>/*.jpeg")
    args = parser.parse_args(argv)
    if not args.source.is_dir() or not find_jpegs(args.source, 1):
        print(f"Skipped: no <CLASS>/*.jpeg images under {args.source} (pass --source DIR).")
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

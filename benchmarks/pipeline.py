"""Input-pipeline speed: images/s of the course's ``utils.data.make_dataset`` against the seeds' loader.

Usage (from the repository root)::

    python benchmarks/pipeline.py [--source synthetic|shared|DIR] [--n 2000] [--image-size 224]
                                  [--batch-size 32] [--repeats 3] [--quick]

``--source``: ``synthetic`` (default: the course's synthetic set, generated into a temporary folder, 330 training
PNGs), ``shared`` (the real Kermany JPEGs in ``../shared/data/chest_xray_224``; skipped with a message when
absent) or any Kermany-layout folder. Up to N training images, spread evenly over the sorted file list, are read
once beforehand so that every loader finds them in the OS cache. Measured per epoch:

1. raw decode: ``read_file + decode_image(channels=1) + resize`` in a parallel tf.data map, batched, nothing
   else: the ceiling for a first epoch; (1b) the same plus the 3-channel float32 batch every model takes;
2. the seeds' loader (``benchmarks/seeds_loader.py``: ``ImageDataGenerator``'s per-image loop, PIL + SciPy
   affine); (2b) the same with a Pillow affine, a faster, generous stand-in for the seeds;
3. ``make_dataset(training=True)`` (decode, cache, shuffle, augment): its first (uncached) epoch, then
   (4) 3 cached epochs; (3b) the first epoch of ``make_dataset(training=False)`` (no augmentation).

Every loader runs ``--repeats`` times, interleaved, and the best run counts (other processes slow runs down at
random; the load average is printed), with the process's CPU time per image (all threads), which barely depends on
other processes. Projected 10 epochs: seeds = 10 x one epoch (no cache); ours = first + 9 x a cached epoch.
``--quick``: 32 images, one run of each (for the tests). Prints a Markdown table, asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED_SOURCE = ROOT.parent / "shared" / "data" / "chest_xray_224"
LOADERS = {
    "raw": "(1) raw decode: decode_image + resize",
    "raw_format": "(1b) raw decode + 3-channel float32 batch",
    "seeds": "(2) seeds' loader (PIL + SciPy affine, as IDG)",
    "seeds_pil": "(2b) seeds' loader, Pillow affine variant",
    "first": "(3) course pipeline, first epoch, augmented",
    "cached": "(4) course pipeline, cached epoch, augmented",
    "first_plain": "(3b) course pipeline, first epoch, no augment",
}


def training_images(source: Path, n: int) -> list[tuple[str, str]]:
    """``(path, label)`` of up to N training images of a Kermany-layout folder, spread over the sorted list."""
    from utils.course.datasets import get_dataset, scan_images

    records, _ = scan_images(get_dataset("pneumonia"), source)
    files = sorted((str(r.path), r.label) for r in records if r.official_split in ("train", None))
    return [files[i * len(files) // n] for i in range(n)] if len(files) > n else files


def load() -> str:
    """The 1-minute load average (other processes slow every loader down)."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def raw_decode(paths: list[str], size: int, batch: int, model_format: bool):
    """Decode + resize only; ``model_format`` adds what every model input needs: 3 channels, float32."""
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
        return tf.image.resize(image, [size, size]), 0

    ds = tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
    if model_format:
        ds = ds.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def measure(files: list[tuple[str, str]], size: int, batch: int, repeats: int, cached_epochs: int) -> dict:
    """``{loader: [(wall s, CPU s) per epoch]}`` for every loader of :data:`LOADERS`, on the same images."""
    import pandas as pd

    from benchmarks.seeds_loader import seeds_loader, timed_epoch
    from utils.data import make_dataset

    paths = [p for p, _ in files]
    for path in paths:  # warm the OS file cache for every loader alike
        Path(path).read_bytes()
    manifest = pd.DataFrame({"path": paths, "label": [label for _, label in files], "split": "train"})
    class_names = sorted(manifest["label"].unique())
    n = len(paths)

    def ours(training: bool):
        return make_dataset(manifest, "train", class_names, image_size=size, batch_size=batch, training=training)

    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for repeat in range(repeats):
        runs["raw"].append(timed_epoch(raw_decode(paths, size, batch, model_format=False), n))
        runs["raw_format"].append(timed_epoch(raw_decode(paths, size, batch, model_format=True), n))
        runs["seeds"].append(timed_epoch(seeds_loader(paths, size, batch, pil_affine=False, seed=repeat), n))
        runs["seeds_pil"].append(timed_epoch(seeds_loader(paths, size, batch, pil_affine=True, seed=repeat), n))
        dataset = ours(training=True)
        runs["first"].append(timed_epoch(dataset, n))
        runs["cached"] += [timed_epoch(dataset, n) for _ in range(cached_epochs)]
        runs["first_plain"].append(timed_epoch(ours(training=False), n))
    return runs


def report(runs: dict, n: int) -> None:
    best = {key: min(wall for wall, _ in times) for key, times in runs.items()}
    cpu = {key: min(c for _, c in times) for key, times in runs.items()}
    print("\n| loader | images/s (best) | images/s (median) | CPU ms/image |\n|---|---|---|---|")
    for key, label in LOADERS.items():
        median = statistics.median(wall for wall, _ in runs[key])
        print(f"| {label} | {n / best[key]:.0f} | {n / median:.0f} | {1000 * cpu[key] / n:.2f} |")
    ours, ours_cpu = best["first"] + 9 * best["cached"], cpu["first"] + 9 * cpu["cached"]
    print(f"\nprojected 10 augmented epochs (seeds: 10 x one epoch; ours: first + 9 x cached), load {load()}:")
    for key, label in [("seeds", "seeds' loader (SciPy, as IDG)"), ("seeds_pil", "seeds' loader (Pillow)")]:
        print(f"  {label:<30} {10 * best[key]:7.1f} s, ours {ours:6.1f} s: speed-up {10 * best[key] / ours:5.1f}x "
              f"({10 * cpu[key] / ours_cpu:4.1f}x in CPU time)")  # fmt: skip
    for key, label in [("first_plain", "no augmentation"), ("first", "with augmentation")]:
        print(f"  first epoch {label:<18} at {best['raw'] / best[key]:4.0%} of raw decode, "
              f"{best['raw_format'] / best[key]:4.0%} of (1b)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="synthetic", help="synthetic (default), shared, or a Kermany-layout DIR")
    parser.add_argument("--n", type=int, default=2000, help="at most N training images (default 2000)")
    parser.add_argument("--image-size", type=int, default=224, help="square side S in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loader; the best counts (default 3)")
    parser.add_argument("--quick", action="store_true", help="32 images, one run of each loader (for tests)")
    args = parser.parse_args(argv)
    n, repeats, cached = (min(args.n, 32), 1, 1) if args.quick else (args.n, args.repeats, 3)

    source = None if args.source == "synthetic" else Path(SHARED_SOURCE if args.source == "shared" else args.source)
    if source is not None and not source.expanduser().is_dir():
        print(f"Skipped: no folder of images at {source} (pass --source synthetic, shared or DIR).")
        return 0

    from utils.course.runtime import quiet_libraries
    from utils.course.synthetic import CLASSES, COUNTS, generate_synthetic

    tf = quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        what = "the course's synthetic set" if source is None else str(source)
        if source is None:  # --quick needs 32 training images of the 330
            counts = {s: {c: 12 if s == "train" else 1 for c in CLASSES} for s in COUNTS} if args.quick else COUNTS
            source = generate_synthetic(Path(tmp) / "synthetic", counts)
        source = source.expanduser()
        files = training_images(source, n)
        print(f"{len(files)} training images of {what}, {args.image_size} px, batch {args.batch_size}, best of "
              f"{repeats} run(s); TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load {load()}")  # fmt: skip
        runs = measure(files, args.image_size, args.batch_size, repeats, cached)
    report(runs, len(files))
    return 0


if __name__ == "__main__":
    sys.exit(main())

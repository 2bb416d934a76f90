"""Command-line subcommands over trained models: ``train``, ``evaluate``, ``predict`` and ``results``.

They share the notebooks' functions (:mod:`utils.experiment`, :mod:`utils.training`, :mod:`utils.evaluation`,
:mod:`utils.report`); TensorFlow is imported only when a command needs it.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from .config import PROFILES, SPLITS


class CommandError(ValueError):
    """A mistake in what a command was asked to do (unknown model, wrong classes, missing split)."""


class ImageError(CommandError):
    """An image given on the command line is missing or cannot be decoded."""


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def _quiet_tensorflow() -> None:
    """Import TensorFlow without its start-up log lines (CUDA probing on a CPU machine)."""
    from .runtime import import_tensorflow

    import_tensorflow()


# --------------------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from .cli import _settings
    from .experiment import course_datasets, train_course_model
    from .models import resolve_name
    from .prepare import load_dataset, prepare_dataset

    try:
        resolve_name(args.model)  # an unknown model fails before any data work
    except ValueError as err:
        raise CommandError(str(err)) from None
    settings = _settings(args)
    prepare_dataset(args.dataset, settings, source=args.source)
    data = course_datasets(load_dataset(args.dataset, settings), settings, image_size=args.image_size)
    result = train_course_model(
        args.model,
        settings,
        data=data,
        epochs=tuple(args.epochs) if args.epochs else None,
        weights=args.weights,
        verbose=2,
    )
    print(result.run_dir)
    return 0


# ------------------------------------------------------------------------------------------------ evaluate
def _run_folder(path: Path):
    from .runs import RunNotFoundError, load_run

    if not path.exists():
        raise RunNotFoundError(f"No run folder at {path}: pass outputs/runs/<dataset>/<model>[/<timestamp>].")
    run = load_run(path)
    if not (run.path / "model.keras").is_file():
        raise RunNotFoundError(f"{run.path} has no model.keras: the run did not finish; train it again.")
    return run


def _evaluation_manifest(run, args: argparse.Namespace):
    """The manifest rows to evaluate: the run's dataset (prepared) or any folder given with --source."""
    from .cli import _settings
    from .prepare import load_dataset, prepare_dataset

    settings = _settings(args)
    if args.source is not None:
        dataset = f"folder:{Path(args.source).resolve()}"
        prepared = prepare_dataset(dataset, settings)
    else:
        dataset = args.dataset or run.config["dataset"]
        prepared = load_dataset(dataset, settings, limit=False)
    manifest = prepared.manifest
    if args.source is not None and not any((Path(args.source) / split).is_dir() for split in SPLITS):
        manifest = manifest.assign(split=args.split)  # a plain class-per-folder tree: evaluate all of it
    rows = manifest[manifest["split"] == args.split]
    if rows.empty:
        raise CommandError(
            f"No {args.split!r} images in {dataset} (splits: {sorted(set(manifest['split']))})."
        )
    unknown = sorted(set(rows["label"]) - set(run.config["class_names"]))
    if unknown:
        raise CommandError(
            f"Classes {unknown} of {dataset} are not among the model's classes {run.config['class_names']}."
        )
    return dataset, rows


def _val_threshold(run, class_names: list[str]) -> float | None:
    """The binary threshold chosen on the run's own validation predictions (None: argmax)."""
    from .evaluation import choose_threshold, prediction_arrays, read_predictions

    if len(class_names) != 2:
        return None
    try:
        y, probs, _ = prediction_arrays(read_predictions(run.path), class_names, "val")
    except (FileNotFoundError, ValueError):
        return None
    return choose_threshold(y, probs)


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    from .evaluation import compute_metrics, prediction_arrays, to_jsonable
    from .pipeline import make_dataset
    from .training import predict_split

    run = _run_folder(args.run_dir)
    class_names = list(run.config["class_names"])
    dataset, rows = _evaluation_manifest(run, args)
    size = int(run.config["image_size"])
    ds = make_dataset(rows, args.split, class_names, image_size=size, batch_size=32, cache=False)
    predictions = predict_split(run.load_model(), ds, rows, class_names)
    threshold = _val_threshold(run, class_names) if args.split != "val" else None
    y, probs, _ = prediction_arrays(predictions, class_names, args.split)
    metrics = compute_metrics(y, probs, class_names, threshold=threshold)
    result = {
        "run_dir": str(run.path),
        "dataset": dataset,
        "split": args.split,
        "threshold_source": "chosen on the run's validation predictions"
        if threshold is not None
        else "argmax",
        **to_jsonable(metrics),
    }
    folder = run.path / "evaluations"
    folder.mkdir(exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(dataset).name)}-{args.split}"
    stem = next(
        f"{stem}{suffix}"
        for suffix in ("", *(f"-{i}" for i in range(1, 1000)))
        if not (folder / f"{stem}{suffix}.json").exists()
    )
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1))
    predictions.to_csv(folder / f"{stem}.predictions.csv", index=False)
    print(json.dumps(result, indent=1))
    return 0


# ------------------------------------------------------------------------------------------------- predict
def read_images(paths: list[Path], image_size: int):
    """Decode each image like the pipeline does; a missing or undecodable file raises :class:`ImageError`."""
    import numpy as np
    import tensorflow as tf

    from .pipeline import load_image

    images = []
    for path in paths:
        if not path.is_file():
            raise ImageError(f"No image at {path}.")
        try:
            grey = load_image(str(path), image_size)
        except (tf.errors.OpError, ValueError) as err:
            raise ImageError(f"Cannot decode {path} as a JPEG or PNG image ({type(err).__name__}).") from None
        images.append(tf.image.grayscale_to_rgb(tf.cast(grey, tf.float32)))
    return np.stack(images)


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    import numpy as np

    run = _run_folder(args.run_dir)
    class_names = list(run.config["class_names"])
    images = read_images(list(args.images), int(run.config["image_size"]))
    probs = np.asarray(run.load_model()(images, training=False), dtype=float)
    for path, p in zip(args.images, probs, strict=True):
        cells = "\t".join(f"{name}={value:.4f}" for name, value in zip(class_names, p, strict=True))
        print(f"{path}\t{cells}\tpredicted={class_names[int(p.argmax())]}")
    return 0


# ------------------------------------------------------------------------------------------------- results
def _weights_label(weights: object) -> str:
    """``none``/``imagenet``/random notes as they are; a weights file by its name."""
    text = str(weights)
    return f"file {Path(text).name}" if text.endswith((".h5", ".keras")) else text[:60]


def results_markdown(
    output_dirs: Path | list[Path], dataset: str, split: str = "test", n_boot: int = 1000
) -> str:
    """A Markdown table of the latest run of every model on ``dataset`` under each output folder (one row per
    run, labelled with dataset, profile and the weights actually used; "run time" is the run's whole wall time:
    training, evaluation and saving)."""
    from .report import compare_runs
    from .runs import load_json

    output_dirs = [output_dirs] if isinstance(output_dirs, Path) else list(output_dirs)
    boards = [compare_runs(d, dataset, split=split, n_boot=n_boot).board for d in output_dirs]
    lines = [
        "| model | dataset | profile | weights used | image size | train images | run time | accuracy | "
        "macro-F1 | AUC [95% CI] | sensitivity | specificity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in (row for board in boards for row in board.iterrows()):
        config = load_json(Path(row["run_dir"]) / "config.json")
        run_minutes = float(config.get("wall_time_s", "nan")) / 60

        def fmt(key: str, row=row) -> str:
            value = row.get(key)
            return "n/a" if value is None or value != value else f"{value:.3f}"

        lines.append(
            f"| {row['model']} | {dataset} | {config.get('profile', '?')} | {_weights_label(row['weights_used'])} | "
            f"{row['image_size']} | {config.get('train_images', '?')} | {run_minutes:.1f} min | "
            f"{fmt('accuracy')} | {fmt('macro_f1')} | {fmt('auc')} [{fmt('auc_low')}, {fmt('auc_high')}] | "
            f"{fmt('sensitivity')} | {fmt('specificity')} |"
        )
    note = f"\n{split} split; binary decisions at the threshold chosen on each run's validation split."
    return "\n".join(lines) + "\n" + note


def replace_between_markers(text: str, table: str) -> str:
    """``text`` with everything between the results markers replaced by ``table``."""
    start, end = text.find(RESULTS_START), text.find(RESULTS_END)
    if start < 0 or end < start:
        raise CommandError(
            f"The file has no {RESULTS_START} ... {RESULTS_END} markers to write the table between."
        )
    return f"{text[: start + len(RESULTS_START)]}\n{table}\n{text[end:]}"


def cmd_results(args: argparse.Namespace) -> int:
    from .cli import _settings

    settings = _settings(args)
    dataset = args.dataset or settings.dataset or "pneumonia"
    table = results_markdown(args.output_dir or [settings.output_dir], dataset, split=args.split)
    print(table)
    if args.readme is not None:
        if not args.readme.is_file():
            raise FileNotFoundError(f"No file {args.readme} to write the results into.")
        args.readme.write_text(replace_between_markers(args.readme.read_text(), table))
        print(f"updated {args.readme}")
    return 0


# -------------------------------------------------------------------------------------------- registration
def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``evaluate``, ``predict`` and ``results`` to the ``python -m utils`` parser."""
    from .datasets import REGISTRY

    datasets = f"one of {', '.join(REGISTRY)}, or folder:PATH"
    p = sub.add_parser("train", help="train one model and save a run folder (printed last)")
    p.add_argument("--dataset", required=True, help=datasets)
    p.add_argument("--source", type=Path, help="an already extracted archive to prepare the dataset from")
    p.add_argument("--model", required=True, help="a model of utils/models.py, e.g. cnn, vgg16, mobilenet")
    p.add_argument("--profile", choices=list(PROFILES), help="run size (default: CXR_PROFILE)")
    p.add_argument("--epochs", nargs=2, type=int, metavar=("HEAD", "FINETUNE"), help="epochs of each phase")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the profile's)")
    p.add_argument("--weights", help="imagenet | none | auto | PATH (default: CXR_WEIGHTS or the profile's)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a saved run on a split or a folder; prints metrics JSON")
    p.add_argument("run_dir", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the run's)")
    p.add_argument("--source", type=Path, help="any class-per-folder tree instead (with or without splits)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--profile", choices=list(PROFILES), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="print class probabilities of images with a saved run's model")
    p.add_argument("run_dir", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("images", type=Path, nargs="+", help="JPEG or PNG files")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("results", help="Markdown table of the latest runs; --readme writes it into README.md")
    p.add_argument("--dataset", help="dataset (default: CXR_DATASET, else pneumonia)")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument(
        "--readme", type=Path, help="file with <!-- results:start --> / <!-- results:end --> markers"
    )
    p.add_argument(
        "--output-dir", type=Path, nargs="+", help="output folders holding runs/ (default: CXR_OUTPUT_DIR)"
    )
    p.add_argument("--profile", choices=list(PROFILES), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_results)

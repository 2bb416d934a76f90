"""Train and test the custom CNN and MobileNet (alpha 0.25, real ImageNet weights) on real chest X-rays.

Usage (from the repository root)::

    python benchmarks/real_data.py [--source DIR] [--models cnn mobilenet_025] [--profile laptop]
                                   [--epochs N N] [--image-size S] [--weights-file FILE]

``DIR`` (default ``../shared/data/chest_xray_224``) is a Kermany-layout folder (``train/`` and ``test/``, each
with ``NORMAL/`` and ``PNEUMONIA/``); it is prepared as the ``pneumonia`` dataset through the course's own code
(patient-wise 85/15 train/validation split; the official test images stay the test split). Everything goes
under ``outputs/benchmarks/`` (its own data and output folders: ``data/`` and ``outputs/runs`` are untouched).
MobileNet starts from the official Keras ImageNet file ``mobilenet_2_5_224_tf_no_top.h5`` (default
``../shared/weights/``), passed as a file path: Keras names its MobileNet files by input size, and only the
224 px file exists offline, while convolution weights do not depend on the input size.

Prints, per model: accuracy, ROC-AUC, macro-F1, sensitivity and specificity on the test split at the threshold
chosen on the validation split (Youden's J) and at argmax, wall time, training images/s and the weights used;
writes ``outputs/benchmarks/real_data.json``. Targets on a 2-core CPU: each model <= 30 minutes, accuracy
>= 0.93 and AUC >= 0.97 (Kermany et al. 2018 report 92.8% and 0.968 on their full test split). Skips with a
message (exit 0) when the source folder is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
DEFAULT_SOURCE = SHARED / "data" / "chest_xray_224"
DEFAULT_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
OUTPUT = ROOT / "outputs" / "benchmarks"
TARGETS = (
    "targets: <= 30 min per model on 2 cores; accuracy >= 0.93, AUC >= 0.97 (Kermany 2018: 0.928 / 0.968)"
)
METRICS = ("accuracy", "roc_auc", "macro_f1", "sensitivity", "specificity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Kermany-layout folder")
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_025"], help="registry names")
    parser.add_argument("--profile", default="laptop", help="run profile (default laptop)")
    parser.add_argument("--epochs", nargs=2, type=int, metavar=("HEAD", "FINETUNE"), help="epochs per phase")
    parser.add_argument("--image-size", type=int, help="input size (default: the profile's)")
    parser.add_argument(
        "--weights-file", type=Path, default=DEFAULT_WEIGHTS, help="ImageNet file for MobileNet"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where data, runs and the JSON go")
    return parser.parse_args(argv)


def source_problem(source: Path) -> str | None:
    """Why ``source`` cannot be used, or None."""
    missing = [f"{split}/{label}" for split in ("train", "test") for label in ("NORMAL", "PNEUMONIA")]
    missing = [m for m in missing if not (source / m).is_dir()]
    if missing:
        return f"no Kermany-layout folder at {source} (missing {', '.join(missing)}); pass --source DIR"
    return None


def weights_for(model: str, weights_file: Path) -> str:
    """The weights to ask for: the ImageNet file for MobileNet 0.25, the profile's choice otherwise."""
    if model == "mobilenet_025":
        if not weights_file.is_file():
            raise SystemExit(f"error: the ImageNet weights file {weights_file} is missing (--weights-file).")
        return str(weights_file)
    return "none" if model == "cnn" else "auto"


def scores(predictions, class_names) -> dict[str, dict[str, float]]:
    """Test scores at the validation-chosen threshold and at argmax."""
    from utils.evaluation import evaluate_predictions

    result = {}
    for rule, source in (("val_threshold", "val"), ("argmax", None)):
        metrics = evaluate_predictions(predictions, class_names, split="test", threshold_from=source)
        result[rule] = {key: round(float(metrics[key]), 4) for key in METRICS}
        result[rule]["threshold"] = metrics["threshold"]
    return result


def run(args: argparse.Namespace) -> list[dict]:
    from utils.config import get_settings
    from utils.experiment import course_datasets, train_course_model
    from utils.prepare import load_dataset, prepare_dataset

    settings = dataclasses.replace(
        get_settings(args.profile), data_dir=args.output / "data", output_dir=args.output, source=args.source
    )
    prepared = prepare_dataset("pneumonia", settings, source=args.source)
    summary = []
    for model in args.models:
        started = time.time()
        data = course_datasets(load_dataset("pneumonia", settings), settings, image_size=args.image_size)
        counts = data.manifest.groupby(["split", "label"]).size().to_dict()
        result = train_course_model(
            model,
            settings,
            data=data,
            epochs=tuple(args.epochs) if args.epochs else None,
            weights=weights_for(model, args.weights_file),
            verbose=2,
        )
        wall = time.time() - started
        config = result.config
        row = {
            "model": model,
            "run_dir": str(result.run_dir),
            "weights_used": config["weights_used"],
            "profile": config["profile"],
            "image_size": config["image_size"],
            "images": {f"{s}/{label}": int(n) for (s, label), n in counts.items()},
            "epochs_run": config["epochs_run"],
            "wall_time_s": round(wall, 1),
            "train_images_per_s": config["train_images_per_s"],
            "load_average": round(os.getloadavg()[0], 2),
            "test": scores(result.predictions, data.class_names),
        }
        summary.append(row)
        print(json.dumps(row, indent=1, default=str), flush=True)
    print(f"\nprepared {len(prepared.manifest)} images from {args.source}")
    return summary


def print_table(summary: list[dict]) -> None:
    print(f"\n{'model':<14} {'rule':<14} " + " ".join(f"{m:>11}" for m in METRICS) + "  wall   weights")
    for row in summary:
        for rule, values in row["test"].items():
            cells = " ".join(f"{values[m]:11.3f}" for m in METRICS)
            print(
                f"{row['model']:<14} {rule:<14} {cells}  {row['wall_time_s'] / 60:4.1f}m  {row['weights_used'][:50]}"
            )
    print(TARGETS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = source_problem(args.source)
    if problem:
        print(f"Skipped: {problem}.")
        return 0
    summary = run(args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "real_data.json").write_text(json.dumps(summary, indent=1, default=str))
    print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

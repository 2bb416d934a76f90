"""Train and score course models on real chest X-rays, through the course's own functions.

Usage (from the repository root)::

    python benchmarks/real_data.py [--models cnn mobilenet_025] [--profile laptop] [--epochs N [N]]
                                   [--image-size S] [--train-images N] [--weights FILE]
                                   [--dataset pneumonia|pneumonia3] [--seeds N [N ...]]
                                   [--source DIR] [--output DIR] [--quick]

``DIR`` (default ``../shared/data/chest_xray_224``) is a Kermany-layout folder (``train/`` and ``test/``, each
with ``NORMAL/`` and ``PNEUMONIA/``). It is prepared with ``utils.course.manifest.prepare_dataset`` (patient-wise
85/15 train/validation split; the official test images stay the test split) and every model is trained with
``utils.course.experiment.train_model``, like ``python -m utils train``, but with data and runs under
``--output`` (default ``outputs/benchmarks/``): ``data/`` and ``outputs/runs`` are untouched. MobileNet 0.25
starts from the Keras ImageNet file ``--weights`` (default ``../shared/weights/mobilenet_2_5_224_tf_no_top.h5``,
else the copy in ``weights/``); the other models get the profile's weights (the CNN: random). ``--train-images
N`` keeps N training images (0: all of them) instead of the profile's number. ``--seeds 42 1 2`` trains each model
once per training seed on the same patient split (the split always uses ``CXR_SEED``) and adds their ensemble:
the mean probability, with its own threshold chosen on validation (argmax for three classes).

For each model, on the validation and the test split: accuracy, ROC-AUC with its 95% bootstrap interval
(``utils.metrics.scores_with_ci``), macro-F1, sensitivity and specificity, at the threshold chosen on validation
(``run.threshold``; argmax for three classes); training minutes and the weights used. Writes
``<output>/real_data.json`` (the latest result of each model, dataset, profile, image size and seed: a later
invocation replaces only its own models' rows) and prints a Markdown table of this invocation's models. Skips with a message (exit 0) when the source folder is
absent. ``--quick``: the course's synthetic set (small, generated under the output folder), the smoke profile,
1 + 1 epochs and 200 bootstrap draws, into ``outputs/benchmarks/quick/`` (for the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
DEFAULT_SOURCE = SHARED / "data" / "chest_xray_224"
WEIGHTS_NAME = "mobilenet_2_5_224_tf_no_top.h5"
DEFAULT_WEIGHTS = next((p for p in (SHARED / "weights" / WEIGHTS_NAME, ROOT / "weights" / WEIGHTS_NAME) if p.is_file()),
                       SHARED / "weights" / WEIGHTS_NAME)  # fmt: skip
OUTPUT = ROOT / "outputs" / "benchmarks"
QUICK_COUNTS = {"train": {"NORMAL": 16, "BACTERIA": 12, "VIRUS": 12}, "test": {"NORMAL": 8, "BACTERIA": 4, "VIRUS": 4}}
SPLITS = ("val", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "mobilenet_025"], help="names of utils.models.MODELS")
    parser.add_argument("--profile", help="run profile (default laptop; smoke with --quick)")
    parser.add_argument("--epochs", nargs="+", type=int, metavar="N", help="N (cnn), or HEAD FINETUNE (transfer)")
    parser.add_argument("--image-size", type=int, help="input size (default: the profile's)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="ImageNet file for MobileNet 0.25")
    parser.add_argument("--dataset", choices=["pneumonia", "pneumonia3"], default="pneumonia")
    parser.add_argument("--source", type=Path, help=f"Kermany-layout folder (default {DEFAULT_SOURCE})")
    parser.add_argument("--output", type=Path, help="where data, runs and the JSON go (default outputs/benchmarks)")
    parser.add_argument("--train-images", type=int, metavar="N", help="training images to keep (0: all; "
                        "default: the laptop profile's: every image for the CNN and MobileNet 0.25, 1,000 for the others)")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="training seeds: one run each on the same "
                        "patient split, then their ensemble (default: one run, CXR_SEED)")  # fmt: skip
    parser.add_argument("--n-boot", type=int, help="bootstrap draws for the intervals (default 1000)")
    parser.add_argument("--quick", action="store_true", help="a tiny run on the synthetic set (for tests)")
    args = parser.parse_args(argv)
    if args.epochs and len(args.epochs) > 2:
        parser.error("--epochs takes one number (the CNN) or two (transfer: head and fine-tuning)")
    quick = args.quick
    args.profile = args.profile or ("smoke" if quick else "laptop")
    args.epochs = args.epochs or ([1, 1] if quick else None)
    args.output = (args.output or (OUTPUT / "quick" if quick else OUTPUT)).expanduser().resolve()
    args.n_boot = args.n_boot or (200 if quick else 1000)
    return args


def make_settings(args: argparse.Namespace, source: Path, model: str | None = None):
    """The course's settings with this benchmark's profile (and its recipe for ``model``), sizes, dataset and
    folders."""
    from utils.course.config import get_settings

    changes = {}
    if args.epochs:
        head, finetune = (*args.epochs, 0)[:2]
        changes |= {"epochs": head + finetune, "head_epochs": head, "finetune_epochs": finetune}
    if args.image_size:
        changes["image_size"] = args.image_size
    settings = get_settings(args.profile)
    settings = settings.for_model(model) if model else settings
    if args.train_images is not None:
        changes["images"] = settings.profile.images | {"train": args.train_images or None}
    dataset = args.dataset.replace("pneumonia", "synthetic") if args.quick else args.dataset
    return settings.with_(
        dataset=dataset, source=source.resolve(), data_dir=args.output / "data", output_dir=args.output, **changes
    )


def score_run(run, model: str, n_boot: int) -> dict:
    """What the table and the JSON report about one finished run."""
    from utils.metrics import scores_with_ci

    config = run.config
    manifest = run.manifest()
    row = {
        "model": model, "run_dir": str(run.path), "dataset": config["dataset"], "profile": config["profile"]["name"],
        "image_size": config["image_size"], "weights_used": config["weights_used"], "threshold": run.threshold,
        "train_minutes": round(config["train_time_s"] / 60, 2), "epochs_run": len(run.history()),
        "seed": config["seed"],
        "images": {s: manifest[manifest["split"] == s]["label"].value_counts().sort_index().to_dict()
                   for s in ("train", *SPLITS)},
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }  # fmt: skip
    for split in SPLITS:
        scores = scores_with_ci(*run.arrays(split), run.threshold, n_boot=n_boot)
        row[split] = {name: list(values) for name, values in scores.items()}
    return row


def run(args: argparse.Namespace, source: Path) -> list[dict]:
    from utils.course.runtime import quiet_libraries

    quiet_libraries()  # before anything imports TensorFlow
    from utils.course.experiment import train_model
    from utils.course.manifest import prepare_dataset

    settings = make_settings(args, source)
    prepared = prepare_dataset(settings, settings.dataset)
    counts = prepared.manifest.groupby(["split", "label"]).size().to_dict()
    print(f"{settings.dataset} from {source}: {len(prepared.manifest)} images {counts}", flush=True)
    summary = []
    for model in args.models:
        chosen = make_settings(args, source, model)
        chosen = chosen.with_(weights=str(args.weights)) if model == "mobilenet_025" else chosen
        p = chosen.profile
        runs = []
        for seed in args.seeds or [chosen.seed]:
            print(f"{model}: profile {p.name}, {p.image_size} px, train images {p.images['train'] or 'all'}, "
                  f"seed {seed}", flush=True)  # fmt: skip
            runs.append(train_model(chosen.with_(seed=seed), model))
            summary.append(score_run(runs[-1], model, args.n_boot))
            save(args.output / "real_data.json", summary)  # after each run: a crash keeps the finished ones
        if len(runs) > 1:
            summary.append(score_ensemble(runs, summary[-len(runs):], args.n_boot))
            save(args.output / "real_data.json", summary)
    return summary


def score_ensemble(runs: list, rows: list[dict], n_boot: int) -> dict:
    """The row of the mean probability of ``runs`` (one model, several seeds; their rows ``rows``) on the images
    they share: its threshold chosen on its validation part (Youden's J), the argmax for three classes."""
    import numpy as np

    from benchmarks.levers import mean_probs
    from utils.metrics import choose_threshold, scores_with_ci

    merged, _ = mean_probs(runs)
    threshold = choose_threshold(*merged["val"]) if merged["val"][1].shape[1] == 2 else None
    row = rows[0] | {
        "model": f"{rows[0]['model']} ensemble", "run_dir": [r["run_dir"] for r in rows], "threshold": threshold,
        "seed": "+".join(str(r["seed"]) for r in rows), "epochs_run": "+".join(str(r["epochs_run"]) for r in rows),
        "train_minutes": round(sum(r["train_minutes"] for r in rows), 2),
    }  # fmt: skip
    row["images"] = dict(row["images"])  # train as in every run; validation and test: the shared images
    for split in SPLITS:
        y, probs = merged[split]
        row[split] = {name: list(v) for name, v in scores_with_ci(y, probs, threshold, n_boot=n_boot).items()}
        counts = np.bincount(y, minlength=len(runs[0].class_names))
        row["images"][split] = {name: int(n) for name, n in zip(runs[0].class_names, counts, strict=True) if n}
    return row


def save(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` into the JSON file, replacing earlier rows of the same model, dataset, profile, size and
    seed and keeping the others (one invocation per model keeps every model's latest result)."""
    def key(row: dict) -> tuple:
        return row["model"], row["dataset"], row["profile"], row["image_size"], str(row.get("seed"))

    old = json.loads(path.read_text()) if path.is_file() else []
    new = {key(row) for row in rows}
    path.write_text(json.dumps([row for row in old if key(row) not in new] + rows, indent=1))


def markdown_table(summary: list[dict]) -> str:
    def value(scores: dict, name: str) -> str:
        return f"{scores[name][0]:.3f}" if name in scores else "n/a"

    lines = ["| model | seed | split | images | accuracy | AUC [95% CI] | macro-F1 | sensitivity | specificity | "
             "threshold | epochs | train min | weights |", "|" + "---|" * 13]  # fmt: skip
    for row in summary:
        threshold = "argmax" if row["threshold"] is None else f"{row['threshold']:.3f}"
        for split in SPLITS:
            s = row[split]
            auc = f"{s['AUC'][0]:.3f} [{s['AUC'][1]:.3f}, {s['AUC'][2]:.3f}]"
            lines.append(f"| {row['model']} | {row.get('seed', '')} | {split} | {sum(row['images'][split].values())} | "
                         f"{value(s, 'accuracy')} | {auc} | {value(s, 'macro-F1')} | {value(s, 'sensitivity')} | "
                         f"{value(s, 'specificity')} | {threshold} | {row['epochs_run']} | {row['train_minutes']:.1f} | "
                         f"{row['weights_used']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = None if args.quick and args.source is None else (args.source or DEFAULT_SOURCE).expanduser()
    if source is not None and not (source / "train").is_dir():
        print(f"Skipped: no Kermany-layout folder (train/ and test/) at {source}; pass --source DIR.")
        return 0
    if "mobilenet_025" in args.models and not args.weights.is_file():
        print(f"error: the ImageNet weights file {args.weights} is missing (--weights FILE).", file=sys.stderr)
        return 2
    if source is None:
        from utils.course.synthetic import generate_synthetic

        source = generate_synthetic(args.output / "synthetic", QUICK_COUNTS, seed=1)
    args.output.mkdir(parents=True, exist_ok=True)
    summary = run(args, source)
    print(f"\n{markdown_table(summary)}\n\n{args.output / 'real_data.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

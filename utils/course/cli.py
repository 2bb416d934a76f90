"""The course's command line, ``python -m utils COMMAND``: a thin front end over the functions the notebooks teach.

Commands: ``download``, ``prepare``, ``train`` (``--resume``), ``evaluate``, ``predict``, ``results``,
``notebooks``, ``links``, ``export`` and ``demo``. Settings come from the ``CXR_*`` variables, and options
override them. Every mistake a user can fix ends in one line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config import PROFILES, SPLITS, ConfigError, Settings, get_settings
from .datasets import REGISTRY, DatasetError
from .download import DownloadError
from .runs import RunError
from .runtime import quiet_libraries
from .weights import WeightsError

if TYPE_CHECKING:
    import pandas as pd

    from .runs import Run

RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


class UsageError(Exception):
    """A command-line mistake."""


class ExportError(Exception):
    """An exported model does not give the Keras model's probabilities."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _settings(args: argparse.Namespace) -> Settings:
    """``CXR_*`` settings, the profile's recipe for ``--model``, and the command's options on top (every number
    checked)."""
    settings = get_settings(getattr(args, "profile", None))
    model = getattr(args, "model", None)
    if model:
        from .experiment import check_model_name

        settings = settings.for_model(check_model_name(model))  # before any download or preparation
    changes = {"dataset": getattr(args, "dataset", None) or settings.dataset}
    if getattr(args, "source", None):
        changes["source"] = Path(args.source).expanduser().resolve()
    if getattr(args, "epochs", None):
        if len(args.epochs) != (1 if model == "cnn" else 2):
            raise UsageError("--epochs takes one number for the CNN (--epochs N) and two for a pretrained backbone "
                             f"(--epochs HEAD FINETUNE), got {len(args.epochs)} for {model or 'no --model'}")  # fmt: skip
        head, finetune = (*args.epochs, 0)[:2]
        changes |= {"epochs": head + finetune, "head_epochs": head, "finetune_epochs": finetune}
    for option in ("image_size", "weights", "seed"):
        if getattr(args, option, None) is not None:
            changes[option] = getattr(args, option)
    return settings.with_(**changes)


def _need_dataset(settings: Settings) -> str:
    if not settings.dataset:
        raise UsageError("no dataset: pass --dataset NAME or set CXR_DATASET")
    return settings.dataset


def cmd_download(args: argparse.Namespace) -> None:
    from .datasets import get_dataset
    from .download import download_dataset

    settings = _settings(args)
    print(download_dataset(get_dataset(_need_dataset(settings)), settings.data_dir, force=args.force))


def cmd_prepare(args: argparse.Namespace) -> None:
    from .manifest import prepare_dataset

    settings = _settings(args)
    prepared = prepare_dataset(settings, _need_dataset(settings), force=args.force)
    print(prepared.manifest.groupby(["label", "split"]).size().unstack(fill_value=0).to_string())
    print(prepared.path)


def cmd_train(args: argparse.Namespace) -> None:
    quiet_libraries()
    from .experiment import train_model
    from .manifest import prepare_dataset

    if args.resume is not None:  # the run's own model, data, profile and epochs; only --weights may be given again
        given = [f"--{name.replace('_', '-')}" for name in ("model", "dataset", "source", "epochs", "image_size", "profile")
                 if getattr(args, name) is not None]  # fmt: skip
        if given:
            raise UsageError(f"--resume continues a run with its own settings: drop {', '.join(given)}")
    settings = _settings(args)
    if args.resume is None:
        if not args.model:
            raise UsageError("train needs --model (or --resume RUN)")
        prepare_dataset(settings, _need_dataset(settings))
    run = train_model(settings, args.model, resume=args.resume)
    threshold = run.config["threshold"]
    decision = f"threshold {threshold:.3f}" if threshold is not None else "argmax (more than two classes)"
    print(f"validation AUC {run.config['val_auc']:.3f}, {decision}; run folder {run.path}")


def _evaluation_rows(run, args: argparse.Namespace, settings: Settings):
    """``(what was evaluated, manifest rows)``: the run's own split, or every image of a ``--source`` folder (read
    and checked now, into a temporary manifest: no dataset's manifest changes)."""
    from .datasets import get_dataset
    from .manifest import build_manifest, report_problems, stale_files

    if args.source is None:
        rows = run.manifest().query("split == @args.split")
        if "bytes" not in rows:  # a run saved before its manifest kept the file sizes: only look for gone files
            rows = rows.assign(bytes=[os.path.getsize(p) if os.path.isfile(p) else -1 for p in rows["path"]])
        if stale := stale_files(rows):
            raise RunError(f"{len(stale)} image(s) of the run's {args.split} split are gone or changed since it was "
                           f"trained, e.g. {stale[0]}: restore them, or train a new run.")  # fmt: skip
        return f"{run.config['dataset']} ({args.split} split of this run)", rows
    source = Path(args.source).expanduser().resolve()
    if not source.is_dir():
        raise UsageError(f"--source {source} is not a folder: give a class-per-folder tree of images")
    with tempfile.TemporaryDirectory() as tmp:
        rows, report = build_manifest(get_dataset(f"folder:{source}"), source, Path(tmp), settings.seed)
    for line in report_problems(report):
        print(line, file=sys.stderr)
    if stale_files(rows):
        raise DatasetError(f"Files under {source} changed while being read: run again.")
    if unknown := sorted(set(rows["label"]) - set(run.class_names)):
        raise DatasetError(f"Classes {unknown} of {source} are not among the model's classes {run.class_names}.")
    return str(source), rows.assign(split="test")


def cmd_evaluate(args: argparse.Namespace) -> None:
    quiet_libraries()
    from ..data import make_dataset
    from ..metrics import scores_with_ci
    from .runs import load_run

    run = load_run(args.run)
    what, rows = _evaluation_rows(run, args, _settings(args))
    model, size = run.load_model(), int(run.config["image_size"])
    probs = model.predict(make_dataset(rows, rows["split"].iloc[0], run.class_names, size, 32), verbose=0)
    y = rows["label"].map({c: i for i, c in enumerate(run.class_names)}).to_numpy()
    result = {"run": str(run.path), "evaluated": what, "images": len(rows), "threshold": run.threshold,
              "decision": "p(class 1) >= threshold chosen on validation" if run.threshold is not None else "argmax",
              "scores": {k: {"value": v, "ci95": [lo, hi]} for k, (v, lo, hi) in scores_with_ci(y, probs, run.threshold).items()}}  # fmt: skip
    folder = run.path / "evaluations"
    folder.mkdir(exist_ok=True)
    out = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.split if args.source is None else 'source'}.json"
    while out.exists():
        out = out.with_name(out.stem + "-1.json")
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def cmd_predict(args: argparse.Namespace) -> None:
    quiet_libraries()
    from PIL import Image

    from ..data import load_images
    from ..metrics import predict_classes
    from .datasets import pipeline_problem
    from .runs import load_run

    run = load_run(args.run)
    for path in args.images:  # every file checked before the model loads
        try:
            with Image.open(path) as image:
                problem = pipeline_problem(image.format, image.mode)
        except (OSError, Image.DecompressionBombError):
            raise DatasetError(f"{path} is missing or not an image the course can read: give JPEG or PNG files.") from None
        if problem:
            raise DatasetError(f"{path} is {problem}: convert it to PNG.")
    model = run.load_model()
    for path in args.images:
        image = load_images([path], int(model.input_shape[1]))  # resized to the model's own input size
        probs = model.predict(image, verbose=0)
        decision = run.class_names[int(predict_classes(probs, run.threshold)[0])]
        cells = "  ".join(f"{c} {p:.3f}" for c, p in zip(run.class_names, probs[0], strict=True))
        print(f"{path}\t{cells}\t-> {decision}")


def results_markdown(output_dirs: list[Path], dataset: str, split: str) -> str:
    """A Markdown table of the latest run of every model on ``dataset`` in each output folder: the split's scores
    with 95% bootstrap intervals, at each run's validation-chosen threshold."""
    from ..metrics import scores_with_ci
    from .runs import latest_runs

    lines = ["| model | profile | weights | image size | train images | training | AUC [95% CI] | accuracy | "
             "sensitivity | specificity | macro-F1 |", "|" + "---|" * 11]  # fmt: skip
    for folder in output_dirs:
        for run in latest_runs(folder, dataset).values():
            s = scores_with_ci(*run.arrays(split), run.threshold)
            c = run.config
            cells = [f"{s[k][0]:.3f}" if k in s else "n/a" for k in ("accuracy", "sensitivity", "specificity", "macro-F1")]
            auc = f"{s['AUC'][0]:.3f} [{s['AUC'][1]:.3f}, {s['AUC'][2]:.3f}]"
            lines.append(f"| {run.model_name} | {c['profile']['name']} | {str(c['weights_used']).split(' (')[0]} | {c['image_size']} | "
                         f"{c.get('train_images', '?')} | {c.get('train_time_s', 0) / 60:.1f} min | {auc} | {' | '.join(cells)} |")  # fmt: skip
    return "\n".join(lines) + f"\n\n{dataset}, {split} split; binary decisions at the threshold chosen on each run's validation split."


def cmd_results(args: argparse.Namespace) -> None:
    settings = _settings(args)
    if args.readme and not args.readme.is_file():
        raise UsageError(f"--readme {args.readme} is not a file: give the README to write the table into")
    table = results_markdown(args.output_dir or [settings.output_dir], _need_dataset(settings), args.split)
    print(table)
    if args.readme:
        text = args.readme.read_text()
        start, end = text.find(RESULTS_START), text.find(RESULTS_END)
        if start < 0 or end < start:
            raise UsageError(f"{args.readme} has no {RESULTS_START} ... {RESULTS_END} markers")
        args.readme.write_text(f"{text[: start + len(RESULTS_START)]}\n{table}\n{text[end:]}")


def cmd_notebooks(args: argparse.Namespace) -> None:
    """Execute the notebooks in order into ``<outputs>/executed/`` (ipynb and HTML), stopping at a failure."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from .config import PROJECT_ROOT

    if args.timeout < 1:
        raise UsageError(f"--timeout must be at least 1 second per cell, got {args.timeout}")
    if args.profile:  # the kernels read the settings from the environment, as a student's notebook does
        os.environ["CXR_PROFILE"] = args.profile
    out = _settings(args).output_dir / "executed"
    every = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    numbers = [p.name[:2] for p in every]
    wanted = [f"{int(n):02d}" if n.isdecimal() else n for n in args.only or numbers]
    if unknown := [n for n in wanted if n not in numbers]:
        raise UsageError(f"--only {' '.join(unknown)}: no such notebook; the numbers are {', '.join(numbers)}")
    out.mkdir(parents=True, exist_ok=True)
    paths = [p for p in every if p.name[:2] in wanted]
    for path in paths:
        start = time.perf_counter()
        notebook = nbformat.read(path, as_version=4)
        try:
            NotebookClient(notebook, timeout=args.timeout, resources={"metadata": {"path": str(path.parent)}},
                           extra_arguments=["--IPKernelApp.log_level=ERROR"]).execute()  # no TCP-transport warning
        finally:
            nbformat.write(notebook, out / path.name)
            (out / path.with_suffix(".html").name).write_text(HTMLExporter().from_notebook_node(notebook)[0])
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {out / path.name}", flush=True)


def cmd_links(args: argparse.Namespace) -> None:
    from .links import main_links

    main_links(args.repo)


def export_run(run: Run, formats: tuple[str, ...]) -> pd.DataFrame:
    """Export a run's model into ``RUN/export/`` (replacing an earlier export; ``model.keras`` is only read), check
    every file on the run's test split and write the table to ``RUN/export/parity.json``."""
    from ..data import load_images
    from ..deploy import TOLERANCE, export_model, parity_table

    rows = run.manifest().query("split == 'test'")
    if missing := [p for p in rows["path"] if not Path(p).is_file()]:
        raise RunError(f"{len(missing)} image(s) of the run's test split are gone, e.g. {missing[0]}.")
    model, folder = run.load_model(), run.path / "export"
    shutil.rmtree(folder, ignore_errors=True)
    files = export_model(model, folder, tuple(formats))
    images = load_images(list(rows["path"]), int(run.config["image_size"]))
    y_true = rows["label"].map({c: i for i, c in enumerate(run.class_names)}).to_numpy()
    table = parity_table(model, files, images, y_true, run.threshold)
    result = {"run": str(run.path), "test_images": len(rows), "tolerance": TOLERANCE, "threshold": run.threshold,
              "files": {k: str(v.relative_to(run.path)) for k, v in files.items()},
              "formats": json.loads(table.to_json(orient="index"))}  # fmt: skip
    (folder / "parity.json").write_text(json.dumps(result, indent=1))
    return table


def cmd_export(args: argparse.Namespace) -> None:
    quiet_libraries()
    from ..deploy import TOLERANCE
    from .runs import load_run

    run = load_run(args.run)
    table = export_run(run, tuple(args.formats))
    print(f"{run.title}: exported files against the Keras model on the test split\n"
          f"{table.to_string(float_format=lambda v: f'{v:.3g}', na_rep='')}\n{run.path / 'export' / 'parity.json'}")  # fmt: skip
    if failed := list(table.index[table["status"] == "FAIL"]):
        raise ExportError(f"{', '.join(failed)} differ(s) from the Keras model by more than {TOLERANCE} "
                          "(see parity.json): do not ship those files.")  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> None:
    quiet_libraries()
    from ..deploy import MAX_UPLOAD, build_demo
    from .runs import load_run

    demo = build_demo(load_run(args.run))
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD)
    except OSError as err:  # the port is taken, or the host is not an address of this machine
        raise UsageError(f"cannot serve on {args.host}:{args.port} ({err}): pass another --port or --host") from None


def _port(text: str) -> int:
    if not (text.isdecimal() and 0 < int(text) < 65536):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m utils", description=__doc__.splitlines()[0].replace("``", "`"))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    datasets = f"one of {', '.join(REGISTRY)}, or folder:PATH (default: CXR_DATASET)"

    def command(name: str, func, help: str, dataset: bool = True, profile: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}.")
        p.set_defaults(func=func)
        if profile:  # only where the run size matters
            p.add_argument("--profile", choices=list(PROFILES), help="run size (default: CXR_PROFILE)")
        if dataset:
            p.add_argument("--dataset", help=datasets)
        return p

    p = command("download", cmd_download, "download a Kaggle dataset into data/raw/ (once)", profile=False)
    p.add_argument("--force", action="store_true", help="download again, replacing the old copy once the new one is checked")
    p = command("prepare", cmd_prepare, "build data/<dataset>/manifest.csv (checks every image, splits by patient)")
    p.add_argument("--source", type=Path, help="an extracted archive to read instead of downloading")
    p.add_argument("--force", action="store_true", help="check every image and split again, replacing the manifest "
                   "(trained runs keep their own copy of their split)")
    p = command("train", cmd_train, "train one model and save a run folder")
    p.add_argument("--model", help="cnn, vgg16, resnet50, mobilenet, mobilenet_025 or densenet121")
    p.add_argument("--source", type=Path, help="an extracted archive to prepare the dataset from")
    p.add_argument("--epochs", nargs="+", type=int, metavar="N", help="N epochs (cnn), or HEAD FINETUNE (transfer)")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the profile's)")
    p.add_argument("--weights", help="imagenet | auto | cached | none | FILE (default: CXR_WEIGHTS or the profile's)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run from its last epoch")
    p = command("evaluate", cmd_evaluate, "score a run on its own split, or on any folder of images", dataset=False,
                profile=False)  # fmt: skip
    p.add_argument("run", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("--split", default="test", choices=SPLITS, help="the run's split to score (default: test)")
    p.add_argument("--source", type=Path, help="a class-per-folder tree to score instead (all of its images)")
    p = command("predict", cmd_predict, "class probabilities and decision for image files", dataset=False, profile=False)
    p.add_argument("run", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("images", type=Path, nargs="+", help="JPEG or PNG files, any size")
    p = command("results", cmd_results, "Markdown table of the latest runs; --readme writes it into README.md")
    p.add_argument("--split", default="test", choices=["val", "test"], help="the split to report (default: test)")
    p.add_argument("--readme", type=Path, help="a file with <!-- results:start --> / <!-- results:end --> markers")
    p.add_argument("--output-dir", type=Path, nargs="+", help="folders holding runs/ (default: CXR_OUTPUT_DIR)")
    p = command("notebooks", cmd_notebooks, "execute the notebooks in order into outputs/executed/", dataset=False)
    p.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks, by number, e.g. 01 03")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p = command("export", cmd_export, "export a run's model (SavedModel, LiteRT, ONNX) and check it on the test split",
                dataset=False, profile=False)  # fmt: skip
    p.add_argument("run", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("--formats", nargs="+", default=["savedmodel", "litert", "onnx"], choices=["savedmodel", "litert", "onnx"],
                   help="which files to write (default: all three)")
    p = command("demo", cmd_demo, "serve a Gradio demo of a run (upload an X-ray, see the decision and Grad-CAM)",
                dataset=False, profile=False)  # fmt: skip
    p.add_argument("run", type=Path, help="a run folder, or a model folder (its LATEST run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="port to listen on (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p = sub.add_parser("links", help="point every Colab badge and clone URL at a repository")
    p.add_argument("--repo", help="OWNER/NAME on GitHub")
    p.set_defaults(func=cmd_links)
    return parser


USER_ERRORS = (UsageError, ExportError, ConfigError, DatasetError, DownloadError, RunError, WeightsError, PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake prints ``error: ...`` (one line) and returns 2."""
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
        return 0
    except USER_ERRORS as err:
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (a training run can continue with `train --resume RUN`)", file=sys.stderr)
        return 130

"""The course's command line, ``python -m utils SUBCOMMAND``: a thin front end over the notebooks' functions.

Subcommands: ``download``, ``prepare``, ``notebooks``, ``links`` (here) and ``train``, ``evaluate``, ``predict``,
``results`` (:mod:`utils.cli_models`). ``python -m utils SUBCOMMAND --help`` lists each one's options.

Every failure the user can fix (bad argument, missing folder, missing credentials, missing run, unreadable image)
ends with a one-line ``error: ...`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import PROFILES, ConfigError, get_settings
from .datasets import REGISTRY, DatasetError


class UsageError(Exception):
    """A command-line mistake; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _settings(args: argparse.Namespace):
    if getattr(args, "profile", None):
        os.environ["CXR_PROFILE"] = args.profile
    return get_settings()


def cmd_download(args: argparse.Namespace) -> int:
    from .datasets import get_dataset
    from .download import download_dataset

    settings = _settings(args)
    spec = get_dataset(args.dataset)
    if spec.kaggle is None:
        raise UsageError(
            f"{args.dataset} is not downloaded from Kaggle; use `python -m utils prepare "
            f"--dataset {args.dataset}` instead."
        )
    print(download_dataset(spec, settings.data_dir))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .manifest import split_table
    from .prepare import prepare_dataset

    settings = _settings(args)
    prepared = prepare_dataset(args.dataset, settings, source=args.source, force=args.force)
    print(split_table(prepared.manifest).to_string())
    if prepared.report.get("unreadable"):
        print(
            f"left out {len(prepared.report['unreadable'])} unreadable image(s): see "
            f"{prepared.manifest_path.parent / 'prepare_report.json'}"
        )
    print(prepared.manifest_path)
    return 0


def cmd_notebooks(args: argparse.Namespace) -> int:
    from .run_notebooks import execute_notebooks, find_notebooks

    settings = _settings(args)
    paths = find_notebooks(args.only)
    failed = execute_notebooks(paths, settings.output_dir / "executed", timeout=args.timeout)
    return 1 if failed else 0


def cmd_links(args: argparse.Namespace) -> int:
    from .course_links import main_links

    return main_links(args.repo)


def _add_common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        parser.add_argument("--dataset", required=True, help=f"one of {', '.join(REGISTRY)}, or folder:PATH")
    parser.add_argument("--profile", choices=list(PROFILES), help="run size (default: CXR_PROFILE)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m utils", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("download", help="download a Kaggle dataset into data/raw/ (once)")
    _add_common(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "prepare", help="build data/<dataset>/manifest.csv from a download, a folder or the generator"
    )
    _add_common(p)
    p.add_argument("--source", type=Path, help="an already extracted archive to read instead of downloading")
    p.add_argument("--force", action="store_true", help="rebuild the manifest even if one exists")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "notebooks", help="execute the notebooks in order into outputs/executed/ (ipynb + html)"
    )
    _add_common(p, dataset=False)
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers or names, e.g. 01 03")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("links", help="rewrite every Colab badge and clone URL from the repository address")
    p.add_argument("--repo", help="OWNER/NAME on GitHub (default: the one in utils/course_links.py)")
    p.set_defaults(func=cmd_links)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


def _register_model_commands(sub: argparse._SubParsersAction) -> None:
    from .cli_models import register

    register(sub)


#: Subcommands added by other modules: ``register(subparsers)`` functions (train, evaluate, predict, results).
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_model_commands]

USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ConfigError,
    DatasetError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .cli_models import CommandError

    errors = [*USER_ERRORS, CommandError]
    models = sys.modules.get(f"{__package__}.models")  # imported only if a command built a model
    if models is not None:
        errors.append(models.WeightsError)
    try:
        from .download import DownloadError

        errors.append(DownloadError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; user mistakes print ``error: ...`` and return 2."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except _user_errors() as err:
        message = str(err).strip().replace("\n", " ") or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

"""How calibrated the trained runs' validation probabilities are, and what notebook 09's two corrections do.

Usage (from the repository root)::

    python benchmarks/calibration.py RUN_DIR [RUN_DIR ...]

For each run (a run folder; a model folder stands for its ``LATEST`` run), on its validation split: the expected
calibration error (``utils.metrics.calibration_error``, 10 equal-width bins) and the log-loss of the probabilities
as trained; after temperature scaling (``fit_temperature``, fitted on that same split); after re-weighting to the
training split's class shares (the prior that training with balanced class weights took away: ``levers.reweight``
from the class-weighted prior to ``levers.train_priors``' manifest shares); and after both (the temperature fitted on the re-weighted probabilities). Validation only: the
numbers describe fits made on it, not how they transfer. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from levers import reweight, train_priors  # noqa: E402  (the EM lever's re-weighting and reference priors)
from sklearn.metrics import log_loss  # noqa: E402

from utils.course.runs import RunError, load_run  # noqa: E402
from utils.metrics import apply_temperature, calibration_error, fit_temperature  # noqa: E402


def calibration_rows(run) -> dict[str, tuple[float, float, float]]:
    """``{correction: (temperature, ECE, log-loss)}`` on the run's validation split."""
    y, saved = run.arrays("val")
    probs = saved / saved.sum(axis=1, keepdims=True)  # the saved, rounded probabilities sum to 1 again
    priors = train_priors(run)  # the training shares, and the prior the class-weighted loss saw
    moved = reweight(probs, priors["manifest"] / priors["class-weighted"])
    t_plain, t_moved = fit_temperature(y, probs), fit_temperature(y, moved)
    versions = {"as trained": (1.0, probs), "temperature": (t_plain, apply_temperature(probs, t_plain)),
                "training prior": (1.0, moved), "prior, then temperature": (t_moved, apply_temperature(moved, t_moved))}  # fmt: skip
    labels = range(probs.shape[1])
    return {name: (t, calibration_error(y, p), log_loss(y, p, labels=labels)) for name, (t, p) in versions.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (or model folders: their LATEST run)")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(folder) for folder in args.runs]
    except RunError as err:  # nothing trained here (no ../shared for real_data.py, say): as levers.py does
        print(f"Skipped: {err}")
        return 0
    print("| run (model, dataset, seed) | correction | T | val ECE | val log-loss |\n|---|---|---|---|---|")
    for run in runs:
        for name, (t, ece, loss) in calibration_rows(run).items():
            title = f"{run.model_name}, {run.config.get('dataset')}, seed {run.config.get('seed')}"
            print(f"| {title} | {name} | {t:.2f} | {ece:.3f} | {loss:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

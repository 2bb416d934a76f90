"""Evaluate classifiers from their predicted probabilities: metrics, confidence intervals, thresholds,
calibration, paired tests and a leaderboard over run folders.

Inputs everywhere: ``y_true`` integer class indices ``(N,)`` and ``probs`` softmax probabilities ``(N, C)``
in class order (a 1-D ``probs`` is read as the positive-class probability of a binary problem). For two
classes the positive class is index 1 (e.g. PNEUMONIA). Metric arithmetic comes from scikit-learn and SciPy;
the bootstrap has a vectorised path for its headline metrics (checked against scikit-learn in the tests).
This module never imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from .runs import resolve_run_dir

MetricFn = Callable[[np.ndarray, np.ndarray], float]
FAST_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity")
ALIASES = {
    "auc": "roc_auc",
    "f1": "macro_f1",
    "recall": "sensitivity",
    "tpr": "sensitivity",
    "tnr": "specificity",
}
CONFIG_COLUMNS = {  # leaderboard column -> config.json key
    "params": "params",
    "weights_used": "weights_used",
    "image_size": "image_size",
    "train_time_s": "train_time_s",
    "train_images_per_s": "train_images_per_s",
    "inference_images_per_s": "inference_images_per_s",
}


# ----------------------------------------------------------------------------------------------- inputs
def check_inputs(
    y_true: Any, probs: Any, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate and normalise inputs: integer labels, probabilities as float64 rows that sum to 1, names."""
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, C) with C >= 2 classes, got shape {p.shape}.")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1 + 1e-6:
        raise ValueError("probs must be probabilities in [0, 1] (softmax outputs), not logits or NaN.")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"Each row of probs must sum to 1 (softmax outputs); row sums range {sums.min():.4f}-{sums.max():.4f}."
        )
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(
            f"y_true must be 1-D with one label per row of probs ({len(p)}), got shape {y.shape}."
        )
    if len(y) == 0:
        raise ValueError("No samples to evaluate: y_true is empty.")
    if y.dtype.kind not in "iub" and (y.dtype.kind != "f" or not np.equal(np.mod(y, 1), 0).all()):
        raise ValueError(
            f"y_true must hold integer class indices, got dtype {y.dtype} (map names to indices)."
        )
    y = y.astype(int)
    n_classes = p.shape[1]
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true has labels outside 0..{n_classes - 1} (probs has {n_classes} columns).")
    names = [str(i) for i in range(n_classes)] if class_names is None else [str(c) for c in class_names]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} probability columns: they must match.")
    return y, p / sums[:, None], names


def predict(probs: Any, threshold: float | None = None) -> np.ndarray:
    """Predicted class indices: argmax, or for two classes ``p1 >= threshold`` when a threshold is given."""
    p = np.asarray(probs, dtype=float)
    p = np.column_stack([1.0 - p, p]) if p.ndim == 1 else p
    if threshold is None:
        return p.argmax(axis=1)
    if p.shape[1] != 2:
        raise ValueError(
            f"A decision threshold needs exactly two classes; probs has {p.shape[1]}. Use argmax."
        )
    return (p[:, 1] >= threshold).astype(int)


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts (NaN/inf become None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, (list, tuple, np.ndarray, pd.Series)):
        return [to_jsonable(v) for v in (obj.tolist() if hasattr(obj, "tolist") else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------------- metrics
def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 10) -> float:
    """Binned top-label ECE: sum over equal-width confidence bins of ``n_bin / N * |accuracy - confidence|``.

    Confidence is the largest probability, correctness is ``argmax == y_true``; bins are ``[k/n, (k+1)/n)``
    (the last one includes 1.0), the same binning as :func:`sklearn.calibration.calibration_curve`.
    """
    y, p, _ = check_inputs(y_true, probs)
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    bins = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf, side="right")
    gap = np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(
        bins, weights=conf, minlength=n_bins
    )
    return float(np.abs(gap).sum() / len(y))


def _one_vs_rest(y: np.ndarray, p: np.ndarray, score: Callable[..., float]) -> list[float]:
    """``score(is_class_k, p[:, k])`` per class; NaN where class k is absent (or is every sample)."""
    out = []
    for k in range(p.shape[1]):
        is_k = y == k
        out.append(float(score(is_k, p[:, k])) if 0 < is_k.sum() < len(y) else float("nan"))
    return out


def compute_metrics(
    y_true: Any, probs: Any, class_names: Sequence[str] | None = None, *, threshold: float | None = None
) -> dict[str, Any]:
    """All metrics for one set of predictions, as a plain dict (pass it through :func:`to_jsonable` to save).

    Predictions are the argmax, or ``p[:, 1] >= threshold`` for two classes when ``threshold`` is given.
    ROC-AUC and PR-AUC (average precision) are for class 1 when binary, one-vs-rest macro averages otherwise;
    they are NaN (with a note) when a class is missing from ``y_true``. Sensitivity and specificity (two
    classes only) treat class 1 as positive.
    """
    y, p, names = check_inputs(y_true, probs, class_names)
    n_classes, labels = p.shape[1], list(range(p.shape[1]))
    pred = predict(p, threshold)
    notes: list[str] = []
    absent = [names[k] for k in labels if not (y == k).any()]
    if absent:
        notes.append(
            f"Class(es) absent from y_true: {', '.join(absent)}; their AUC and PR-AUC are undefined (NaN)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined cases are reported as NaN plus a note instead
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            y, pred, labels=labels, zero_division=0
        )
        auc_k = _one_vs_rest(y, p, skm.roc_auc_score)
        ap_k = _one_vs_rest(y, p, skm.average_precision_score)
        result: dict[str, Any] = {
            "n": len(y),
            "class_names": names,
            "threshold": None if threshold is None else float(threshold),
            "prediction_rule": "argmax" if threshold is None else f"p({names[1]}) >= {threshold:.4g}",
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0),
            "roc_auc": auc_k[1] if n_classes == 2 else (float("nan") if absent else float(np.mean(auc_k))),
            "pr_auc": ap_k[1] if n_classes == 2 else (float("nan") if absent else float(np.mean(ap_k))),
            "sensitivity": float("nan"),
            "specificity": float("nan"),
            "log_loss": skm.log_loss(y, p, labels=labels),
            "brier": skm.brier_score_loss(y, p, labels=labels),
            "ece": expected_calibration_error(y, p),
            "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels),
            "confusion_matrix_normalized": skm.confusion_matrix(y, pred, labels=labels, normalize="true"),
        }
        if n_classes == 2:
            result["sensitivity"] = skm.recall_score(y, pred, pos_label=1, zero_division=np.nan)
            result["specificity"] = skm.recall_score(y, pred, pos_label=0, zero_division=np.nan)
        else:
            notes.append("Sensitivity/specificity are defined for two classes; see per-class recall instead.")
    result["per_class"] = {
        name: {
            "precision": precision[k],
            "recall": recall[k],
            "f1": f1[k],
            "support": int(support[k]),
            "roc_auc": auc_k[k],
            "pr_auc": ap_k[k],
        }
        for k, name in enumerate(names)
    }
    result["notes"] = notes
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in result.items()}


# -------------------------------------------------------------------------------------------- bootstrap
def _resample(y: np.ndarray, n_boot: int, seed: int, stratify: bool) -> np.ndarray:
    """``(n_boot, N)`` indices drawn with replacement (within each class when ``stratify``)."""
    rng = np.random.default_rng(seed)
    if not stratify:
        return rng.integers(0, len(y), size=(n_boot, len(y)))
    groups = [np.flatnonzero(y == k) for k in np.unique(y)]
    return np.hstack([g[rng.integers(0, len(g), size=(n_boot, len(g)))] for g in groups])


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Row-wise ROC-AUC as the Mann-Whitney U statistic over ranks (ties count 1/2); NaN for one class."""
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = (stats.rankdata(scores, axis=1) * positive).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _fast_metrics(
    y: np.ndarray, p: np.ndarray, pred: np.ndarray, idx: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Headline metrics for each row of resample indices ``idx``: confusion counts from one bincount."""
    n_classes, (b, n) = p.shape[1], idx.shape
    flat = (y * n_classes + pred)[idx] + (n_classes * n_classes) * np.arange(b)[:, None]
    cm = np.bincount(flat.ravel(), minlength=b * n_classes**2).reshape(b, n_classes, n_classes).astype(float)
    tp, support, predicted = np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1)
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        recall = tp / support
        for name in names:
            if name == "accuracy":
                out[name] = tp.sum(axis=1) / n
            elif name == "balanced_accuracy":
                out[name] = np.nanmean(recall, axis=1)
            elif name == "macro_f1":
                denom = support + predicted
                out[name] = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0).mean(axis=1)
            elif name in ("sensitivity", "specificity"):
                if n_classes != 2:
                    raise ValueError(f"{name} needs two classes; probs has {n_classes}.")
                out[name] = recall[:, 1 if name == "sensitivity" else 0]
            elif name == "roc_auc":
                yi = y[idx]
                classes = [1] if n_classes == 2 else range(n_classes)
                out[name] = np.mean([_rank_auc(p[idx, k], yi == k) for k in classes], axis=0)
    return out


def _metric_name(metric: str) -> str:
    name = ALIASES.get(metric.lower(), metric.lower())
    if name not in FAST_METRICS:
        raise ValueError(
            f"Unknown metric {metric!r}: use one of {', '.join(FAST_METRICS)} or pass a function."
        )
    return name


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float, int]:
    valid = values[np.isfinite(values)]
    if len(valid) < 2:
        return float("nan"), float("nan"), len(valid)
    low, high = np.percentile(valid, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high), len(valid)


def bootstrap_metrics(
    y_true: Any,
    probs: Any,
    metrics: Iterable[str] | None = None,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: bool = False,
) -> dict[str, dict[str, float]]:
    """Percentile-bootstrap confidence intervals over images for the headline metrics.

    Default metrics: accuracy, macro_f1, roc_auc, plus sensitivity and specificity for two classes. Returns
    ``{name: {"point", "low", "high", "n_valid"}}``; resamples where a metric is undefined (e.g. a single class
    for AUC) are skipped and ``n_valid`` counts the rest. Predictions use ``threshold`` as in
    :func:`compute_metrics` (choose it on the validation split). All metrics share the same resamples.
    """
    y, p, _ = check_inputs(y_true, probs)
    if metrics is None:
        metrics = ["accuracy", "macro_f1", "roc_auc"] + (
            ["sensitivity", "specificity"] if p.shape[1] == 2 else []
        )
    names = [_metric_name(m) for m in metrics]
    pred = predict(p, threshold)
    point = _fast_metrics(y, p, pred, np.arange(len(y))[None, :], names)
    idx = _resample(y, n_boot, seed, stratify)
    chunk = max(1, 2_000_000 // len(y))  # bound memory for large test sets
    parts = [_fast_metrics(y, p, pred, idx[i : i + chunk], names) for i in range(0, n_boot, chunk)]
    result = {}
    for name in names:
        low, high, n_valid = _interval(np.concatenate([part[name] for part in parts]), alpha)
        result[name] = {"point": float(point[name][0]), "low": low, "high": high, "n_valid": n_valid}
    return result


def bootstrap_ci(
    y_true: Any,
    probs: Any,
    metric: str | MetricFn,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    threshold: float | None = None,
    stratify: bool = False,
) -> tuple[float, float, float]:
    """``(point, low, high)``: percentile bootstrap interval for one metric.

    ``metric`` is a name from ``FAST_METRICS`` (vectorised, fast) or any ``fn(y_true, probs) -> float``, e.g.
    ``lambda y, p: sklearn.metrics.log_loss(y, p, labels=[0, 1])``; a function is called once per resample
    and resamples where it raises ``ValueError`` or returns NaN are skipped.
    """
    if isinstance(metric, str):
        res = bootstrap_metrics(
            y_true,
            probs,
            [metric],
            threshold=threshold,
            n_boot=n_boot,
            alpha=alpha,
            seed=seed,
            stratify=stratify,
        )[_metric_name(metric)]
        return res["point"], res["low"], res["high"]
    y, p, _ = check_inputs(y_true, probs)

    def safe(i: np.ndarray) -> float:
        try:
            return float(metric(y[i], p[i]))
        except ValueError:
            return float("nan")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = np.array([safe(i) for i in _resample(y, n_boot, seed, stratify)])
    low, high, _ = _interval(values, alpha)
    return float(metric(y, p)), low, high


# ------------------------------------------------------------------------------------------- thresholds
def _binary(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    y, p, _ = check_inputs(y_true, probs)
    if p.shape[1] != 2:
        raise ValueError(f"Thresholds are for two classes; probs has {p.shape[1]} columns.")
    if len(np.unique(y)) < 2:
        raise ValueError(
            "The labels hold a single class: a threshold needs both classes (use the val split)."
        )
    return y, p[:, 1]


def threshold_table(y_true: Any, probs: Any) -> pd.DataFrame:
    """Sensitivity, specificity and Youden's J at every distinct threshold (from ``sklearn roc_curve``)."""
    y, p1 = _binary(y_true, probs)
    fpr, tpr, thresholds = skm.roc_curve(y, p1, drop_intermediate=False)
    keep = np.isfinite(thresholds)
    table = pd.DataFrame(
        {"threshold": thresholds[keep], "sensitivity": tpr[keep], "specificity": 1 - fpr[keep]}
    )
    table["youden_j"] = table["sensitivity"] + table["specificity"] - 1
    return table


def choose_threshold(
    y_val: Any, p_val: Any, method: str = "youden", target_sensitivity: float = 0.95
) -> float:
    """Decision threshold on ``p(class 1)`` chosen on the VALIDATION split (never on test: that would leak).

    ``method="youden"`` maximises sensitivity + specificity - 1; ``method="sensitivity"`` returns the highest
    threshold whose sensitivity is at least ``target_sensitivity`` (so specificity is as high as possible).
    Use it as ``compute_metrics(y_test, p_test, names, threshold=t)``.
    """
    table = threshold_table(y_val, p_val)
    if method == "youden":
        row = table.loc[table["youden_j"].idxmax()]
    elif method == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise ValueError(f"target_sensitivity must be in (0, 1], got {target_sensitivity}.")
        row = table[table["sensitivity"] >= target_sensitivity].iloc[0]
    else:
        raise ValueError(f"Unknown method {method!r}: use 'youden' or 'sensitivity'.")
    return float(row["threshold"])


# ------------------------------------------------------------------------------------------ calibration
def reliability_curve(y_true: Any, probs: Any, n_bins: int = 10, kind: str = "auto") -> pd.DataFrame:
    """Reliability diagram data from ``sklearn.calibration.calibration_curve`` (equal-width bins, empty dropped).

    ``kind="positive"`` (default for two classes): predicted p(class 1) vs observed fraction of class 1;
    ``kind="top_label"`` (default otherwise): confidence (max probability) vs accuracy. Columns
    ``predicted, observed, count``; ``df.attrs["kind"]`` says which.
    """
    y, p, _ = check_inputs(y_true, probs)
    kind = ("positive" if p.shape[1] == 2 else "top_label") if kind == "auto" else kind
    if kind == "positive" and p.shape[1] == 2:
        target, score = (y == 1).astype(int), p[:, 1]
    elif kind == "top_label":
        target, score = (p.argmax(axis=1) == y).astype(int), p.max(axis=1)
    else:
        raise ValueError(f"kind must be 'auto', 'top_label' or (two classes) 'positive', got {kind!r}.")
    observed, predicted = calibration_curve(target, score, n_bins=n_bins, strategy="uniform")
    counts, _ = np.histogram(score, bins=np.linspace(0.0, 1.0, n_bins + 1))
    curve = pd.DataFrame({"predicted": predicted, "observed": observed, "count": counts[counts > 0]})
    curve.attrs["kind"] = kind
    return curve


# -------------------------------------------------------------------------------------- paired testing
def mcnemar(y_true: Any, pred_a: Any, pred_b: Any) -> dict[str, Any]:
    """McNemar's test of two classifiers on the same images.

    ``b`` = images A gets right and B wrong, ``c`` = the reverse. Exact two-sided binomial test
    (``scipy.stats.binomtest``) when ``b + c < 25``, else chi-square with continuity correction,
    ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom.
    """
    y, a, bb = (np.asarray(v).ravel() for v in (y_true, pred_a, pred_b))
    if not len(y) == len(a) == len(bb):
        raise ValueError(
            f"y_true, pred_a and pred_b need the same length, got {len(y)}, {len(a)}, {len(bb)}."
        )
    right_a, right_b = a == y, bb == y
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if b + c < 25:
        p_value = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        return {
            "b": b,
            "c": c,
            "statistic": float(min(b, c)),
            "p_value": float(p_value),
            "method": "exact binomial",
        }
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "statistic": float(statistic),
        "p_value": float(stats.chi2.sf(statistic, df=1)),
        "method": "chi-square with continuity correction",
    }


# ---------------------------------------------------------------------------------------- run folders
def read_predictions(run_dir: str | Path) -> pd.DataFrame:
    """``predictions.csv`` of a run folder (columns ``path, split, label, p_<CLASS>...``)."""
    path = Path(run_dir) / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No predictions.csv in {Path(run_dir)}: train/evaluate the model first.")
    df = pd.read_csv(path, keep_default_na=False)
    missing = {"split", "label"} - set(df.columns)
    if missing or not any(c.startswith("p_") for c in df.columns):
        raise ValueError(
            f"{path} lacks columns {sorted(missing) or 'p_<CLASS>'}: expected path,split,label,p_<CLASS>."
        )
    return df


def prediction_arrays(
    df: pd.DataFrame, class_names: Sequence[str] | None = None, split: str | None = "test"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(y_true, probs, class_names)`` for one split of a predictions table (labels are names or indices)."""
    names = (
        list(class_names) if class_names is not None else [c[2:] for c in df.columns if c.startswith("p_")]
    )
    missing = [f"p_{c}" for c in names if f"p_{c}" not in df.columns]
    if missing:
        raise ValueError(f"Predictions lack probability columns {missing} for classes {names}.")
    rows = df if split is None else df[df["split"] == split]
    if rows.empty:
        raise ValueError(
            f"No {split!r} rows in the predictions (splits present: {sorted(set(df['split']))})."
        )
    labels = rows["label"].astype(str)
    lookup = {name: k for k, name in enumerate(names)} | {str(k): k for k in range(len(names))}
    unknown = sorted(set(labels) - set(lookup))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} are not among the classes {names}.")
    return labels.map(lookup).to_numpy(int), rows[[f"p_{c}" for c in names]].to_numpy(float), names


def evaluate_predictions(
    df: pd.DataFrame,
    class_names: Sequence[str] | None = None,
    split: str = "test",
    threshold_from: str | None = "val",
    method: str = "youden",
    target_sensitivity: float = 0.95,
) -> dict[str, Any]:
    """:func:`compute_metrics` on one split; for two classes the threshold is chosen on ``threshold_from``.

    ``threshold_from=None`` (or more than two classes) uses the argmax. The result adds ``split`` and
    ``threshold_source``; a note says when no ``threshold_from`` rows exist and the argmax was used.
    """
    y, probs, names = prediction_arrays(df, class_names, split)
    threshold, source, notes = None, "argmax", []
    if threshold_from is not None and len(names) == 2:
        if (df["split"] == threshold_from).any():
            y_val, p_val, _ = prediction_arrays(df, names, threshold_from)
            threshold = choose_threshold(y_val, p_val, method=method, target_sensitivity=target_sensitivity)
            source = f"{threshold_from} ({method})"
        else:
            notes.append(f"No {threshold_from!r} rows to choose a threshold on: argmax predictions used.")
    result = compute_metrics(y, probs, names, threshold=threshold)
    result["notes"] = notes + result["notes"]
    return {"split": split, "threshold_source": source, **result}


def leaderboard(
    run_dirs: Iterable[str | Path],
    *,
    split: str = "test",
    threshold_from: str | None = "val",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per run, sorted by ROC-AUC (best first), with percentile-bootstrap CIs.

    Columns: dataset, model, run, the config's params / weights_used / image_size / train_time_s /
    train_images_per_s / inference_images_per_s (NaN when absent), n, threshold, accuracy, macro_f1, auc,
    sensitivity, specificity (each with ``_low``/``_high``), ``f1_<CLASS>`` per class, run_dir. Model folders
    (holding ``LATEST``) are accepted for their latest run.
    """
    rows = []
    for run_dir in map(resolve_run_dir, run_dirs):
        config_path = run_dir / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        df = read_predictions(run_dir)
        res = evaluate_predictions(df, config.get("class_names"), split=split, threshold_from=threshold_from)
        y, probs, names = prediction_arrays(df, res["class_names"], split)
        cis = bootstrap_metrics(y, probs, threshold=res["threshold"], n_boot=n_boot, alpha=alpha, seed=seed)
        row: dict[str, Any] = {
            "dataset": config.get("dataset", run_dir.parent.parent.name),
            "model": config.get("model", run_dir.parent.name),
            "run": run_dir.name,
        }
        row |= {col: config.get(key, np.nan) for col, key in CONFIG_COLUMNS.items()}
        row |= {"n": res["n"], "threshold": res["threshold"]}
        for col, key in [
            ("accuracy", "accuracy"),
            ("macro_f1", "macro_f1"),
            ("auc", "roc_auc"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
        ]:
            ci = cis.get(key, {"low": np.nan, "high": np.nan})
            row |= {col: res[key], f"{col}_low": ci["low"], f"{col}_high": ci["high"]}
        row |= {f"f1_{name}": stats_["f1"] for name, stats_ in res["per_class"].items()}
        rows.append(row | {"run_dir": str(run_dir)})
    if not rows:
        raise ValueError("No run folders given: train a model first (outputs/runs/<dataset>/<model>/<run>/).")
    table = pd.DataFrame(rows)
    return table.sort_values("auc", ascending=False, na_position="last", kind="stable").reset_index(drop=True)

"""Evaluation from predicted probabilities (notebooks 04 and 09): scikit-learn's metrics at one decision rule,
bootstrap confidence intervals, calibration and McNemar's test. Arrays in, numbers out: no files are read here.

Inputs: ``y_true`` integer class indices ``(N,)``, ``probs`` softmax outputs ``(N, C)`` in class order. The
decision rule: for two classes, ``p(class 1) >= threshold`` with the threshold chosen on the VALIDATION split
(:func:`choose_threshold`); for more classes, the most probable class. The one AUC: :func:`roc_auc`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from sklearn import metrics


# saved in utils/metrics.py
def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The course's one AUC: ROC-AUC of p(class 1) for two classes, the macro average of the one-vs-rest
    ROC-AUCs for more (each class against the rest, then the plain mean over classes)."""
    if probs.shape[1] == 2:
        return float(metrics.roc_auc_score(y_true, probs[:, 1]))
    return float(metrics.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=range(probs.shape[1])))


# saved in utils/metrics.py
def shared_predictions(runs: dict, split: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (y_true, probs)}`` of every run on the images of ``split`` that all of them predicted: a model's recipe
    may validate on the whole split where the profile takes a sample, and scores of different images do not compare."""
    frames = {name: run.predictions() for name, run in runs.items()}
    rows = {name: frame[frame["split"] == split].set_index("path") for name, frame in frames.items()}
    shared = sorted(set.intersection(*(set(r.index) for r in rows.values())))
    return {name: (rows[name].loc[shared, "label"].map(run.class_names.index).to_numpy(),
                   rows[name].loc[shared, [f"p_{c}" for c in run.class_names]].to_numpy(float))
            for name, run in runs.items()}  # fmt: skip


# saved in utils/metrics.py
def choose_threshold(y_val: np.ndarray, probs_val: np.ndarray) -> float:
    """The threshold on p(class 1) that maximises Youden's J = sensitivity + specificity - 1 on the validation split."""
    fpr, tpr, thresholds = metrics.roc_curve(y_val, probs_val[:, 1])
    best = np.argmax(tpr - fpr)
    if np.isinf(thresholds[best]):  # no cutoff beats calling nothing positive: one above every probability
        return 1.0 + 1e-6
    return float(thresholds[best])


# saved in utils/metrics.py
def predict_classes(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """The decision: ``p(class 1) >= threshold`` for two classes, else (or without a threshold) the argmax."""
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


# saved in utils/metrics.py
def rank_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """:func:`roc_auc` computed from ranks (the Mann-Whitney U statistic): the same number, fast enough to
    recompute a thousand times for a bootstrap. NaN when a class is missing."""
    aucs = []
    for k in [1] if probs.shape[1] == 2 else range(probs.shape[1]):
        positive = y_true == k
        n_pos, n_neg = positive.sum(), (~positive).sum()
        ranks = stats.rankdata(probs[:, k])  # ties share their mean rank: they count one half
        aucs.append((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else np.nan)
    return float(np.mean(aucs))


# saved in utils/metrics.py
def scores(y_true: np.ndarray, probs: np.ndarray, threshold: float | None) -> dict[str, float]:
    """The headline numbers at the course's decision rule, from the confusion matrix (rows: true class, columns:
    predicted). Sensitivity is the recall of class 1, specificity the recall of class 0 (two classes only)."""
    k = probs.shape[1]
    pred = predict_classes(probs, threshold)
    cm = np.bincount(y_true * k + pred, minlength=k * k).reshape(k, k)
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    precision = np.diag(cm) / np.maximum(cm.sum(axis=0), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = cm.sum(axis=1) > 0  # averages over the classes the split holds (or, for F1, predicts), as sklearn's
    result = {"accuracy": np.trace(cm) / len(y_true), "balanced accuracy": recall[present].mean(),
              "macro-F1": f1[present | (cm.sum(axis=0) > 0)].mean(), "AUC": rank_auc(y_true, probs)}  # fmt: skip
    if k == 2:
        result |= {"sensitivity": recall[1], "specificity": recall[0]}
    return {name: round(float(value), 4) for name, value in result.items()}


# saved in utils/metrics.py
def bootstrap_ci(
    y_true: np.ndarray, probs: np.ndarray, metric: Callable, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple:
    """Percentile bootstrap: draw the N images N times with replacement, ``n_boot`` times, score each resample,
    and keep the middle 1 - alpha of the scores. Resamples holding a single class are skipped (no AUC)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y_true), size=len(y_true))
        if len(np.unique(y_true[idx])) == probs.shape[1]:
            values.append(metric(y_true[idx], probs[idx]))
    if not values:  # the images hold fewer classes than the model: no interval
        return (np.full(np.shape(metric(y_true, probs)), np.nan),) * 2
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def scores_with_ci(
    y_true: np.ndarray, probs: np.ndarray, threshold: float | None, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """``{metric: (value, low, high)}`` for every number of :func:`scores`, with 95% bootstrap intervals."""
    point = scores(y_true, probs, threshold)
    low, high = bootstrap_ci(y_true, probs, lambda y, p: list(scores(y, p, threshold).values()), n_boot, seed=seed)
    return {name: (value, round(float(lo), 4), round(float(hi), 4)) for (name, value), lo, hi in zip(point.items(), low, high, strict=True)}


def table(rows: dict[str, dict[str, tuple[float, float, float] | float]], digits: int = 3) -> pd.DataFrame:
    """Models x metrics, each cell ``"0.912 [0.871, 0.947]"`` (value and 95% interval) or a plain number."""
    def cell(v):
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]" if isinstance(v, tuple) else v

    return pd.DataFrame({model: {k: cell(v) for k, v in row.items()} for model, row in rows.items()}).T


# saved in utils/metrics.py
def calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: the gap between predicted probability and observed frequency, averaged over
    equal-width bins weighted by their images. Two classes: p(class 1) against the share of class 1 (what the
    reliability diagram shows); more classes: the top probability against accuracy."""
    if probs.shape[1] == 2:
        score, hit = probs[:, 1], (y_true == 1)
    else:
        score, hit = probs.max(axis=1), probs.argmax(axis=1) == y_true
    bins = np.minimum((score * n_bins).astype(int), n_bins - 1)
    gap = np.bincount(bins, weights=hit - score, minlength=n_bins)
    return float(np.abs(gap).sum() / len(score))


# saved in utils/metrics.py
def fit_temperature(y_val: np.ndarray, probs_val: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 that makes ``softmax(log p / T)`` fit the validation
    labels best (lowest cross-entropy). T > 1 softens over-confident outputs; the ranking (AUC) does not change."""
    logits = np.log(np.clip(probs_val, 1e-12, 1))

    def loss(t: float) -> float:
        return metrics.log_loss(y_val, special.softmax(logits / t, axis=1), labels=range(probs_val.shape[1]))

    return float(optimize.minimize_scalar(loss, bounds=(0.05, 20), method="bounded").x)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    return special.softmax(np.log(np.clip(probs, 1e-12, 1)) / temperature, axis=1)


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, float]:
    """McNemar's test on the images two models disagree about: ``b`` = A right and B wrong, ``c`` = the reverse.
    Exact binomial test when b + c < 25, else chi-square with continuity correction."""
    right_a, right_b = pred_a == y_true, pred_b == y_true
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    if b + c < 25:
        p_value = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    else:
        p_value = stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), df=1)
    return {"b": b, "c": c, "p_value": round(float(p_value), 4)}

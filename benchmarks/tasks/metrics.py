"""Test-set scores with 95% intervals: accuracy (Wilson), AUROC (bootstrap), majority rate, one-class flag.

Wilson score interval: Wilson (1927), the usual choice for a binomial proportion at n of a few
hundred. AUROC interval: percentile bootstrap over test windows (1,000 resamples, seeded).
"""
from __future__ import annotations

import math

import numpy as np

ONE_CLASS_SHARE = 0.9  # flag a classifier that predicts one class for more than this share of test windows


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of the proportion ``k / n``.

    Example:
        >>> [round(x, 3) for x in wilson(90, 100)]
        [0.826, 0.945]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the positive class ``y == 1`` (ties count one half)."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not pos or not neg:
        return float("nan")
    r = rankdata(score)
    return float((r[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bootstrap_auroc(y, score, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    y, score = np.asarray(y), np.asarray(score)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            vals.append(auroc(y[i], score[i]))
    return (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))) if vals else (float("nan"),) * 2


def majority_rate(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent training class."""
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(np.asarray(y_test) == values[np.argmax(counts)]))


def score_predictions(y_test, pred, proba=None, num_classes: int | None = None) -> dict:
    """Accuracy with its Wilson interval, the largest predicted-class share, AUROC for binary tasks.

    Args:
        y_test, pred: int labels ``[n]``.
        proba: class probabilities ``[n, C]`` (or None); AUROC uses column 1 when ``C == 2``.
    """
    y_test, pred = np.asarray(y_test), np.asarray(pred)
    n = len(y_test)
    k = int((y_test == pred).sum())
    lo, hi = wilson(k, n)
    share = np.bincount(pred, minlength=num_classes or 0) / max(n, 1)
    out = {"accuracy": k / n if n else float("nan"), "accuracy_ci95": [lo, hi], "n_test": n,
           "max_predicted_share": float(share.max()) if n else float("nan"),
           "one_class": bool(n and share.max() > ONE_CLASS_SHARE)}
    if proba is not None and np.asarray(proba).shape[1] == 2:
        s = np.asarray(proba)[:, 1]
        out["auroc"] = auroc(y_test, s)
        out["auroc_ci95"] = list(bootstrap_auroc(y_test, s))
    return out

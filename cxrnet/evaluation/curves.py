"""ROC and precision-recall curves and their areas, in NumPy: a bootstrap calls them 1000s of times.

Thresholds follow ``p >= t`` as everywhere else; tied probabilities move together.
"""

from __future__ import annotations

import numpy as np


def _cumulative(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distinct thresholds, high to low, with true and false positives at each."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    scores = np.asarray(probabilities, dtype=np.float64)[order]
    positive = np.asarray(labels)[order] == 1
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tps = np.cumsum(positive)[last_of_tie]
    fps = np.cumsum(~positive)[last_of_tie]
    return scores[last_of_tie], tps.astype(np.float64), fps.astype(np.float64)


def roc_curve(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """False positive rate, true positive rate and thresholds, starting at (0, 0)."""
    thresholds, tps, fps = _cumulative(probabilities, labels)
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("a ROC curve needs both classes")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thresholds]


def pr_curve(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Recall, precision and thresholds, from the highest threshold down (recall rising)."""
    thresholds, tps, fps = _cumulative(probabilities, labels)
    if tps[-1] == 0:
        raise ValueError("a precision-recall curve needs positive labels")
    return tps / tps[-1], tps / (tps + fps), thresholds


def auroc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when a class is missing."""
    labels = np.asarray(labels)
    n_pos = int(np.sum(labels == 1))
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(probabilities, return_inverse=True, return_counts=True)
    # Mid-ranks of tied groups: the Mann-Whitney statistic.
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    rank_sum = float(np.sum(ranks[labels == 1]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's definition)."""
    if not np.any(np.asarray(labels) == 1):
        return float("nan")
    recall, precision, _ = pr_curve(probabilities, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

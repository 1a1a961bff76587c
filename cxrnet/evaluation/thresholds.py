"""Operating points chosen on validation data and carried, unchanged, to test data."""

from __future__ import annotations

from typing import Literal

import numpy as np

Criterion = Literal["youden", "f1", "sensitivity"]


def _confusion(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, ...]:
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    return tp, fp, fn, tn


def binary_metrics_at(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 and accuracy at one threshold."""
    tp, fp, fn, tn = _confusion(np.asarray(probabilities), np.asarray(labels), threshold)

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    return {
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "precision": precision,
        "f1": ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0,
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
    }


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    criterion: Criterion = "youden",
    min_sensitivity: float = 0.95,
) -> float:
    """The threshold that best meets ``criterion`` on these (validation) predictions.

    ``youden`` maximises sensitivity + specificity - 1; ``f1`` maximises F1; ``sensitivity``
    keeps sensitivity >= ``min_sensitivity`` with the highest specificity (a triage setting:
    missed pneumonia costs more than an extra read). Ties go to the threshold nearest 0.5.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("choosing a threshold needs both classes in the validation labels")
    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    best_score, best = -np.inf, 0.5
    for threshold in candidates:
        m = binary_metrics_at(probabilities, labels, float(threshold))
        if criterion == "youden":
            score = m["recall"] + m["specificity"] - 1
        elif criterion == "f1":
            score = m["f1"]
        elif criterion == "sensitivity":
            score = m["specificity"] if m["recall"] >= min_sensitivity else -np.inf
        else:
            raise ValueError(f"criterion must be youden, f1 or sensitivity, got {criterion!r}")
        better = score > best_score + 1e-12
        tie = abs(score - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)
        if better or tie:
            best_score, best = score, float(threshold)
    return best

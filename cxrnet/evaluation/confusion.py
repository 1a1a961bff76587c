"""Confusion counts at a threshold, and the rates derived from them: the one place both live.

Calls are ``p >= threshold`` everywhere in cxrnet. Counts can be weighted per film: the patient
bootstrap weighs each film by how often its patient was drawn, one row of weights per resample,
so a whole block of resamples is counted with one matrix product instead of one pass each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    """True/false positives and negatives: plain ints, or one value per resample (arrays)."""

    tp: np.ndarray | int
    fp: np.ndarray | int
    fn: np.ndarray | int
    tn: np.ndarray | int

    def as_dict(self) -> dict[str, int]:
        return {"tp": int(self.tp), "fp": int(self.fp), "fn": int(self.fn), "tn": int(self.tn)}

    def metrics(self) -> dict[str, float] | dict[str, np.ndarray]:
        if np.ndim(self.tp) == 0:
            return metrics_from_confusion(*map(float, (self.tp, self.fp, self.fn, self.tn)))
        return metrics_from_counts(self.tp, self.fp, self.fn, self.tn)


def confusion_at(
    called: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> Confusion:
    """Counts of ``called`` (booleans, one per film) against ``labels`` (1 = pneumonia).

    ``weights`` of shape ``(resamples, films)`` count film ``i`` ``weights[r, i]`` times in
    resample ``r``; the counts are then arrays of length ``resamples``. Integer weights give
    exact counts (float64 sums of integers below 2**53).
    """
    called = np.asarray(called, dtype=bool)
    positive = np.asarray(labels) == 1
    if weights is None:
        tp = int(np.sum(called & positive))
        fp = int(np.sum(called & ~positive))
        fn = int(np.sum(~called & positive))
        return Confusion(tp, fp, fn, len(called) - tp - fp - fn)
    cells = np.stack(
        [called & positive, called & ~positive, ~called & positive, ~called & ~positive], axis=1
    )
    counts = np.asarray(weights, dtype=np.float64) @ cells.astype(np.float64)
    return Confusion(*(counts[:, cell] for cell in range(4)))


def confusion_at_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float | np.ndarray,
    weights: np.ndarray | None = None,
) -> Confusion:
    """``confusion_at`` for the calls ``probabilities >= threshold`` (per-film thresholds too)."""
    return confusion_at(np.asarray(probabilities) >= threshold, labels, weights)


def metrics_from_confusion(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Sensitivity (``recall``), specificity, precision, F1 and accuracy; 0 where undefined."""
    return {name: float(value) for name, value in metrics_from_counts(tp, fp, fn, tn).items()}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b``, 0 where ``b`` is 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def metrics_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> dict[str, np.ndarray]:
    """Sensitivity (``recall``), specificity, precision, F1 and accuracy of arrays of counts
    (one value per element; 0 where undefined). ``metrics_from_confusion`` is this on one set
    of counts, so a threshold or a bootstrap computed on arrays agrees exactly with it."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
    }

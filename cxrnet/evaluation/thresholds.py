"""Operating points chosen on validation data and carried, unchanged, to test data and beyond."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Criterion = Literal["youden", "f1", "sensitivity", "specificity", "fixed"]
CRITERIA: tuple[str, ...] = ("youden", "f1", "sensitivity", "specificity", "fixed")


def _confusion(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, ...]:
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    return tp, fp, fn, tn


def metrics_from_confusion(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """Sensitivity (``recall``), specificity, precision, F1 and accuracy; 0 where undefined."""

    def ratio(a: float, b: float) -> float:
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


def binary_metrics_at(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 and accuracy at one threshold (``p >= t``)."""
    return metrics_from_confusion(
        *_confusion(np.asarray(probabilities), np.asarray(labels), threshold)
    )


@dataclass(frozen=True)
class ThresholdRule:
    """How the decision threshold is chosen: a criterion, its floor, or a fixed value.

    ``sensitivity`` keeps sensitivity >= ``min_sensitivity`` (triage: a missed pneumonia costs
    more than an extra read); ``specificity`` keeps specificity >= ``min_specificity``;
    ``fixed`` uses ``value`` as given (no validation data involved).
    """

    criterion: Criterion = "youden"
    min_sensitivity: float = 0.95
    min_specificity: float = 0.95
    value: float | None = None

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(
                f"threshold.criterion must be one of {list(CRITERIA)}, got {self.criterion!r}"
            )
        for name in ("min_sensitivity", "min_specificity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"threshold.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.criterion == "fixed" and self.value is None:
            raise ValueError("threshold.criterion=fixed needs threshold.value=<probability>")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ThresholdRule:
        values = dict(values or {})
        known = {key: values[key] for key in asdict(cls()) if key in values}
        return cls(**known)


@dataclass(frozen=True)
class OperatingPoint:
    """The decision threshold and why: plain values, stored in checkpoints and exported files."""

    threshold: float
    criterion: str
    floor: float | None = None  # the sensitivity or specificity floor where one applied
    chosen_on: str = "val"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OperatingPoint:
        return cls(
            threshold=float(values["threshold"]),
            criterion=str(values["criterion"]),
            floor=None if values.get("floor") is None else float(values["floor"]),
            chosen_on=str(values.get("chosen_on", "val")),
        )

    def describe(self) -> str:
        why = {
            "youden": "maximises sensitivity + specificity - 1",
            "f1": "maximises F1",
            "sensitivity": f"the highest threshold keeping sensitivity >= {self.floor}",
            "specificity": f"the lowest threshold keeping specificity >= {self.floor}",
            "fixed": "set by hand",
        }.get(self.criterion, self.criterion)
        where = "" if self.criterion == "fixed" else f", chosen on the {self.chosen_on} split"
        return f"{self.threshold:.4f} ({self.criterion}: {why}{where})"


def choose_operating_point(
    probabilities: np.ndarray, labels: np.ndarray, rule: ThresholdRule, chosen_on: str = "val"
) -> OperatingPoint:
    if rule.criterion == "fixed":
        return OperatingPoint(float(rule.value), "fixed", None, chosen_on="")
    floor = {"sensitivity": rule.min_sensitivity, "specificity": rule.min_specificity}
    threshold = choose_threshold(
        probabilities, labels, rule.criterion, rule.min_sensitivity, rule.min_specificity
    )
    return OperatingPoint(threshold, rule.criterion, floor.get(rule.criterion), chosen_on)


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    criterion: Criterion = "youden",
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.95,
) -> float:
    """The threshold that best meets ``criterion`` on these (validation) predictions.

    ``youden`` maximises sensitivity + specificity - 1; ``f1`` maximises F1 (ties go to the
    threshold nearest 0.5). ``sensitivity`` is the highest threshold whose sensitivity stays
    >= ``min_sensitivity`` (so the best specificity under that floor); ``specificity`` the lowest
    threshold whose specificity stays >= ``min_specificity`` (the best sensitivity). Candidates
    are the observed probabilities, and 0.5.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("choosing a threshold needs both classes in the validation labels")
    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    table = [(float(t), binary_metrics_at(probabilities, labels, float(t))) for t in candidates]
    if criterion == "sensitivity":
        # Sensitivity only falls as the threshold rises, and the lowest candidate keeps it at 1.
        return max(t for t, m in table if m["recall"] >= min_sensitivity)
    if criterion == "specificity":
        kept = [t for t, m in table if m["specificity"] >= min_specificity]
        # Above every probability specificity is 1: the film-free "call nothing" threshold.
        return min(kept) if kept else float(np.nextafter(candidates[-1], np.inf))
    if criterion not in ("youden", "f1"):
        raise ValueError(
            f"criterion must be youden, f1, sensitivity or specificity, got {criterion!r}"
        )
    best_score, best = -np.inf, 0.5
    for threshold, m in table:
        score = m["recall"] + m["specificity"] - 1 if criterion == "youden" else m["f1"]
        better = score > best_score + 1e-12
        tie = abs(score - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)
        if better or tie:
            best_score, best = score, threshold
    return best

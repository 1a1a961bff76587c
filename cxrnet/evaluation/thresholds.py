"""Operating points chosen on validation data and carried, unchanged, to test data and beyond."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from cxrnet.evaluation.confusion import (
    confusion_at_threshold,
    metrics_from_confusion,  # noqa: F401 (imported from here by callers)
    metrics_from_counts,
)
from cxrnet.user_errors import ConfigError

Criterion = Literal["youden", "f1", "sensitivity", "specificity", "fixed"]
CRITERIA: tuple[str, ...] = ("youden", "f1", "sensitivity", "specificity", "fixed")


def binary_metrics_at(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Sensitivity, specificity, precision, F1 and accuracy at one threshold (``p >= t``)."""
    return confusion_at_threshold(probabilities, labels, threshold).metrics()


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
            raise ConfigError(
                f"threshold.criterion must be one of {list(CRITERIA)}, got {self.criterion!r}"
            )
        for name in ("min_sensitivity", "min_specificity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"threshold.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.criterion == "fixed" and self.value is None:
            raise ConfigError("threshold.criterion=fixed needs threshold.value=<probability>")
        if self.value is not None and not (math.isfinite(self.value) and 0.0 <= self.value <= 1.0):
            raise ConfigError(f"threshold.value must be a probability in [0, 1], got {self.value}")

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

    def __post_init__(self) -> None:
        # A stored threshold of 7.5 or NaN would call every film NORMAL without a word.
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(
                f"the decision threshold must be a probability in [0, 1], got {self.threshold}"
            )

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

    One sort and running counts (n log n): every candidate's confusion counts come from how
    many films of each class score below it, so a million predictions take about a second.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("choosing a threshold needs both classes in the validation labels")
    candidates, metrics = _metrics_per_candidate(probabilities, labels == 1)
    if criterion == "sensitivity":
        # Sensitivity only falls as the threshold rises, and the lowest candidate keeps it at 1.
        # Candidates ascend (NaN last, and never the maximum unless it is all there is).
        kept = candidates[metrics["recall"] >= min_sensitivity]
        if kept.size == 0:  # only with NaN probabilities, which no threshold calls positive
            raise ValueError(f"no threshold keeps sensitivity >= {min_sensitivity}")
        return float(kept[~np.isnan(kept)][-1] if np.any(~np.isnan(kept)) else kept[-1])
    if criterion == "specificity":
        kept = candidates[metrics["specificity"] >= min_specificity]
        # Above every probability specificity is 1: the film-free "call nothing" threshold.
        return float(kept[0]) if kept.size else float(np.nextafter(candidates[-1], np.inf))
    if criterion not in ("youden", "f1"):
        raise ValueError(
            f"criterion must be youden, f1, sensitivity or specificity, got {criterion!r}"
        )
    if criterion == "youden":
        scores = metrics["recall"] + metrics["specificity"] - 1
    else:
        scores = metrics["f1"]
    return _best_nearest_half(candidates, scores)


def _metrics_per_candidate(
    probabilities: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Candidate thresholds (the distinct probabilities and 0.5, ascending) and the metrics of
    ``p >= t`` at each, from cumulative class counts over the sorted probabilities."""
    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    # NaN is never >= a threshold: such films count as called negative at every candidate
    # (and NaN, when present, is itself the last candidate, calling nothing).
    finite = ~np.isnan(probabilities)
    order = np.argsort(probabilities[finite], kind="stable")
    scores = probabilities[finite][order]
    below_positive = np.r_[0, np.cumsum(positive[finite][order])]
    below = np.searchsorted(scores, candidates, side="left")  # films with p < t
    fn = below_positive[below] + np.sum(positive & ~finite)
    tn = below - below_positive[below] + np.sum(~positive & ~finite)
    tp = np.sum(positive) - fn
    fp = np.sum(~positive) - tn
    return candidates, metrics_from_counts(tp, fp, fn, tn)


# Scores closer than this are ties (two thresholds with equal rates can differ in the last bits).
_TIE = 1e-12


def _best_nearest_half(candidates: np.ndarray, scores: np.ndarray) -> float:
    """The candidate with the best score, ties (within ``_TIE``) going to the one nearest 0.5.

    This is a scan in ascending threshold order whose tolerance makes it order dependent, so it
    is reproduced exactly rather than replaced by an argmax. Only candidates within a window
    of the best score can take part; the scan runs on those, then checks that every candidate
    left out would have changed nothing (and widens the window, finally to all, if one would).
    """
    best_score = float(np.max(scores))
    for window in (1e-9, 1e-6, np.inf):
        kept = np.flatnonzero(scores >= best_score - window)
        history = _scan(candidates[kept], scores[kept])
        if _left_out_change_nothing(candidates, scores, kept, history):
            return history[-1][1]
    raise AssertionError("unreachable: the last window keeps every candidate")


def _scan(candidates: np.ndarray, scores: np.ndarray) -> list[tuple[float, float]]:
    """(best score, best threshold) after each candidate, as the original one-by-one scan."""
    best_score, best = -np.inf, 0.5
    history = []
    for threshold, score in zip(candidates.tolist(), scores.tolist(), strict=True):
        better = score > best_score + _TIE
        tie = abs(score - best_score) <= _TIE and abs(threshold - 0.5) < abs(best - 0.5)
        if better or tie:
            best_score, best = score, threshold
        history.append((best_score, best))
    return history


def _left_out_change_nothing(
    candidates: np.ndarray,
    scores: np.ndarray,
    kept: np.ndarray,
    history: list[tuple[float, float]],
) -> bool:
    """Whether the full scan would have ignored every candidate outside ``kept``."""
    prefix_max = np.maximum.accumulate(scores)
    first = kept[0]
    # Whatever the scan held before the first kept candidate scored at most the prefix maximum
    # so far; beating that by more than the tolerance replaces it, so it does not matter.
    if first > 0 and not scores[first] > prefix_max[first - 1] + _TIE:
        return False
    after = np.setdiff1d(np.arange(first + 1, len(scores)), kept, assume_unique=True)
    if after.size == 0:
        return True
    state = np.asarray(history)[np.searchsorted(kept, after, side="right") - 1]
    held_score, held = state[:, 0], state[:, 1]
    score, threshold = scores[after], candidates[after]
    better = score > held_score + _TIE
    tie = (np.abs(score - held_score) <= _TIE) & (np.abs(threshold - 0.5) < np.abs(held - 0.5))
    return not np.any(better | tie)

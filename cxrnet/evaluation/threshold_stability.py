"""How far a chosen threshold would move on other draws of the films that chose it.

A threshold chosen on a few validation films is itself an estimate: on 16 films Youden's
threshold can be anywhere between two neighbouring scores. The films' patients are resampled
(as ``bootstrap`` does for the metrics), the rule chooses again on each resample, and the
percentile interval of those thresholds is reported with the val sensitivity and specificity at
its two ends. It is called unstable when either rate moves by more than ``UNSTABLE_RATE`` across
the interval: a radiology lead would then see a different share of films flagged from a
threshold chosen on the next batch of validation films.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrnet.evaluation.bootstrap import bootstrap_intervals
from cxrnet.evaluation.confusion import confusion_at_threshold
from cxrnet.evaluation.thresholds import ThresholdRule, choose_threshold

# Rethresholding is a sort per resample: capped, so a large val split stays quick.
RESAMPLES = 200
UNSTABLE_RATE = 0.10
# Thresholds this near 0 or 1 sit where the probabilities say little (an uncalibrated tail).
EXTREME = 0.05


@dataclass(frozen=True)
class ThresholdInterval:
    """The threshold's interval and the val rates at its ends (at ``high``, then ``low``)."""

    low: float
    high: float
    sensitivity: tuple[float, float]
    specificity: tuple[float, float]
    resamples: int
    level: float

    def metrics(self) -> dict[str, float]:
        """The interval's ends as ``metrics.json`` keys them."""
        return {"val/threshold_ci_low": self.low, "val/threshold_ci_high": self.high}

    @property
    def unstable(self) -> bool:
        moves = (abs(b - a) for a, b in (self.sensitivity, self.specificity))
        return any(move > UNSTABLE_RATE for move in moves)

    def describe(self) -> str:
        """Sentences for the model card's threshold section."""
        text = (
            f"On {self.resamples} resamples of the patients whose films chose it, the rule "
            f"chose between {self.low:.4f} and {self.high:.4f} ({round(self.level * 100)}% "
            f"interval); across it the val sensitivity runs {self.sensitivity[0]:.3f}-"
            f"{self.sensitivity[1]:.3f} and the specificity {self.specificity[1]:.3f}-"
            f"{self.specificity[0]:.3f}."
        )
        if self.unstable:
            text += (
                f" **Unstable:** a rate moves by more than {UNSTABLE_RATE:.2f} within the "
                "interval; choose it on more validation films (data.split=patient, a larger "
                "data.val_fraction) before trusting the calls."
            )
        return text


def threshold_interval(
    probabilities: np.ndarray,
    labels: np.ndarray,
    patients: Sequence[str] | None,
    rule: ThresholdRule,
    seed: int = 0,
    level: float = 0.95,
    resamples: int = RESAMPLES,
) -> ThresholdInterval | None:
    """The interval of the threshold ``rule`` chooses on these films; None for a fixed
    threshold (nothing was chosen) or films of one class."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if rule.criterion == "fixed" or len(np.unique(labels)) < 2:
        return None

    def rechosen(indices: np.ndarray) -> dict[str, float]:
        y = labels[indices]
        if len(np.unique(y)) < 2:
            return {"threshold": math.nan}  # a resample without a class chooses nothing
        threshold = choose_threshold(
            probabilities[indices], y, rule.criterion, rule.min_sensitivity, rule.min_specificity
        )
        return {"threshold": threshold}

    low, high = bootstrap_intervals(
        rechosen, len(labels), patients, resamples=resamples, seed=seed, level=level
    )["threshold"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    rates = [confusion_at_threshold(probabilities, labels, t).metrics() for t in (high, low)]
    return ThresholdInterval(
        float(low),
        float(high),
        (float(rates[0]["recall"]), float(rates[1]["recall"])),
        (float(rates[0]["specificity"]), float(rates[1]["specificity"])),
        resamples,
        level,
    )


def extreme_threshold_note(threshold: float) -> str | None:
    """A sentence for a threshold near 0 or 1, where probabilities are least trustworthy."""
    if EXTREME <= threshold <= 1 - EXTREME:
        return None
    return (
        f"The threshold {threshold:.4f} lies within {EXTREME} of "
        f"{'0' if threshold < EXTREME else '1'}: the model's probabilities are far from "
        "calibrated there (a film at 0.05 is not a 5% chance of pneumonia), so read its calls, "
        "not its probabilities, and check the threshold's interval above."
    )

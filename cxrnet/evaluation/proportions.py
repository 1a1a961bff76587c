"""Intervals of proportions (sensitivity, specificity, PPV, accuracy, prevalence, the share of
films flagged) that stay honest at 0 and 1.

The patient bootstrap (``bootstrap``) accounts for a patient's films being alike, but every
resample of 5 films that were all called right is again all right: its interval for 5/5 is
1.000-1.000, as if 5 films proved a perfect sensitivity. Clopper-Pearson's exact binomial
interval does not collapse there (5/5: 0.478-1.000 at 95%; 0/39: 0.000-0.090), but it takes the
films as independent. A proportion's reported interval is therefore the bootstrap's widened to
contain Clopper-Pearson's: the wider of the two on each side. Where films are many and rates
are inside (0, 1) the two nearly agree, and the bootstrap's patient grouping decides.
"""

from __future__ import annotations

import math

from scipy.special import betaincinv

from cxrnet.evaluation.confusion import Confusion

METHOD = (
    "patient-bootstrap percentile interval; for proportions (sensitivity, specificity, PPV, "
    "accuracy, prevalence), widened to contain the Clopper-Pearson exact interval, which "
    "does not collapse to a point at 0 or 1"
)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of ``successes`` in ``trials``; NaNs for none."""
    if trials <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    tail = (1.0 - level) / 2.0
    low = 0.0 if successes == 0 else float(betaincinv(successes, trials - successes + 1, tail))
    high = (
        1.0
        if successes == trials
        else float(betaincinv(successes + 1, trials - successes, 1 - tail))
    )
    return low, high


def widened(
    interval: tuple[float, float], successes: int, trials: int, level: float = 0.95
) -> tuple[float, float]:
    """``interval`` (a bootstrap's) widened to contain the exact interval of the counts; as it
    is where there are no trials (the proportion is undefined)."""
    exact_low, exact_high = clopper_pearson(successes, trials, level)
    if math.isnan(exact_low):
        return interval
    low, high = interval
    return (
        exact_low if math.isnan(low) else min(low, exact_low),
        exact_high if math.isnan(high) else max(high, exact_high),
    )


def confusion_counts(confusion: Confusion) -> dict[str, tuple[int, int]]:
    """Each proportion of a confusion (by ``metrics_from_counts``'s names) as successes and
    trials."""
    tp, fp, fn, tn = (int(confusion.tp), int(confusion.fp), int(confusion.fn), int(confusion.tn))
    return {
        "recall": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "precision": (tp, tp + fp),
        "accuracy": (tp + tn, tp + fp + fn + tn),
    }

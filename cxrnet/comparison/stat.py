"""A metric over repeated runs (seeds, folds): its mean, sample standard deviation and n, and an
interval: the run's own bootstrap interval for a single run, a t-interval of the mean over
repeats. A ranking is read against these, so noise is not ranked as signal."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (n - 1) of ``n`` values, and the interval of the mean (None where
    there is none: a single run that stored no bootstrap interval)."""

    mean: float
    std: float | None  # None for n == 1: one run says nothing about the spread
    n: int
    low: float | None = None
    high: float | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def text(self, digits: int = 3) -> str:
        """``0.920 ± 0.020`` over repeats; a lone run's value with its interval,
        ``0.479 [0.180, 0.790]``, or alone where it has none."""
        text = f"{self.mean:.{digits}f}"
        if self.std is not None:
            return f"{text} ± {self.std:.{digits}f}"
        if self.interval is not None:
            return f"{text} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text

    def overlaps(self, other: Stat) -> bool | None:
        """Whether the two intervals overlap; None when either has none."""
        if self.interval is None or other.interval is None:
            return None
        return self.low <= other.high and other.low <= self.high  # type: ignore[operator]


def finite_stat(
    values: Iterable[float], interval: tuple[float, float] | None = None
) -> Stat | None:
    """The Stat of the finite ``values``; None when there are none. ``interval``: a single run's
    own (bootstrap) interval; repeats get the t-interval of their mean at ``LEVEL``.

    A NaN metric (e.g. AUROC of a one-class split) would poison the mean; it lowers n instead.
    """
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return None
    mean = statistics.fmean(finite)
    if len(finite) == 1:
        if interval is not None and all(math.isfinite(v) for v in interval):
            return Stat(mean, None, 1, float(interval[0]), float(interval[1]))
        return Stat(mean, None, 1)
    std = statistics.stdev(finite)
    half = float(student_t.ppf(0.5 + LEVEL / 2, len(finite) - 1)) * std / math.sqrt(len(finite))
    return Stat(mean, std, len(finite), mean - half, mean + half)

"""A metric over repeated runs (seeds, folds): its mean, sample standard deviation and n."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (n - 1) of ``n`` values."""

    mean: float
    std: float | None  # None for n == 1: one run says nothing about the spread
    n: int

    def text(self, digits: int = 3) -> str:
        """``0.920 ± 0.020``, or the lone value."""
        text = f"{self.mean:.{digits}f}"
        return text if self.std is None else f"{text} ± {self.std:.{digits}f}"


def finite_stat(values: Iterable[float]) -> Stat | None:
    """The Stat of the finite ``values``; None when there are none.

    A NaN metric (e.g. AUROC of a one-class split) would poison the mean; it lowers n instead.
    """
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), std, len(finite))

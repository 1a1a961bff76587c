"""Percentile bootstrap intervals that resample patients, not images.

Films of one patient are correlated; resampling them one by one would pretend there is more
independent evidence than there is and give intervals that are too narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

MetricFn = Callable[[np.ndarray], Mapping[str, float]]


def group_indices(groups: Sequence[str] | None, n: int) -> list[np.ndarray]:
    """Image indices per group; every image its own group when there are no patient ids."""
    if groups is None:
        return [np.array([i]) for i in range(n)]
    if len(groups) != n:
        raise ValueError(f"{len(groups)} patient ids for {n} predictions")
    _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def bootstrap_intervals(
    metrics: MetricFn,
    n: int,
    groups: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """``metrics(indices)`` recomputed on ``resamples`` patient resamples: percentile intervals.

    Each resample draws as many patients as there are, with replacement, and keeps all films of
    every patient drawn. A metric undefined in a resample (NaN, e.g. AUROC without negatives) is
    left out of that metric's percentiles.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    members = group_indices(groups, n)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = rng.integers(0, len(members), len(members))
        indices = np.concatenate([members[g] for g in drawn])
        for name, value in metrics(indices).items():
            samples.setdefault(name, []).append(value)
    tail = (1.0 - level) / 2.0 * 100.0
    intervals = {}
    for name, values in samples.items():
        array = np.asarray(values, dtype=np.float64)
        array = array[np.isfinite(array)]
        if array.size == 0:
            intervals[name] = (float("nan"), float("nan"))
            continue
        low, high = np.percentile(array, [tail, 100.0 - tail])
        intervals[name] = (float(low), float(high))
    return intervals

"""Percentile bootstrap intervals that resample patients, not images.

Films of one patient are correlated; resampling them one by one would pretend there is more
independent evidence than there is and give intervals that are too narrow.

A resample is fully described by how many times each patient was drawn. The fast path
(``bootstrap_weighted``) hands blocks of those counts to a metric that works on per-film
weights, so no resample ever builds an index array or loops over patients in Python; the
general path (``bootstrap_intervals``) still calls a metric on the drawn films' indices, for
metrics that have no weighted form. Both draw the same patients for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray], Mapping[str, float]]
# Elements (resamples x films) a block of weights may hold: about 32 MB of int64.
BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class PatientDraws:
    """A block of resamples: ``counts[r, g]`` is how often patient ``g`` was drawn in ``r``."""

    counts: np.ndarray  # (resamples, patients), whole numbers (float64: what the sums need)
    film_group: np.ndarray  # (films,): the patient index of every film

    def __len__(self) -> int:
        return len(self.counts)

    def weights(self, films: np.ndarray | None = None) -> np.ndarray:
        """``(resamples, films)``: how many copies of each film (all, or ``films`` in that
        order) each resample holds; every drawn patient brings all of its films."""
        groups = self.film_group if films is None else self.film_group[films]
        return np.take(self.counts, groups, axis=1)  # several times faster than [:, groups]


WeightedMetricFn = Callable[[PatientDraws], Mapping[str, np.ndarray]]


def group_indices(groups: Sequence[str] | None, n: int) -> list[np.ndarray]:
    """Image indices per group; every image its own group when there are no patient ids."""
    film_group, n_groups = film_groups(groups, n)
    order = np.argsort(film_group, kind="stable")
    bounds = np.flatnonzero(np.diff(film_group[order])) + 1
    return np.split(order, bounds) if n_groups else []


def film_groups(groups: Sequence[str] | None, n: int) -> tuple[np.ndarray, int]:
    """The group index of every film (groups numbered in sorted-name order) and their count."""
    if groups is None:
        return np.arange(n), n
    if len(groups) != n:
        raise ValueError(f"{len(groups)} patient ids for {n} predictions")
    names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return inverse.reshape(-1), len(names)


def draw_blocks(n_groups: int, resamples: int, seed: int, block: int) -> Iterator[np.ndarray]:
    """Patients drawn with replacement, ``(block, n_groups)`` at a time, ``resamples`` rows.

    One ``integers`` call of shape ``(b, n_groups)`` yields the same numbers as ``b`` calls of
    ``n_groups`` each (PCG64 keeps its spare 32-bit half between calls), so intervals do not
    depend on the block size and match the one-resample-at-a-time draws of earlier versions.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        yield rng.integers(0, n_groups, (min(block, resamples - start), n_groups))


def _block_size(n_films: int, n_groups: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(n_films, n_groups, 1))


def bootstrap_weighted(
    metrics: WeightedMetricFn,
    n: int,
    groups: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    workers: int | None = None,
) -> dict[str, tuple[float, float]]:
    """``bootstrap_intervals`` for a metric of per-film weights, a block of resamples per call.

    ``metrics(draws)`` returns one array per metric with a value per resample of the block
    (``draws.weights()`` gives the films' copy counts). Same seed, same intervals as
    ``bootstrap_intervals`` with the equivalent metric of indices. Blocks are scored on
    ``workers`` threads (default: up to 2; NumPy releases the GIL in the heavy loops), so
    ``metrics`` must be thread-safe; patients are still drawn in order from one stream.
    """
    film_group, n_groups = film_groups(groups, n)
    workers = workers or min(2, os.cpu_count() or 1)
    results: list[Future[Mapping[str, np.ndarray]]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for drawn in draw_blocks(n_groups, resamples, seed, _block_size(n, n_groups)):
            # At most ``workers`` blocks wait at a time: a block's weights are tens of MB.
            while sum(not f.done() for f in results) >= workers:
                wait([f for f in results if not f.done()], return_when=FIRST_COMPLETED)
            results.append(pool.submit(metrics, _counted(drawn, n_groups, film_group)))
    samples: dict[str, list[np.ndarray]] = {}
    for future in results:  # block order, whichever thread finished first
        for name, values in future.result().items():
            samples.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    return percentile_intervals({k: np.concatenate(v) for k, v in samples.items()}, level)


def _counted(drawn: np.ndarray, n_groups: int, film_group: np.ndarray) -> PatientDraws:
    """Drawn patient indices ``(resamples, n_groups)`` as per-patient draw counts."""
    rows = len(drawn)
    offsets = (np.arange(rows) * n_groups)[:, None]
    counts = np.bincount((drawn + offsets).ravel(), minlength=rows * n_groups)
    return PatientDraws(counts.reshape(rows, n_groups).astype(np.float64), film_group)


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
    every patient drawn (in draw order). A metric undefined in a resample (NaN, e.g. AUROC
    without negatives) is left out of that metric's percentiles. Prefer ``bootstrap_weighted``
    where the metric has a weighted form: this calls ``metrics`` once per resample.
    """
    film_group, n_groups = film_groups(groups, n)
    order = np.argsort(film_group, kind="stable")  # films grouped by patient
    sizes = np.bincount(film_group, minlength=n_groups)
    starts = np.cumsum(sizes) - sizes
    samples: dict[str, list[float]] = {}
    for drawn in draw_blocks(n_groups, resamples, seed, _block_size(n, n_groups)):
        for row in drawn:
            lengths = sizes[row]
            # Each drawn patient's run of ``order``, concatenated without a loop over patients.
            shift = np.repeat(starts[row] - (np.cumsum(lengths) - lengths), lengths)
            indices = order[shift + np.arange(len(shift))]
            for name, value in metrics(indices).items():
                samples.setdefault(name, []).append(value)
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in samples.items()}
    return percentile_intervals(arrays, level)


def percentile_intervals(
    samples: Mapping[str, np.ndarray], level: float
) -> dict[str, tuple[float, float]]:
    """The central ``level`` percentile interval of every metric's finite resampled values."""
    tail = (1.0 - level) / 2.0 * 100.0
    intervals = {}
    for name, values in samples.items():
        array = values[np.isfinite(values)]
        if array.size == 0:
            intervals[name] = (float("nan"), float("nan"))
            continue
        low, high = np.percentile(array, [tail, 100.0 - tail])
        intervals[name] = (float(low), float(high))
    return intervals

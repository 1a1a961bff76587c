"""ROC and precision-recall curves and their areas, in NumPy: a bootstrap calls them 1000s of times.

Thresholds follow ``p >= t`` as everywhere else; tied probabilities move together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cxrnet.evaluation.confusion import Confusion


def _cumulative(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Distinct thresholds, high to low, with true and false positives at each."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")
    scores = np.asarray(probabilities, dtype=np.float64)[order]
    positive = np.asarray(labels)[order] == 1
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    tps = np.cumsum(positive)[last_of_tie]
    fps = np.cumsum(~positive)[last_of_tie]
    return scores[last_of_tie], tps.astype(np.float64), fps.astype(np.float64)


def roc_curve(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """False positive rate, true positive rate and thresholds, starting at (0, 0)."""
    thresholds, tps, fps = _cumulative(probabilities, labels)
    if tps[-1] == 0 or fps[-1] == 0:
        raise ValueError("a ROC curve needs both classes")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thresholds]


def pr_curve(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Recall, precision and thresholds, from the highest threshold down (recall rising)."""
    thresholds, tps, fps = _cumulative(probabilities, labels)
    if tps[-1] == 0:
        raise ValueError("a precision-recall curve needs positive labels")
    return tps / tps[-1], tps / (tps + fps), thresholds


def auroc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when a class is missing."""
    labels = np.asarray(labels)
    n_pos = int(np.sum(labels == 1))
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(probabilities, return_inverse=True, return_counts=True)
    # Mid-ranks of tied groups: the Mann-Whitney statistic.
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inverse]
    rank_sum = float(np.sum(ranks[labels == 1]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum (scikit-learn's definition)."""
    if not np.any(np.asarray(labels) == 1):
        return float("nan")
    recall, precision, _ = pr_curve(probabilities, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --- the same areas, and confusion counts, for many reweightings of the films at once --------


@dataclass(frozen=True)
class RankedScores:
    """Films sorted once by probability, per class, so that any reweighting of them (a block
    of bootstrap resamples) gets its AUROC, average precision and confusion counts from
    cumulative sums alone: no new sort, and no copy of repeated films."""

    positives: np.ndarray  # film indices of the pneumonia films, by ascending probability
    negatives: np.ndarray  # the same for the normal films
    positive_scores: np.ndarray
    negative_scores: np.ndarray
    values: np.ndarray  # the distinct probabilities, ascending

    @classmethod
    def of(cls, probabilities: np.ndarray, labels: np.ndarray) -> RankedScores:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if not np.all(np.isfinite(probabilities)):
            raise ValueError("ranking needs finite probabilities")
        order = np.argsort(probabilities, kind="stable")
        positive = np.asarray(labels)[order] == 1
        positives, negatives = order[positive], order[~positive]
        return cls(
            positives,
            negatives,
            probabilities[positives],
            probabilities[negatives],
            np.unique(probabilities),
        )

    def tally(self, weights_of: Callable[[np.ndarray], np.ndarray]) -> WeightedTally:
        """Cumulative class counts for the weights ``weights_of(films)`` gives: one row per
        resample, one column per film of ``films`` (in that order)."""
        return WeightedTally(
            self,
            _cumulative_with_zero(weights_of(self.positives)),
            _cumulative_with_zero(weights_of(self.negatives)),
        )


def _cumulative_with_zero(weights: np.ndarray) -> np.ndarray:
    """``out[:, j]``: the total weight of the first ``j`` columns (so ``out[:, 0]`` is 0)."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=np.int64)
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


@dataclass(frozen=True)
class WeightedTally:
    """Per resample, how much weight of each class lies below each probability.

    Counts are integers, so the areas come out bit for bit as ``auroc`` and
    ``average_precision`` give them on the resample's films written out with repeats.
    """

    ranked: RankedScores
    positive_below: np.ndarray  # (resamples, positives + 1), cumulative
    negative_below: np.ndarray  # (resamples, negatives + 1)

    def _through(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative weight with probability < (``left``) or <= (``right``) each
        distinct value."""
        r = self.ranked
        p = np.searchsorted(r.positive_scores, r.values, side=side)
        n = np.searchsorted(r.negative_scores, r.values, side=side)
        return self.positive_below[:, p], self.negative_below[:, n]

    def class_totals(self) -> tuple[np.ndarray, np.ndarray]:
        return self.positive_below[:, -1], self.negative_below[:, -1]

    def confusion(self, threshold: float) -> Confusion:
        """Confusion counts of ``p >= threshold`` in every resample."""
        r = self.ranked
        fn = self.positive_below[:, np.searchsorted(r.positive_scores, threshold, side="left")]
        tn = self.negative_below[:, np.searchsorted(r.negative_scores, threshold, side="left")]
        n_pos, n_neg = self.class_totals()
        return Confusion(n_pos - fn, n_neg - tn, fn, tn)

    def auroc(self) -> np.ndarray:
        """``auroc`` per resample: the mid-rank (Mann-Whitney) sum from tied-group counts."""
        pos_through, neg_through = self._through("right")
        pos_below, neg_below = self._through("left")
        tied_pos = pos_through - pos_below
        tied = tied_pos + neg_through - neg_below
        # Twice the positives' mid-rank sum, in integers: rank of a tied group is
        # (films through it) - (its size - 1) / 2.
        twice_rank_sum = np.sum(tied_pos * (2 * (pos_through + neg_through) - tied + 1), axis=1)
        n_pos, n_neg = self.class_totals()
        with np.errstate(divide="ignore", invalid="ignore"):
            area = (twice_rank_sum / 2.0 - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
        return np.where((n_pos > 0) & (n_neg > 0), area, np.nan)

    def average_precision(self) -> np.ndarray:
        """``average_precision`` per resample, summed over the same terms in the same order."""
        pos_below, neg_below = self._through("left")
        tied = self._through("right")
        present = (tied[0] - pos_below + tied[1] - neg_below) > 0
        n_pos, n_neg = self.class_totals()
        # From the highest value down: true and false positives of p >= value.
        tps = (n_pos[:, None] - pos_below)[:, ::-1]
        fps = (n_neg[:, None] - neg_below)[:, ::-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tps / n_pos[:, None]
            # A value no film of the resample has adds recall 0 but may be 0/0: it is dropped
            # below, so each row sums exactly the terms the unweighted function sums.
            terms = np.diff(recall, axis=1, prepend=0.0) * (tps / (tps + fps))
        present = present[:, ::-1]
        areas = np.array([np.sum(row[keep]) for row, keep in zip(terms, present, strict=True)])
        return np.where(n_pos > 0, areas, np.nan)

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
    cumulative sums and precomputed positions alone: no new sort, no copies of films."""

    positives: np.ndarray  # film indices of the pneumonia films, by ascending probability
    negatives: np.ndarray  # the same for the normal films
    positive_scores: np.ndarray
    negative_scores: np.ndarray
    # Per distinct probability u (ascending): positives and negatives with p < u.
    positives_below: np.ndarray
    negatives_below: np.ndarray
    # Per positive film: negatives strictly below it, and at or below it (ties count half).
    negatives_under: np.ndarray
    negatives_at_or_under: np.ndarray

    @classmethod
    def of(cls, probabilities: np.ndarray, labels: np.ndarray) -> RankedScores:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if not np.all(np.isfinite(probabilities)):
            raise ValueError("ranking needs finite probabilities")
        order = np.argsort(probabilities, kind="stable")
        positive = np.asarray(labels)[order] == 1
        positives, negatives = order[positive], order[~positive]
        pos_scores, neg_scores = probabilities[positives], probabilities[negatives]
        values = np.unique(probabilities)
        return cls(
            positives,
            negatives,
            pos_scores,
            neg_scores,
            np.searchsorted(pos_scores, values, side="left"),
            np.searchsorted(neg_scores, values, side="left"),
            np.searchsorted(neg_scores, pos_scores, side="left"),
            np.searchsorted(neg_scores, pos_scores, side="right"),
        )

    def tally(self, weights_of: Callable[[np.ndarray], np.ndarray]) -> WeightedTally:
        """Cumulative class weights for ``weights_of(films)``: one row per resample, one column
        per film of ``films`` (in that order), e.g. ``PatientDraws.weights``."""
        positive = np.asarray(weights_of(self.positives), dtype=np.float64)
        return WeightedTally(
            self,
            positive,
            _cumulative_with_zero(positive),
            _cumulative_with_zero(weights_of(self.negatives)),
        )


def _cumulative_with_zero(weights: np.ndarray) -> np.ndarray:
    """``out[:, j]``: the total weight of the first ``j`` columns (so ``out[:, 0]`` is 0).

    Float64 holds these integer sums exactly (far below 2**53), and the areas divide them.
    """
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=np.float64)
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


@dataclass(frozen=True)
class WeightedTally:
    """Per resample, the weight of each class below each probability.

    Counts are exact integers, so the areas come out bit for bit as ``auroc`` and
    ``average_precision`` give them on the resample's films written out with repeats.
    """

    ranked: RankedScores
    positive_weights: np.ndarray  # (resamples, positives)
    positive_below: np.ndarray  # (resamples, positives + 1), cumulative
    negative_below: np.ndarray  # (resamples, negatives + 1)

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
        """``auroc`` per resample, as the Mann-Whitney count of (pneumonia, normal) pairs.

        Twice that count, an integer, is every positive's weight times the negative weight
        strictly under it plus the negative weight at or under it: exactly the numerator the
        mid-rank formula of ``auroc`` computes, so the quotient is the same float.
        """
        r = self.ranked
        under = np.take(self.negative_below, r.negatives_under, axis=1)
        under += np.take(self.negative_below, r.negatives_at_or_under, axis=1)
        twice_pairs = np.einsum("ij,ij->i", self.positive_weights, under)
        n_pos, n_neg = self.class_totals()
        with np.errstate(divide="ignore", invalid="ignore"):
            area = (twice_pairs / 2.0) / (n_pos * n_neg)
        return np.where((n_pos > 0) & (n_neg > 0), area, np.nan)

    def average_precision(self) -> np.ndarray:
        """``average_precision`` per resample, summed over the same terms in the same order.

        Columns are the distinct probabilities; those no film of a resample holds are dropped
        before the terms are formed, because ``np.sum``'s pairwise summation rounds
        differently when the number of terms changes.
        """
        r = self.ranked
        n_pos, n_neg = self.class_totals()
        # True positives and all calls of p >= u for each distinct u, ascending.
        tps = np.take(self.positive_below, r.positives_below, axis=1)
        np.subtract(n_pos[:, None], tps, out=tps)
        called = np.take(self.negative_below, r.negatives_below, axis=1)
        np.subtract(n_neg[:, None], called, out=called)
        called += tps
        # A value is present in a resample when calling it adds films.
        present = np.empty(called.shape, dtype=bool)
        np.greater(called[:, :-1], called[:, 1:], out=present[:, :-1])
        present[:, -1] = called[:, -1] > 0
        areas = np.full(len(n_pos), np.nan)
        for row in np.flatnonzero(n_pos > 0):
            keep = present[row]
            areas[row] = _step_area(tps[row][keep], called[row][keep], n_pos[row])
        return areas


def _step_area(tps: np.ndarray, called: np.ndarray, n_pos: float) -> float:
    """``average_precision``'s sum from the ascending present values' counts: recall steps
    times precision, summed from the highest value down as ``pr_curve`` orders them."""
    recall = tps[::-1] / n_pos
    precision = tps[::-1] / called[::-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))

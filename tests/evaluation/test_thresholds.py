from __future__ import annotations

import numpy as np
import pytest

from cxrnet.evaluation.thresholds import (
    ThresholdRule,
    _best_nearest_half,
    binary_metrics_at,
    choose_operating_point,
    choose_threshold,
)


def test_metrics_at_threshold_count_by_hand() -> None:
    probabilities = np.array([0.1, 0.4, 0.6, 0.8, 0.9, 0.3])
    labels = np.array([0, 1, 0, 1, 1, 0])
    m = binary_metrics_at(probabilities, labels, 0.5)
    # predicted positive: 0.6 (FP), 0.8 (TP), 0.9 (TP); 0.4 is a missed pneumonia.
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)


def test_youden_separates_perfectly_separable_scores() -> None:
    probabilities = np.array([0.05, 0.1, 0.2, 0.7, 0.8, 0.95])
    labels = np.array([0, 0, 0, 1, 1, 1])
    threshold = choose_threshold(probabilities, labels, "youden")
    assert 0.2 < threshold <= 0.7
    assert binary_metrics_at(probabilities, labels, threshold)["accuracy"] == 1.0


def test_sensitivity_criterion_keeps_the_floor() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probabilities = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 400), 0, 1)
    threshold = choose_threshold(probabilities, labels, "sensitivity", min_sensitivity=0.95)
    assert binary_metrics_at(probabilities, labels, threshold)["recall"] >= 0.95
    youden = choose_threshold(probabilities, labels, "youden")
    assert threshold <= youden


def test_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(np.array([0.2, 0.9]), np.array([1, 1]))


# --- the n log n threshold choice against the original, candidate-by-candidate definition ----


def _reference_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    criterion: str,
    min_sensitivity: float,
    min_specificity: float,
) -> float:
    """The original quadratic algorithm: a confusion matrix per candidate, then a scan."""

    def rates(t: float) -> dict[str, float]:
        called, positive = probabilities >= t, labels == 1
        tp, fp = int(np.sum(called & positive)), int(np.sum(called & ~positive))
        fn, tn = int(np.sum(~called & positive)), int(np.sum(~called & ~positive))
        ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        f1 = ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
        return {"recall": recall, "specificity": ratio(tn, tn + fp), "f1": f1}

    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    table = [(float(t), rates(float(t))) for t in candidates]
    if criterion == "sensitivity":
        return max(t for t, m in table if m["recall"] >= min_sensitivity)
    if criterion == "specificity":
        kept = [t for t, m in table if m["specificity"] >= min_specificity]
        return min(kept) if kept else float(np.nextafter(candidates[-1], np.inf))
    return _reference_scan([t for t, _ in table], [_score(m, criterion) for _, m in table])


def _score(m: dict[str, float], criterion: str) -> float:
    return m["recall"] + m["specificity"] - 1 if criterion == "youden" else m["f1"]


def _reference_scan(thresholds: list[float], scores: list[float]) -> float:
    best_score, best = -np.inf, 0.5
    for threshold, score in zip(thresholds, scores, strict=True):
        better = score > best_score + 1e-12
        tie = abs(score - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)
        if better or tie:
            best_score, best = score, threshold
    return best


def _random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(2, 40))
    labels = rng.integers(0, 2, n)
    labels[rng.choice(n, 2, replace=False)] = [0, 1]  # both classes, as the function requires
    kind = rng.integers(0, 4)
    if kind == 0:  # heavy ties on a coarse grid that includes 0, 0.5 and 1
        probabilities = rng.integers(0, 5, n) / 4
    elif kind == 1:  # two or three distinct values only
        probabilities = rng.choice(rng.random(int(rng.integers(1, 4))), n)
    elif kind == 2:  # label-dependent scores with some repeats
        probabilities = np.round(np.clip(0.3 * labels + rng.normal(0.35, 0.25, n), 0, 1), 2)
    else:  # continuous, mostly distinct
        probabilities = rng.random(n)
    return probabilities.astype(np.float64), labels


CASES = 1500


@pytest.mark.parametrize("criterion", ["youden", "f1", "sensitivity", "specificity"])
def test_choose_threshold_equals_the_original_on_random_small_cases(criterion: str) -> None:
    rng = np.random.default_rng(["youden", "f1", "sensitivity", "specificity"].index(criterion))
    floors = [0.0, 1.0, 0.5, 0.8, 0.95, 2 / 3, 1 / 3]
    for case in range(CASES):
        probabilities, labels = _random_case(rng)
        # Floors that are exactly attainable rates exercise ">=" at equality.
        floor = floors[case % len(floors)] if case % 2 else float(rng.random())
        expected = _reference_threshold(probabilities, labels, criterion, floor, floor)
        got = choose_threshold(probabilities, labels, criterion, floor, floor)
        assert got == expected, (criterion, floor, probabilities.tolist(), labels.tolist())


def test_fixed_and_unknown_criteria_behave_as_before() -> None:
    rule = ThresholdRule(criterion="fixed", value=0.37)
    assert choose_operating_point(np.array([0.1, 0.9]), np.array([0, 1]), rule).threshold == 0.37
    with pytest.raises(ValueError, match="criterion must be youden"):
        choose_threshold(np.array([0.1, 0.9]), np.array([0, 1]), "accuracy")  # type: ignore[arg-type]


def test_degenerate_cases_equal_the_original() -> None:
    cases = [
        ([0.5, 0.5], [0, 1]),  # one value, which is 0.5 itself
        ([0.0, 1.0], [1, 0]),  # perfectly wrong
        ([0.2, 0.2, 0.2, 0.9], [1, 0, 1, 0]),
        ([1.0, 1.0, 0.0], [0, 1, 1]),
        ([0.5000000000000001, 0.49999999999999994], [1, 0]),  # neighbours of 0.5
        ([-0.0, 0.0, 0.5, 1.0], [0, 1, 0, 1]),
        ([np.nan, 0.3, 0.7, np.nan], [1, 0, 1, 0]),  # NaN never reaches a threshold
    ]
    for probabilities, labels in cases:
        p, y = np.array(probabilities), np.array(labels)
        for criterion in ("youden", "f1", "sensitivity", "specificity"):
            for floor in (0.0, 0.5, 1.0):
                try:
                    expected = _reference_threshold(p, y, criterion, floor, floor)
                except ValueError:  # NaN scores: no threshold reaches the floor
                    with pytest.raises(ValueError):
                        choose_threshold(p, y, criterion, floor, floor)  # type: ignore[arg-type]
                    continue
                got = choose_threshold(p, y, criterion, floor, floor)  # type: ignore[arg-type]
                assert got == expected or (np.isnan(got) and np.isnan(expected)), (
                    criterion,
                    floor,
                    probabilities,
                )


def test_near_ties_resolve_as_the_one_by_one_scan() -> None:
    """Scores a fraction of the 1e-12 tolerance apart make the scan order dependent (a chain of
    ties can walk the choice away from the maximum); the fast path must follow it exactly."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        n = int(rng.integers(1, 60))
        thresholds = np.unique(rng.random(n).round(3))
        base = rng.choice([0.0, 0.7, 0.7 - 5e-10, 0.7 - 1e-6], len(thresholds))
        scores = base + rng.integers(-3, 4, len(thresholds)) * rng.choice([3e-13, 6e-13, 2e-12])
        expected = _reference_scan(thresholds.tolist(), scores.tolist())
        assert _best_nearest_half(thresholds, scores) == expected


def test_a_long_chain_of_ties_can_walk_the_choice_far_from_the_maximum() -> None:
    # Each step is a tie (0.9e-12 apart) and nearer 0.5, so the scan follows the whole chain,
    # 1500 steps and 1.35e-9 below the best score: further than the fast path first looks.
    thresholds = np.linspace(0.0, 0.49, 1500)
    scores = 0.7 - 0.9e-12 * np.arange(1500)
    expected = _reference_scan(thresholds.tolist(), scores.tolist())
    assert expected == thresholds[-1]
    assert _best_nearest_half(thresholds, scores) == expected

from __future__ import annotations

import numpy as np
import pytest

from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold


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

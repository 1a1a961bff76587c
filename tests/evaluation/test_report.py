"""The evaluation pass on constructed predictions: thresholds, intervals, calibration, report."""

from __future__ import annotations

import numpy as np
import pytest

from cxrnet.evaluation.bootstrap import bootstrap_intervals, group_indices
from cxrnet.evaluation.calibration import apply_temperature, fit_temperature, reliability
from cxrnet.evaluation.curves import auroc, average_precision
from cxrnet.evaluation.report import (
    ReportSettings,
    SplitPredictions,
    confidently_wrong_indices,
    evaluate_predictions,
)
from cxrnet.evaluation.thresholds import (
    OperatingPoint,
    ThresholdRule,
    choose_operating_point,
    choose_threshold,
)

# Ten films, worked by hand. Candidate thresholds are the probabilities and 0.5 (which calls
# exactly what 0.55 calls). Sorted by probability (label):
# 0.05(0) 0.10(0) 0.20(1) 0.30(0) 0.40(0) 0.55(1) 0.60(0) 0.70(1) 0.80(1) 0.90(1)
PROBS = np.array([0.05, 0.10, 0.20, 0.30, 0.40, 0.55, 0.60, 0.70, 0.80, 0.90])
LABELS = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1])


def test_youden_by_hand() -> None:
    # t=0.5 or 0.55: sens 4/5, spec 4/5 -> J 0.6; t=0.70: 3/5 + 1 - 1 = 0.6 too; t=0.20:
    # 5/5 + 2/5 - 1 = 0.4. Nothing beats 0.6, and of the ties 0.5 is nearest 0.5.
    assert choose_threshold(PROBS, LABELS, "youden") == 0.5


def test_f1_by_hand() -> None:
    # t=0.5: TP 4, FP 1, FN 1 -> F1 0.8; t=0.20: TP 5, FP 3 -> 10/13 = 0.77;
    # t=0.70: precision 1, recall 0.6 -> F1 0.75. Best is 0.8 at 0.5 (and 0.55).
    assert choose_threshold(PROBS, LABELS, "f1") == 0.5


def test_sensitivity_picks_the_highest_threshold_that_keeps_the_floor() -> None:
    # Sensitivity 1.0 holds up to t=0.20 (the lowest pneumonia); 0.8 holds up to t=0.55.
    assert choose_threshold(PROBS, LABELS, "sensitivity", min_sensitivity=1.0) == 0.20
    assert choose_threshold(PROBS, LABELS, "sensitivity", min_sensitivity=0.8) == 0.55
    assert choose_threshold(PROBS, LABELS, "sensitivity", min_sensitivity=0.6) == 0.70


def test_specificity_picks_the_lowest_threshold_that_keeps_the_floor() -> None:
    # Specificity 1.0 first at t=0.70 (above the 0.60 normal film); 0.8 first at t=0.5 (above
    # the 0.40 normal film).
    assert choose_threshold(PROBS, LABELS, "specificity", min_specificity=1.0) == 0.70
    assert choose_threshold(PROBS, LABELS, "specificity", min_specificity=0.8) == 0.5


def test_operating_point_records_its_criterion_and_floor_as_plain_values() -> None:
    rule = ThresholdRule(criterion="sensitivity", min_sensitivity=0.8)
    point = choose_operating_point(PROBS, LABELS, rule)
    assert point == OperatingPoint(0.55, "sensitivity", 0.8, "val")
    assert OperatingPoint.from_dict(point.as_dict()) == point
    assert all(isinstance(v, (str, float)) for v in point.as_dict().values())
    fixed = choose_operating_point(PROBS, LABELS, ThresholdRule(criterion="fixed", value=0.3))
    assert fixed.threshold == 0.3
    with pytest.raises(ValueError, match=r"threshold\.criterion must be one of"):
        ThresholdRule(criterion="accuracy")
    with pytest.raises(ValueError, match=r"threshold\.value"):
        ThresholdRule(criterion="fixed")


def test_areas_by_hand() -> None:
    # 25 (pneumonia, normal) pairs; pneumonia ranks higher in all but: 0.20 below 0.30, 0.40,
    # 0.60 (3 pairs) and 0.55 below 0.60 (1 pair): AUROC = 21/25.
    assert auroc(PROBS, LABELS) == pytest.approx(21 / 25)
    # Precision at each pneumonia, from the top: 1, 1, 1, 4/5, 5/8; AP is their mean.
    assert average_precision(PROBS, LABELS) == pytest.approx((3 + 0.8 + 5 / 8) / 5)
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5, "a tie counts half"


def _synthetic_scores(n_patients: int, films: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    patient_labels = rng.integers(0, 2, n_patients)
    labels = np.repeat(patient_labels, films)
    # A per-patient effect: films of one patient are correlated, as in the real data.
    effect = np.repeat(rng.normal(0, 1.0, n_patients), films)
    scores = 1 / (1 + np.exp(-(1.2 * (2 * labels - 1) + effect + rng.normal(0, 0.3, labels.size))))
    patients = np.repeat([f"p{i}" for i in range(n_patients)], films)
    return scores, labels, patients


def _auroc_interval(scores, labels, patients, resamples=1000):
    return bootstrap_intervals(
        lambda idx: {"auroc": auroc(scores[idx], labels[idx])},
        len(scores),
        groups=None if patients is None else list(patients),
        resamples=resamples,
        seed=0,
    )["auroc"]


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_more_data() -> None:
    small = _synthetic_scores(40, 1, seed=1)
    large = _synthetic_scores(640, 1, seed=1)
    low_s, high_s = _auroc_interval(*small)
    low_l, high_l = _auroc_interval(*large)
    assert low_s <= auroc(small[0], small[1]) <= high_s
    assert low_l <= auroc(large[0], large[1]) <= high_l
    # Width goes as 1/sqrt(n): 16x the patients, about a quarter of the width.
    assert (high_l - low_l) < 0.5 * (high_s - low_s)
    again = _auroc_interval(*small)
    assert again == (low_s, high_s), "seeded: the same interval every time"


def test_bootstrap_resamples_patients_not_films() -> None:
    scores, labels, patients = _synthetic_scores(60, 4, seed=2)
    groups = group_indices(list(patients), len(scores))
    assert len(groups) == 60 and all(len(g) == 4 for g in groups)
    seen_sizes = set()

    def sizes(idx: np.ndarray) -> dict[str, float]:
        # Every patient drawn brings all four of its films.
        counts = np.unique(patients[idx], return_counts=True)[1]
        seen_sizes.update((counts % 4).tolist())
        return {"n": float(len(idx))}

    bootstrap_intervals(sizes, len(scores), groups=list(patients), resamples=50)
    assert seen_sizes == {0}
    by_patient = _auroc_interval(scores, labels, patients)
    by_film = _auroc_interval(scores, labels, None)
    # Correlated films: treating them as independent pretends to more evidence.
    assert (by_patient[1] - by_patient[0]) > (by_film[1] - by_film[0])


def test_reliability_and_ece_on_constructed_probabilities() -> None:
    # Bin [0.2, 0.3): ten films at 0.25, 2 pneumonia -> gap 0.05; bin [0.8, 0.9): ten at 0.85,
    # all pneumonia -> gap 0.15. ECE = (10 * 0.05 + 10 * 0.15) / 20 = 0.10.
    probs = np.r_[np.full(10, 0.25), np.full(10, 0.85)]
    labels = np.r_[[1, 1], np.zeros(8), np.ones(10)].astype(int)
    rel = reliability(probs, labels, bins=10)
    assert rel.ece == pytest.approx(0.10)
    assert rel.counts[2] == 10 and rel.counts[8] == 10 and rel.counts.sum() == 20
    assert rel.observed[2] == pytest.approx(0.2) and rel.confidence[8] == pytest.approx(0.85)
    assert reliability(np.array([1.0, 0.0]), np.array([1, 0])).ece == 0.0, "p=1 in the last bin"


def test_temperature_scaling_fixes_overconfidence_on_validation() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    overconfident = 1 / (1 + np.exp(-3 * true_logits))  # logits 3x too large
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = reliability(overconfident, labels).ece
    after = reliability(apply_temperature(overconfident, temperature), labels).ece
    assert after < before / 2


def _split(probs, labels, patients=None) -> SplitPredictions:
    n = len(probs)
    subtypes = tuple(
        "normal" if y == 0 else ("virus" if i % 2 else "bacteria") for i, y in enumerate(labels)
    )
    return SplitPredictions(
        np.asarray(probs, float),
        np.asarray(labels),
        tuple(f"f{i}.jpeg" for i in range(n)),
        subtypes,
        tuple(patients) if patients is not None else None,
    )


def test_report_chooses_on_val_and_applies_it_to_test() -> None:
    val = _split(PROBS, LABELS)
    test = _split(PROBS[::-1], LABELS)  # a poor test split: the threshold must not move
    report = evaluate_predictions(
        {"val": val, "test": test},
        ThresholdRule("youden"),
        settings=ReportSettings(resamples=200, calibrate=True),
    )
    m = report.metrics
    assert m["val/threshold"] == 0.5 == report.operating_point.threshold
    assert m["val/recall_at_threshold"] == pytest.approx(0.8)
    assert m["val/specificity_at_threshold"] == pytest.approx(0.8)
    assert m["val/recall"] == pytest.approx(0.8)  # the chosen threshold is 0.5 itself
    for key in ("val/f1_at_threshold", "val/auroc", "test/auprc", "test/accuracy"):
        assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    assert report.splits["val"].confusion == {"tp": 4, "fp": 1, "fn": 1, "tn": 4}
    assert "val/temperature" in m and "test/ece_calibrated" in m
    # Pneumonia at indices 2, 5, 7, 8, 9: bacteria at even (2 missed, 8 caught), virus at odd.
    assert m["val/recall_bacteria_at_threshold"] == pytest.approx(1 / 2)
    assert m["val/recall_virus_at_threshold"] == pytest.approx(1.0)
    # The most confident error: the missed pneumonia at 0.20 (0.8 sure of normal), then 0.60.
    assert confidently_wrong_indices(PROBS, LABELS, 0.5, k=5) == [2, 6]
    assert report.splits["val"].wrong == [2, 6]


def test_a_stored_operating_point_is_used_as_is() -> None:
    stored = OperatingPoint(0.75, "sensitivity", 0.95, "val")
    report = evaluate_predictions({"test": _split(PROBS, LABELS)}, operating_point=stored)
    assert report.operating_point == stored
    assert report.metrics["test/recall_at_threshold"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="validation predictions"):
        evaluate_predictions({"test": _split(PROBS, LABELS)})

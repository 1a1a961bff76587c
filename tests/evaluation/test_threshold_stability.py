"""The chosen threshold's own interval, its instability, a threshold at the edge, and an empty
subtype table left out with its reason (issue 32 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrnet.evaluation.model_card import render_model_card
from cxrnet.evaluation.report import ReportSettings, SplitPredictions, evaluate_predictions
from cxrnet.evaluation.threshold_stability import (
    UNSTABLE_RATE,
    extreme_threshold_note,
    threshold_interval,
)
from cxrnet.evaluation.thresholds import ThresholdRule, choose_threshold


def _val(n: int, separation: float, seed: int = 0, subtype: str = "unknown") -> SplitPredictions:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    probs = np.clip(0.5 + separation * (labels - 0.5) + rng.normal(0, 0.15, n), 0.001, 0.999)
    return SplitPredictions(
        probs,
        labels,
        tuple(f"f{i}.png" for i in range(n)),
        tuple(subtype if y else "normal" for y in labels),
        tuple(f"p{i}" for i in range(n)),
    )


def test_a_threshold_chosen_on_16_overlapping_films_is_unstable() -> None:
    val = _val(16, 0.2)
    rule = ThresholdRule()
    found = threshold_interval(val.probabilities, val.labels, val.patients, rule, seed=0)
    assert found is not None and found.unstable
    chosen = choose_threshold(val.probabilities, val.labels)
    assert found.low <= chosen <= found.high
    # The rates at the ends are the val films' own at those thresholds.
    called_high = val.probabilities >= found.high
    assert found.sensitivity[0] == pytest.approx(called_high[val.labels == 1].mean())
    assert max(abs(b - a) for a, b in (found.sensitivity, found.specificity)) > UNSTABLE_RATE
    assert "**Unstable:**" in found.describe()


def test_a_threshold_on_many_well_separated_films_is_stable() -> None:
    val = _val(2000, 0.8)
    found = threshold_interval(val.probabilities, val.labels, val.patients, ThresholdRule())
    assert found is not None and not found.unstable
    assert found.high - found.low < 0.1
    assert "Unstable" not in found.describe()


def test_a_fixed_threshold_has_no_interval_and_an_extreme_one_a_note() -> None:
    val = _val(40, 0.5)
    fixed = ThresholdRule(criterion="fixed", value=0.5)
    assert threshold_interval(val.probabilities, val.labels, None, fixed) is None
    assert extreme_threshold_note(0.5) is None
    note = extreme_threshold_note(0.035)
    assert note is not None and note.startswith("The threshold 0.0350 lies within 0.05 of 0")
    assert extreme_threshold_note(0.9997) is not None


def test_the_card_shows_the_interval_and_leaves_out_an_empty_subtype_table() -> None:
    val = _val(16, 0.2)
    report = evaluate_predictions({"val": val}, settings=ReportSettings(resamples=100))
    assert report.threshold_interval is not None
    assert report.metrics["val/threshold_ci_low"] == report.threshold_interval.low
    card = render_model_card(
        report,
        checkpoint="x.ckpt",
        data_sources=["site"],
        counts=[],
        preprocessing={},
        network={},
        figures={},
    )
    assert report.threshold_interval.describe() in card
    assert "None: no pneumonia film scored here is labelled bacteria or virus" in card
    assert "| split | subtype | films | sensitivity |" not in card
    # With subtypes, the table is there.
    kermany = evaluate_predictions(
        {"val": _val(16, 0.2, subtype="bacteria")}, settings=ReportSettings(resamples=100)
    )
    card = render_model_card(
        kermany,
        checkpoint="x",
        data_sources=[],
        counts=[],
        preprocessing={},
        network={},
        figures={},
    )
    assert "| split | subtype | films | sensitivity |" in card

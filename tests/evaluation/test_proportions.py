"""Intervals of proportions exact at 0 and 1 (issue 32 item 4): Clopper-Pearson by hand, and
the bootstrap intervals of the report, the subgroups and an external site widened to it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrnet.evaluation.external import operating_point_at
from cxrnet.evaluation.proportions import METHOD, clopper_pearson, widened
from cxrnet.evaluation.report import ReportSettings, SplitPredictions, scores_with_intervals
from cxrnet.evaluation.subgroups import subgroup_row

# By hand, at 95%: for k = n the lower end p solves p^n = 0.025; for k = 0 the upper end solves
# (1 - p)^n = 0.025; for 1 of 2, 1 - (1 - p)^2 = 0.025 and 1 - p^2 = 0.025.
ALL_OF_5 = (0.025 ** (1 / 5), 1.0)  # 0.4782
NONE_OF_39 = (0.0, 1 - 0.025 ** (1 / 39))  # 0.0903
ONE_OF_2 = (1 - math.sqrt(0.975), math.sqrt(0.975))


def test_clopper_pearson_matches_the_values_worked_by_hand() -> None:
    assert clopper_pearson(5, 5) == pytest.approx(ALL_OF_5, abs=1e-12)
    assert clopper_pearson(0, 39) == pytest.approx(NONE_OF_39, abs=1e-12)
    assert clopper_pearson(1, 2) == pytest.approx(ONE_OF_2, abs=1e-12)
    assert ALL_OF_5[0] == pytest.approx(0.4782, abs=1e-4)
    assert NONE_OF_39[1] == pytest.approx(0.0903, abs=1e-4)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))
    with pytest.raises(ValueError, match="6 successes in 5 trials"):
        clopper_pearson(6, 5)


def test_a_bootstrap_interval_is_widened_to_the_exact_one_on_each_side() -> None:
    assert widened((1.0, 1.0), 5, 5) == pytest.approx(ALL_OF_5)
    low = clopper_pearson(6, 10)[0]
    assert widened((0.3, 0.9), 6, 10) == pytest.approx((low, 0.9))  # 0.262: exact is wider
    assert widened((0.1, 0.95), 6, 10) == pytest.approx((0.1, 0.95))  # bootstrap is wider
    assert all(math.isnan(v) for v in widened((math.nan, math.nan), 0, 0))


def _preds(probs: list[float], labels: list[int]) -> SplitPredictions:
    n = len(probs)
    return SplitPredictions(
        np.asarray(probs),
        np.asarray(labels),
        tuple(f"f{i}.png" for i in range(n)),
        tuple("unknown" if y else "normal" for y in labels),
        tuple(f"p{i}" for i in range(n)),
    )


def test_the_report_gives_5_of_5_films_right_no_interval_of_a_point() -> None:
    # 5 pneumonia films all called, 39 normal films none called: the bootstrap alone gives
    # 1.000 (1.000-1.000) and 0.000 (0.000-0.000).
    preds = _preds([0.9] * 5 + [0.1] * 39, [1] * 5 + [0] * 39)
    metrics = scores_with_intervals("test", preds, 0.5, ReportSettings(resamples=200))
    assert metrics["test/recall_at_threshold"] == 1.0
    low, high = (
        metrics["test/recall_at_threshold_ci_low"],
        metrics["test/recall_at_threshold_ci_high"],
    )
    assert (low, high) == pytest.approx(ALL_OF_5)
    assert metrics["test/specificity_at_threshold"] == 1.0
    assert metrics["test/specificity_at_threshold_ci_low"] == pytest.approx(0.025 ** (1 / 39))
    # AUROC is no proportion: its interval stays the bootstrap's.
    assert metrics["test/auroc_ci_low"] == metrics["test/auroc_ci_high"] == 1.0


def test_a_subgroup_and_a_site_get_exact_edges_too() -> None:
    probs, labels = np.asarray([0.9] * 5), np.asarray([1] * 5)
    row = subgroup_row("view", "PA", probs, labels, 0.5, resamples=200)
    assert (row.sensitivity.low, row.sensitivity.high) == pytest.approx(ALL_OF_5)
    assert (row.prevalence.low, row.prevalence.high) == pytest.approx(ALL_OF_5)
    assert row.specificity.value is None
    site = operating_point_at(
        _preds([0.1] * 39 + [0.9], [0] * 39 + [1]), 0.5, ReportSettings(resamples=200)
    )
    assert site.values["specificity"] == 1.0
    assert site.intervals["specificity"] == pytest.approx((0.025 ** (1 / 39), 1.0))
    assert "Clopper-Pearson" in METHOD

"""The patient bootstrap: weighted resamples against films written out with repeats, and
intervals against the original one-patient-at-a-time algorithm."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cxrnet.evaluation.bootstrap import (
    PatientDraws,
    bootstrap_intervals,
    bootstrap_weighted,
    group_indices,
)
from cxrnet.evaluation.confusion import confusion_at
from cxrnet.evaluation.curves import RankedScores, auroc, average_precision
from cxrnet.evaluation.report import _resampled_scores, _scores


def _reference_intervals(metrics, n, groups, resamples, seed, level):
    """The original algorithm: per resample, a Python loop concatenating drawn patients."""
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


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Predictions with patients of 1-4 films, ties on a coarse grid, sometimes one class rare."""
    rng = np.random.default_rng(seed)
    n_patients = int(rng.integers(1, 30))
    films = rng.integers(1, 5, n_patients)
    patient_of = np.repeat(np.arange(n_patients), films)
    labels = rng.integers(0, 2, n_patients)[patient_of]
    if seed % 3 == 0:
        labels = (rng.random(len(patient_of)) < 0.1).astype(np.int64)  # few or no positives
    probabilities = np.clip(0.4 * labels + rng.normal(0.3, 0.25, len(labels)), 0, 1)
    probabilities = np.round(probabilities, int(rng.integers(1, 4)))  # heavy ties
    names = None if seed % 4 == 1 else [f"p{i:02d}" for i in patient_of]
    return probabilities, labels, names


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("seed", range(60))
def test_weighted_metrics_equal_the_metrics_of_repeated_films(seed: int) -> None:
    probabilities, labels, _ = _case(seed)
    rng = np.random.default_rng(seed + 1000)
    n = len(labels)
    weights = rng.integers(0, 4, (6, n))
    weights[0] = 1  # every film once: the plain metrics
    weights[1] = 0
    weights[1, : max(1, n // 3)] = 2  # most films absent
    draws = PatientDraws(weights, np.arange(n))
    threshold = float(np.median(probabilities))
    tally = RankedScores.of(probabilities, labels).tally(draws.weights)
    got = {
        "auroc": tally.auroc(),
        "auprc": tally.average_precision(),
        **tally.confusion(threshold).metrics(),
    }
    matmul = confusion_at(probabilities >= threshold, labels, weights)
    for row in range(len(weights)):
        films = np.repeat(np.arange(n), weights[row])
        p, y = probabilities[films], labels[films]
        expected = _scores(p, y, threshold)
        # Bit for bit, not approximately: the intervals must not move.
        assert _same(got["auroc"][row], auroc(p, y))
        assert _same(got["auprc"][row], average_precision(p, y))
        for name in ("recall", "specificity", "precision", "f1", "accuracy"):
            assert got[name][row] == expected[f"{name}_at_threshold"]
        assert matmul.tp[row] == np.sum((p >= threshold) & (y == 1))
        assert matmul.tn[row] == np.sum((p < threshold) & (y == 0))


@pytest.mark.parametrize("seed", range(12))
def test_report_intervals_equal_the_original_algorithm(seed: int) -> None:
    probabilities, labels, patients = _case(seed)
    threshold = 0.4
    n = len(labels)
    expected = _reference_intervals(
        lambda idx: _scores(probabilities[idx], labels[idx], threshold), n, patients, 200, seed, 0.9
    )
    weighted = bootstrap_weighted(
        _resampled_scores(probabilities, labels, threshold), n, patients, 200, seed, 0.9
    )
    general = bootstrap_intervals(
        lambda idx: _scores(probabilities[idx], labels[idx], threshold), n, patients, 200, seed, 0.9
    )
    assert set(weighted) == set(expected)
    for name, (low, high) in expected.items():
        assert _same(weighted[name][0], low) and _same(weighted[name][1], high), name
        assert _same(general[name][0], low) and _same(general[name][1], high), name


def test_draws_do_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import cxrnet.evaluation.bootstrap as bootstrap

    probabilities, labels, patients = _case(7)
    scores = _resampled_scores(probabilities, labels, 0.5)
    whole = bootstrap_weighted(scores, len(labels), patients, 300, seed=3)
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", 7)  # a resample or two per block
    assert bootstrap_weighted(scores, len(labels), patients, 300, seed=3) == whole


def test_general_path_keeps_every_film_of_a_drawn_patient_in_draw_order() -> None:
    patients = ["b", "a", "b", "c", "a", "b"]
    members = {name: [i for i, p in enumerate(patients) if p == name] for name in "abc"}
    seen: list[np.ndarray] = []
    bootstrap_intervals(lambda idx: seen.append(idx) or {}, 6, patients, resamples=20, seed=1)
    rng = np.random.default_rng(1)
    for indices in seen:
        drawn = rng.integers(0, 3, 3)
        assert indices.tolist() == [i for g in drawn for i in members["abc"[g]]]


@pytest.mark.parametrize("weighted", [False, True])
def test_level_95_reports_the_2_5th_and_97_5th_percentiles(weighted: bool) -> None:
    # Whatever the draws, the k-th resample's value is k: the resampled values are 0..999, whose
    # 2.5th and 97.5th percentiles (linear interpolation) are 24.975 and 974.025. A 90%
    # interval (49.95, 949.05) reported as 95% would fail here.
    counter = itertools.count()
    if weighted:
        intervals = bootstrap_weighted(
            lambda draws: {"k": np.array([next(counter) for _ in range(len(draws))])},
            50,
            resamples=1000,
            level=0.95,
        )
    else:
        intervals = bootstrap_intervals(
            lambda idx: {"k": float(next(counter))}, 50, resamples=1000, level=0.95
        )
    assert intervals["k"] == pytest.approx((24.975, 974.025), abs=1e-9)


def test_undefined_values_are_left_out_of_the_percentiles() -> None:
    # Odd resamples are NaN: the interval is that of the even values 0, 2, ..., 198 alone.
    values = iter([float(k) if k % 2 == 0 else float("nan") for k in range(200)])
    intervals = bootstrap_intervals(
        lambda idx: {"k": next(values), "nan": np.nan},
        10,
        resamples=200,
        level=0.5,
    )
    assert intervals["k"] == pytest.approx(tuple(np.percentile(np.arange(0, 200, 2), [25, 75])))
    assert all(np.isnan(intervals["nan"]))

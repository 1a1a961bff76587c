"""The report's numbers per kind of film, and how well the kind alone predicts the label.

A clinician's question is per population: an AUROC over PA and AP films together can come from a
network that tells the views apart while pneumonia is far more common on AP films. So for each
metadata column asked for (view, sex, age band, source ...) every category gets its films,
prevalence, AUROC and sensitivity and specificity at the chosen threshold, each with a patient
bootstrap interval; and a shortcut check scores each column alone as a predictor of the label,
so a confound is written next to the model's score. Which category each film is in (and the
settings that name the columns) is ``subgroup_columns``.

Plain arrays in, frozen rows out; nothing here knows splits, files or loggers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cxrnet.data.records import UNKNOWN
from cxrnet.evaluation.bootstrap import PatientDraws, WeightedMetricFn, bootstrap_weighted
from cxrnet.evaluation.confusion import confusion_at_threshold
from cxrnet.evaluation.curves import RankedScores, auroc
from cxrnet.evaluation.proportions import widened
from cxrnet.evaluation.subgroup_columns import (
    AGE,
    AGE_BAND,
    DEFAULT_AGE_BANDS,
    category_order,
    numeric_values,
    table_values,
)

# A column that alone predicts the label with AUROC at least this is flagged as a shortcut.
DEFAULT_SHORTCUT_FLAG = 0.7


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval; ``value`` None where it is undefined
    (AUROC of a category with one class, sensitivity without pneumonia films)."""

    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class SubgroupRow:
    """One category of one column: its films and the model's numbers on them alone."""

    column: str
    category: str
    n: int
    n_pos: int
    prevalence: Estimate
    auroc: Estimate
    sensitivity: Estimate  # at the chosen threshold
    specificity: Estimate

    def estimates(self) -> dict[str, Estimate]:
        """The estimates by their ``ESTIMATES`` name, in table order."""
        return {name: getattr(self, name) for name in ESTIMATES}


# The bootstrap's name of each estimate, and the metric name it is reported under.
ESTIMATES = {
    "prevalence": "prevalence",
    "auroc": "auroc",
    "sensitivity": "recall_at_threshold",
    "specificity": "specificity_at_threshold",
}


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, NaN where the denominator is 0: a resample without films
    of a class says nothing about that class's rate, so it is left out of the percentiles."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _resampled(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> WeightedMetricFn:
    """The row's estimates for a block of resamples at once, from per-film weights (as
    ``report._resampled_scores``): ranked once, every resample from cumulative sums."""
    ranked = RankedScores.of(probabilities, labels)

    def estimates(draws: PatientDraws) -> dict[str, np.ndarray]:
        tally = ranked.tally(draws.weights)
        n_pos, n_neg = tally.class_totals()
        c = tally.confusion(threshold)
        return {
            "prevalence": _rate(n_pos, n_pos + n_neg),
            "auroc": tally.auroc(),
            "sensitivity": _rate(c.tp, c.tp + c.fn),
            "specificity": _rate(c.tn, c.tn + c.fp),
        }

    return estimates


def subgroup_row(
    column: str,
    category: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    patients: Sequence[str] | None = None,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> SubgroupRow:
    """The row of the films given (those of one category): point estimates, and percentile
    intervals over ``resamples`` draws of the category's patients (its films if ``patients``
    is None); resamples where an estimate is undefined are left out of its percentiles."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    n, n_pos = len(labels), int(np.sum(labels == 1))
    c = confusion_at_threshold(probabilities, labels, threshold)
    points = {
        "prevalence": n_pos / n,
        "auroc": auroc(probabilities, labels),
        "sensitivity": c.tp / (c.tp + c.fn) if n_pos else math.nan,
        "specificity": c.tn / (c.tn + c.fp) if n_pos < n else math.nan,
    }
    intervals = bootstrap_weighted(
        _resampled(probabilities, labels, threshold),
        n,
        groups=patients,
        resamples=resamples,
        seed=seed,
        level=level,
    )
    # The proportions' intervals widened to their exact ones (``proportions``): a category of
    # 5 films all called right is not a sensitivity of 1.000 (1.000-1.000).
    counts = {
        "prevalence": (n_pos, n),
        "sensitivity": (c.tp, c.tp + c.fn),
        "specificity": (c.tn, c.tn + c.fp),
    }
    for name, (successes, trials) in counts.items():
        intervals[name] = widened(intervals[name], int(successes), int(trials), level)
    estimates = {}
    for name, value in points.items():
        if math.isnan(value):
            estimates[name] = Estimate(None)
        else:
            low, high = intervals[name]
            estimates[name] = Estimate(float(value), _finite_or_none(low), _finite_or_none(high))
    return SubgroupRow(column, category, n, n_pos, **estimates)


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def subgroup_table(
    column: str,
    values: Sequence[str],
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    patients: Sequence[str] | None = None,
    *,
    edges: Sequence[float] = DEFAULT_AGE_BANDS,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[SubgroupRow, ...]:
    """One ``SubgroupRow`` per category of ``values`` (one category per film)."""
    categories = np.asarray(values, dtype=object)
    people = None if patients is None else np.asarray(patients, dtype=object)
    rows = []
    for category in category_order(list(values), column, edges):
        chosen = categories == category
        rows.append(
            subgroup_row(
                column,
                category,
                probabilities[chosen],
                labels[chosen],
                threshold,
                None if people is None else tuple(people[chosen]),
                resamples=resamples,
                seed=seed,
                level=level,
            )
        )
    return tuple(rows)


# --- the shortcut check --------------------------------------------------------------------


@dataclass(frozen=True)
class ShortcutCheck:
    """How well a column alone predicts the label on one split.

    A categorical column scores each film by its category's prevalence of pneumonia (on the
    same films: an upper bound, and one that a column of many small categories reaches by
    chance); a numeric one (age) by its value, in whichever direction predicts better.
    """

    column: str
    kind: Literal["categorical", "numeric"]
    auroc: float | None  # None: the films have one class, or no numeric values
    films: int  # films scored: all for a categorical column, those with a value for a numeric
    total: int
    categories: int  # distinct values scored
    direction: str  # numeric: "higher" or "lower" values go with pneumonia
    flagged: bool
    within: str = ""  # the table to read instead (default: the column's own)

    def sentence(self, split: str, model_auroc: float | None = None) -> str:
        """What report.md says when the check is flagged, next to the model's own AUROC."""
        notes = []
        if self.direction:
            notes.append(f"{self.direction} {self.column} with pneumonia")
        if self.films != self.total:
            notes.append(f"on the {self.films} of {self.total} films with one")
        if model_auroc is not None:
            notes.append(f"the model's AUROC {model_auroc:.2f}")
        aside = f" ({'; '.join(notes)})" if notes else ""
        table = self.within or self.column
        within = "age band" if table == AGE_BAND else table
        return (
            f"{self.column} alone predicts the label with AUROC {self.auroc:.2f} on {split}"
            f"{aside}: read the model's AUROC within each {within}, not the overall one."
        )


def shortcut_check(
    column: str,
    values: Sequence[str],
    labels: np.ndarray,
    flag: float = DEFAULT_SHORTCUT_FLAG,
    within: str = "",
) -> ShortcutCheck:
    """Score ``values`` (one per film) alone against ``labels``; flagged at AUROC >= ``flag``.

    Numeric when every value given is a number (films without one are left out, and counted);
    otherwise categorical, a missing value being a category of its own.
    """
    labels = np.asarray(labels)
    numbers = numeric_values(values)
    if numbers is not None:
        known = ~np.isnan(numbers)
        area = auroc(numbers[known], labels[known])
        direction = "" if math.isnan(area) else ("higher" if area >= 0.5 else "lower")
        score = max(area, 1.0 - area)
        films, categories, kind = int(known.sum()), len(np.unique(numbers[known])), "numeric"
    else:
        names, inverse = np.unique(
            np.asarray([v.strip() or UNKNOWN for v in values], dtype=str), return_inverse=True
        )
        inverse = inverse.reshape(-1)
        positives = np.bincount(inverse, weights=labels == 1, minlength=len(names))
        prevalence = positives / np.bincount(inverse, minlength=len(names))
        score = auroc(prevalence[inverse], labels)
        direction, films, categories, kind = "", len(labels), len(names), "categorical"
    defined = not math.isnan(score)
    return ShortcutCheck(
        column,
        kind,
        float(score) if defined else None,
        films,
        len(labels),
        categories,
        direction,
        defined and score >= flag,
        within,
    )


# --- one split -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubgroupReport:
    """One split's subgroup tables (by column, in the order asked) and shortcut checks."""

    tables: Mapping[str, tuple[SubgroupRow, ...]]
    shortcuts: tuple[ShortcutCheck, ...]

    def metrics(self, split: str) -> dict[str, float]:
        """Flat metric names: ``<split>/subgroup/<column>=<category>/<metric>`` with
        ``_ci_low``/``_ci_high``, and ``<split>/shortcut/<column>/auroc`` and ``/flagged``.
        An undefined estimate is NaN (null in metrics.json)."""
        values: dict[str, float] = {}
        for column, rows in self.tables.items():
            for row in rows:
                prefix = f"{split}/subgroup/{column}={row.category.replace('/', '_')}"
                values[f"{prefix}/n"] = float(row.n)
                values[f"{prefix}/n_pos"] = float(row.n_pos)
                for name, estimate in row.estimates().items():
                    metric = ESTIMATES[name]
                    values[f"{prefix}/{metric}"] = _nan_if_none(estimate.value)
                    values[f"{prefix}/{metric}_ci_low"] = _nan_if_none(estimate.low)
                    values[f"{prefix}/{metric}_ci_high"] = _nan_if_none(estimate.high)
        for check in self.shortcuts:
            values[f"{split}/shortcut/{check.column}/auroc"] = _nan_if_none(check.auroc)
            values[f"{split}/shortcut/{check.column}/flagged"] = float(check.flagged)
        return values


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def evaluate_subgroups(
    columns: Mapping[str, Sequence[str]],
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    patients: Sequence[str] | None = None,
    *,
    names: Sequence[str],
    edges: Sequence[float] = DEFAULT_AGE_BANDS,
    flag: float = DEFAULT_SHORTCUT_FLAG,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> SubgroupReport:
    """The tables of ``names`` and their shortcut checks, plus that of the numeric age behind
    a derived ``age_band``. That some film of the evaluation has each column is checked
    before (``check_subgroup_columns``): these films may still lack one."""
    tables, shortcuts = {}, []
    for name in names:
        values = table_values(columns, name, len(labels), edges)
        tables[name] = subgroup_table(
            name,
            values,
            probabilities,
            labels,
            threshold,
            patients,
            edges=edges,
            resamples=resamples,
            seed=seed,
            level=level,
        )
        derived = name == AGE_BAND and not any(columns.get(AGE_BAND, ()))
        # A numeric column is checked on its numbers, which its table's categories may hide.
        raw = values if derived else tuple(columns.get(name, ("",) * len(labels)))
        shortcuts.append(shortcut_check(name, raw, labels, flag))
        if derived and AGE not in names and any(columns.get(AGE, ())):
            shortcuts.append(shortcut_check(AGE, columns[AGE], labels, flag, within=AGE_BAND))
    return SubgroupReport(tables, tuple(shortcuts))

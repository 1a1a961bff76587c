"""A checkpoint on another site's films (``cxrnet-eval data.root=<external>``): what its stored
operating point does there, which threshold would give the site the sensitivity the checkpoint
had on validation (what the site would have to recalibrate), how well its probabilities are
calibrated there, and what it makes of films of classes it was never trained on.

Plain arrays in (the test split's predictions, the other classes' probabilities), numbers and a
report section out; ``cxrnet.passes.checkpoint_eval`` runs the model and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cxrnet.evaluation.bootstrap import PatientDraws, bootstrap_weighted
from cxrnet.evaluation.confusion import Confusion, confusion_at_threshold
from cxrnet.evaluation.curves import RankedScores
from cxrnet.evaluation.proportions import METHOD, confusion_counts, widened
from cxrnet.evaluation.report import EvaluationReport, ReportSettings, SplitPredictions
from cxrnet.evaluation.subgroup_columns import category_order, table_values
from cxrnet.evaluation.subgroups import Estimate, SubgroupReport, SubgroupRow, subgroup_table
from cxrnet.evaluation.thresholds import OperatingPoint, choose_threshold

# What an operating point is judged by at a site: of the films a reader would see flagged.
SITE_METRICS = ("sensitivity", "specificity", "ppv", "flagged")


def validation_at_threshold(report: EvaluationReport) -> dict[str, float]:
    """What the chosen operating point achieved on the validation split, for the checkpoint
    (``stamp_checkpoint``): empty when the report has no validation split."""
    if "val" not in report.splits:
        return {}
    labels = report.splits["val"].predictions.labels
    return {
        "sensitivity": report.metrics["val/recall_at_threshold"],
        "specificity": report.metrics["val/specificity_at_threshold"],
        "n_normal": float(np.sum(labels == 0)),
        "n_pneumonia": float(np.sum(labels == 1)),
    }


@dataclass(frozen=True)
class TargetSensitivity:
    """The sensitivity a site's recalibrated threshold is to reach, and where it comes from."""

    value: float | None
    source: str


VALIDATION_SOURCE = "the checkpoint's sensitivity on its validation split at the stored threshold"


def target_sensitivity(
    validation: Mapping[str, float],
    operating_point: OperatingPoint,
    source: str = VALIDATION_SOURCE,
) -> TargetSensitivity:
    """The checkpoint's validation sensitivity at its stored threshold (``source`` says what
    it is). Checkpoints stamped before it was stored give the floor their threshold was chosen
    to keep (criterion ``sensitivity``), else nothing: there is then no target to recalibrate to."""
    if "sensitivity" in validation:
        return TargetSensitivity(validation["sensitivity"], source)
    if operating_point.criterion == "sensitivity" and operating_point.floor is not None:
        return TargetSensitivity(
            operating_point.floor,
            "the sensitivity floor the stored threshold was chosen to keep (this checkpoint "
            "predates storing its validation sensitivity)",
        )
    return TargetSensitivity(
        None,
        "this checkpoint predates storing its validation sensitivity and its threshold was "
        f"not chosen for a sensitivity ({operating_point.criterion}); the best checkpoint of a "
        "run trained with this version stores it",
    )


def threshold_for_sensitivity(
    probabilities: np.ndarray, labels: np.ndarray, sensitivity: float
) -> float | None:
    """The highest threshold whose sensitivity on these films is at least ``sensitivity`` (so
    the best specificity that keeps it); None without films of both classes."""
    labels = np.asarray(labels)
    if set(np.unique(labels)) != {0, 1}:
        return None
    return choose_threshold(probabilities, labels, "sensitivity", min_sensitivity=sensitivity)


def _site_metrics(counts: Confusion) -> dict[str, np.ndarray]:
    rates = counts.metrics()
    total = np.asarray(counts.tp + counts.fp + counts.fn + counts.tn, dtype=np.float64)
    called = np.asarray(counts.tp + counts.fp, dtype=np.float64)
    flagged = np.divide(called, total, out=np.zeros_like(total), where=total != 0)
    return {
        "sensitivity": np.asarray(rates["recall"]),
        "specificity": np.asarray(rates["specificity"]),
        "ppv": np.asarray(rates["precision"]),
        "flagged": flagged,
    }


@dataclass(frozen=True)
class SiteOperatingPoint:
    """Sensitivity, specificity, PPV and the fraction of films flagged at one threshold, each
    with its patient-bootstrap interval."""

    threshold: float
    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]


def operating_point_at(
    predictions: SplitPredictions, threshold: float, settings: ReportSettings
) -> SiteOperatingPoint:
    probs, labels = predictions.probabilities, predictions.labels
    point = _site_metrics(confusion_at_threshold(probs, labels, threshold))
    ranked = RankedScores.of(probs, labels)

    def resampled(draws: PatientDraws) -> dict[str, np.ndarray]:
        return _site_metrics(ranked.tally(draws.weights).confusion(threshold))

    intervals = bootstrap_weighted(
        resampled,
        len(predictions),
        groups=predictions.patients,
        resamples=settings.resamples,
        seed=settings.seed,
        level=settings.level,
    )
    counts = confusion_counts(confusion_at_threshold(probs, labels, threshold))
    total = counts["accuracy"][1]
    exact = {
        "sensitivity": counts["recall"],
        "specificity": counts["specificity"],
        "ppv": counts["precision"],
        "flagged": (counts["precision"][1], total),
    }
    for name, (successes, trials) in exact.items():
        intervals[name] = widened(intervals[name], successes, trials, settings.level)
    return SiteOperatingPoint(threshold, {k: float(v) for k, v in point.items()}, intervals)


@dataclass(frozen=True)
class OtherClassResult:
    """Films of one class outside NORMAL/PNEUMONIA: how many, and the fraction flagged at
    each threshold (by name) with its patient-bootstrap interval."""

    name: str
    n: int
    flagged: dict[str, float]
    intervals: dict[str, tuple[float, float]]


def flagged_fraction(
    name: str,
    probabilities: np.ndarray,
    patients: Sequence[str],
    thresholds: Mapping[str, float],
    settings: ReportSettings,
) -> OtherClassResult:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    called = {key: probabilities >= t for key, t in thresholds.items()}

    def resampled(draws: PatientDraws) -> dict[str, np.ndarray]:
        weights = draws.weights()
        total = weights.sum(axis=1)
        return {key: weights @ flags.astype(np.float64) / total for key, flags in called.items()}

    intervals = bootstrap_weighted(
        resampled,
        len(probabilities),
        groups=list(patients),
        resamples=settings.resamples,
        seed=settings.seed,
        level=settings.level,
    )
    flagged = {key: float(np.mean(flags)) for key, flags in called.items()}
    for key, flags in called.items():
        intervals[key] = widened(intervals[key], int(flags.sum()), len(flags), settings.level)
    return OtherClassResult(name, len(probabilities), flagged, intervals)


def group_values(
    columns: Mapping[str, Sequence[str]], n: int, settings: ReportSettings
) -> dict[str, tuple[str, ...]]:
    """Each ``report.subgroups`` column as one category per film (``age_band`` from ``age``)."""
    return {name: table_values(columns, name, n, settings.age_bands) for name in settings.subgroups}


def _key(column: str, category: str) -> str:
    return f"{column}={category.replace('/', '_')}"


@dataclass(frozen=True)
class OtherFilms:
    """One other class's films: probabilities, patients and metadata columns, in one order."""

    probabilities: np.ndarray
    patients: tuple[str, ...]
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class SiteReport:
    """Everything ``cxrnet-eval`` adds for an external site, for metrics.json and report.md."""

    stored: SiteOperatingPoint
    target: TargetSensitivity
    recalibrated: SiteOperatingPoint | None
    ece: float
    mean_probability: float
    prevalence: float
    others: list[OtherClassResult] = field(default_factory=list)
    # Per ``report.subgroups`` category: the recalibrated threshold's rows (the stored one's
    # are the test split's subgroup tables), and each other class's flagged fractions.
    recalibrated_groups: dict[str, tuple[SubgroupRow, ...]] = field(default_factory=dict)
    other_groups: dict[str, dict[str, list[OtherClassResult]]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"site/threshold_stored": self.stored.threshold}
        if self.target.value is not None:
            values["site/target_sensitivity"] = self.target.value
        points = {"stored": self.stored, "recalibrated": self.recalibrated}
        for key, point in points.items():
            if point is None:
                continue
            if key == "recalibrated":
                values["site/threshold_recalibrated"] = point.threshold
            for name in SITE_METRICS:
                values[f"site/{key}/{name}"] = point.values[name]
                low, high = point.intervals[name]
                values[f"site/{key}/{name}_ci_low"] = low
                values[f"site/{key}/{name}_ci_high"] = high
        values["site/ece"] = self.ece
        values["site/mean_probability"] = self.mean_probability
        values["site/prevalence"] = self.prevalence
        for other in self.others:
            values |= _flagged_metrics(f"site/other/{other.name}", other)
            for column, rows in self.other_groups.get(other.name, {}).items():
                for row in rows:
                    prefix = f"site/other/{other.name}/subgroup/{_key(column, row.name)}"
                    values |= _flagged_metrics(prefix, row)
        if self.recalibrated_groups:
            groups = SubgroupReport(self.recalibrated_groups, ())
            values |= groups.metrics("site/recalibrated")
        return values


def _flagged_metrics(prefix: str, result: OtherClassResult) -> dict[str, float]:
    values = {f"{prefix}/n": float(result.n)}
    for key, fraction in result.flagged.items():
        low, high = result.intervals[key]
        values[f"{prefix}/flagged_{key}"] = fraction
        values[f"{prefix}/flagged_{key}_ci_low"] = low
        values[f"{prefix}/flagged_{key}_ci_high"] = high
    return values


def site_report(
    predictions: SplitPredictions,
    operating_point: OperatingPoint,
    validation: Mapping[str, float],
    settings: ReportSettings,
    ece: float,
    others: Mapping[str, OtherFilms] | None = None,
    validation_source: str = VALIDATION_SOURCE,
) -> SiteReport:
    """The site's numbers from its test predictions; ``others`` maps each other class to its
    films. ``ece`` is the report's (one home for calibration). Every number is given per
    category of the ``report.subgroups`` columns too."""
    stored = operating_point_at(predictions, operating_point.threshold, settings)
    target = target_sensitivity(validation, operating_point, validation_source)
    recalibrated = None
    if target.value is not None:
        threshold = threshold_for_sensitivity(
            predictions.probabilities, predictions.labels, target.value
        )
        if threshold is not None:
            recalibrated = operating_point_at(predictions, threshold, settings)
    thresholds = {"stored": operating_point.threshold}
    if recalibrated is not None:
        thresholds["recalibrated"] = recalibrated.threshold
    results, other_groups = [], {}
    for name, films in sorted((others or {}).items()):
        results.append(
            flagged_fraction(name, films.probabilities, films.patients, thresholds, settings)
        )
        other_groups[name] = {
            column: _flagged_by_category(films, column, values, thresholds, settings)
            for column, values in group_values(
                films.columns, len(films.probabilities), settings
            ).items()
        }
    recalibrated_groups = {}
    if recalibrated is not None:
        n = len(predictions)
        for column, values in group_values(predictions.columns, n, settings).items():
            recalibrated_groups[column] = subgroup_table(
                column,
                values,
                predictions.probabilities,
                predictions.labels,
                recalibrated.threshold,
                predictions.patients,
                edges=settings.age_bands,
                resamples=settings.resamples,
                seed=settings.seed,
                level=settings.level,
            )
    return SiteReport(
        stored,
        target,
        recalibrated,
        ece,
        float(np.mean(predictions.probabilities)),
        float(np.mean(predictions.labels)),
        results,
        recalibrated_groups,
        other_groups,
    )


def _flagged_by_category(
    films: OtherFilms,
    column: str,
    values: Sequence[str],
    thresholds: Mapping[str, float],
    settings: ReportSettings,
) -> list[OtherClassResult]:
    """``flagged_fraction`` of the films of each category (named by the category)."""
    categories = np.asarray(values, dtype=object)
    patients = np.asarray(films.patients, dtype=object)
    order = category_order(list(values), column, settings.age_bands)
    return [
        flagged_fraction(
            category,
            films.probabilities[categories == category],
            list(patients[categories == category]),
            thresholds,
            settings,
        )
        for category in order
    ]


def _cell(point: SiteOperatingPoint, name: str) -> str:
    low, high = point.intervals[name]
    return f"{point.values[name]:.3f} ({low:.3f}-{high:.3f})"


# What the site section says when nobody compared its films with the model's own.
UNCHECKED = "Whether the model saw any of these films was not checked."


def render_site_section(
    site: SiteReport, level: float, figure: str = "", provenance: str = UNCHECKED
) -> str:
    """The report.md section: operating points, calibration and other classes at the site.
    ``provenance``: what was checked of the films against the ones the model saw
    (``cxrnet.data.seen_films.SeenCheck.sentence``)."""
    lines = [
        "## This site (external validation)",
        "",
        f"{provenance} Intervals: {level:.0%} {METHOD}.",
        "",
        "### Operating point",
        "",
        "| operating point | threshold | sensitivity | specificity | PPV | flagged |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("stored (chosen on the checkpoint's validation split)", site.stored)]
    if site.recalibrated is not None:
        rows.append(("reaching the stored sensitivity on this site", site.recalibrated))
    for name, point in rows:
        cells = " | ".join(_cell(point, metric) for metric in SITE_METRICS)
        lines.append(f"| {name} | {point.threshold:.6f} | {cells} |")
    lines.append("")
    if site.target.value is None:
        lines.append(f"No threshold for the stored sensitivity: {site.target.source}.")
    elif site.recalibrated is None:
        lines.append(
            "No threshold for the stored sensitivity: this site's films are not of both classes."
        )
    else:
        lines.append(
            f"Stored sensitivity {site.target.value:.3f} ({site.target.source}). The second "
            "threshold is the highest that reaches it on this site's own films: it is what "
            "the site would have to recalibrate to, found on the films it is reported on, so "
            "its sensitivity holds by construction and is no validated result."
        )
    if site.recalibrated_groups and site.recalibrated is not None:
        lines += [
            "",
            f"At the threshold reaching the stored sensitivity ({site.recalibrated.threshold:.6f}),"
            " per group (the stored threshold's are in the subgroup tables):",
            "",
            "| group | films | pneumonia | sensitivity | specificity |",
            "|---|---|---|---|---|",
        ]
        for column, rows in site.recalibrated_groups.items():
            for row in rows:
                sens, spec = row.sensitivity, row.specificity
                lines.append(
                    f"| {column}={row.category} | {row.n} | {row.n_pos} | {_estimate(sens)} | "
                    f"{_estimate(spec)} |"
                )
    lines += [
        "",
        "### Calibration on this site",
        "",
        f"Expected calibration error {site.ece:.3f}; mean predicted probability "
        f"{site.mean_probability:.3f} against a pneumonia prevalence of {site.prevalence:.3f} "
        "among this site's NORMAL and PNEUMONIA films"
        + (f"; reliability diagram in [{figure}]({figure})." if figure else "."),
    ]
    if site.others:
        keys = list(site.others[0].flagged)
        header = " | ".join(f"flagged at the {key} threshold" for key in keys)
        lines += [
            "",
            "### Films of other classes",
            "",
            "Neither NORMAL nor PNEUMONIA: reported as their own groups, never in AUROC, "
            "sensitivity or specificity.",
            "",
            f"| class | films | {header} |",
            "|---|---|" + "---|" * len(keys),
        ]
        for other in site.others:
            cells = " | ".join(_flagged_cell(other, key) for key in keys)
            lines.append(f"| {other.name} | {other.n} | {cells} |")
            for column, rows in site.other_groups.get(other.name, {}).items():
                for row in rows:
                    cells = " | ".join(_flagged_cell(row, key) for key in keys)
                    lines.append(f"| {other.name}, {column}={row.name} | {row.n} | {cells} |")
    return "\n".join(lines) + "\n"


def _flagged_cell(result: OtherClassResult, key: str) -> str:
    low, high = result.intervals[key]
    return f"{result.flagged[key]:.3f} ({low:.3f}-{high:.3f})"


def _estimate(estimate: Estimate) -> str:
    if estimate.value is None:
        return "-"
    low, high = estimate.low, estimate.high
    interval = "" if low is None or high is None else f" ({low:.3f}-{high:.3f})"
    return f"{estimate.value:.3f}{interval}"

"""The evaluation pass: one set of predictions per split in, every number a report needs out.

Plain arrays and records in (no data module, no trainer): the operating point, metrics at it and
at 0.5 with patient-bootstrap intervals, sensitivity per subtype, calibration, curves, the most
confident errors. Files (CSVs, figures, report.md) and logger payloads are all derived from the
``EvaluationReport`` this returns, so they cannot disagree.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrnet.data.records import SOURCE_COLUMN, Record, metadata_columns
from cxrnet.evaluation.bootstrap import PatientDraws, WeightedMetricFn, bootstrap_weighted
from cxrnet.evaluation.calibration import apply_temperature, fit_temperature, reliability
from cxrnet.evaluation.confusion import confusion_at_threshold
from cxrnet.evaluation.curves import RankedScores, auroc, average_precision, pr_curve, roc_curve
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD
from cxrnet.evaluation.proportions import confusion_counts, widened
from cxrnet.evaluation.subgroup_columns import (
    DEFAULT_AGE_BANDS,
    check_subgroup_columns,
    check_subgroup_settings,
    present_columns,
)
from cxrnet.evaluation.subgroups import DEFAULT_SHORTCUT_FLAG, SubgroupReport, evaluate_subgroups
from cxrnet.evaluation.threshold_stability import ThresholdInterval, threshold_interval
from cxrnet.evaluation.thresholds import (
    OperatingPoint,
    ThresholdRule,
    choose_operating_point,
)

log = logging.getLogger(__name__)

# Reported at the chosen threshold and at 0.5 (the name alone: what training logs per epoch).
THRESHOLD_METRICS = ("accuracy", "precision", "recall", "specificity", "f1")
SUBTYPES = ("bacteria", "virus")


PREDICTION_COLUMNS = ("file", "label", "subtype", "patient", "probability", "prediction")


@dataclass(frozen=True)
class SplitPredictions:
    """Pneumonia probabilities of one split with what is known about each film."""

    probabilities: np.ndarray
    labels: np.ndarray
    files: tuple[str, ...]
    subtypes: tuple[str, ...]
    patients: tuple[str, ...] | None = None
    # The films' further columns (Record.metadata: view, age, sex, source ...), one value per
    # film, "" where a film lacks the column.
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.probabilities)
        lengths = {len(self.labels), len(self.files), len(self.subtypes)}
        if self.patients is not None:
            lengths.add(len(self.patients))
        lengths.update(len(values) for values in self.columns.values())
        if lengths != {n}:
            raise ValueError(f"{n} probabilities but per-film fields of lengths {sorted(lengths)}")

    @classmethod
    def from_records(
        cls, probabilities: np.ndarray, labels: np.ndarray, records: Sequence[Record]
    ) -> SplitPredictions:
        return cls(
            np.asarray(probabilities, dtype=np.float64),
            np.asarray(labels, dtype=np.int64),
            tuple(str(record.path) for record in records),
            tuple(record.subtype for record in records),
            tuple(record.patient for record in records),
            metadata_columns(records),
        )

    def __len__(self) -> int:
        return len(self.probabilities)


class NonFinitePredictions(FloatingPointError):
    """NaN or infinite probabilities: a threshold or metric from them would mean nothing."""


@dataclass(frozen=True)
class ReportSettings:
    """Bootstrap and calibration settings; the seed makes intervals reproducible.

    ``subgroups``: metadata columns to report per category (``age_band`` cut from ``age`` at
    ``age_bands``), each with a shortcut check flagged at AUROC >= ``shortcut_flag``.
    """

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    calibrate: bool = False
    bins: int = 10
    top_k_wrong: int = 8
    subgroups: tuple[str, ...] = ()
    age_bands: tuple[float, ...] = DEFAULT_AGE_BANDS
    shortcut_flag: float = DEFAULT_SHORTCUT_FLAG

    def __post_init__(self) -> None:
        # Lists from a config become tuples here: the settings stay hashable and comparable.
        names, edges, flag = check_subgroup_settings(
            self.subgroups, self.age_bands, self.shortcut_flag
        )
        object.__setattr__(self, "subgroups", names)
        object.__setattr__(self, "age_bands", edges)
        object.__setattr__(self, "shortcut_flag", flag)


@dataclass
class SplitReport:
    predictions: SplitPredictions
    confusion: dict[str, int]  # tp, fp, fn, tn at the chosen threshold
    ece: float
    reliability: Any
    calibrated_ece: float | None = None
    wrong: list[int] = field(default_factory=list)
    subgroups: SubgroupReport | None = None

    def curve(self, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The split's ROC curve (x: 1 - specificity, y: sensitivity) or precision-recall curve
        (x: recall, y: precision), for the figures and the W&B sink alike; None when the split
        has one class only, where there is no curve."""
        probs, labels = self.predictions.probabilities, self.predictions.labels
        if len(np.unique(labels)) < 2:
            return None
        if kind == "roc":
            x, y, _ = roc_curve(probs, labels)
        elif kind == "pr":
            x, y, _ = pr_curve(probs, labels)
        else:
            raise ValueError(f"curve kind must be 'roc' or 'pr', got {kind!r}")
        return x, y


@dataclass
class EvaluationReport:
    operating_point: OperatingPoint
    metrics: dict[str, float]
    splits: dict[str, SplitReport]
    settings: ReportSettings
    temperature: float | None = None
    # data.task=findings: each finding's operating point (the triage finding's is
    # ``operating_point``), stored with the model (``evaluation.finding_report``).
    finding_thresholds: dict[str, OperatingPoint] = field(default_factory=dict)
    # How far the threshold would move on resamples of the films that chose it (None where it
    # was given, not chosen here: a stored or fixed threshold).
    threshold_interval: ThresholdInterval | None = None

    def interval(self, key: str) -> tuple[float, float] | None:
        low, high = self.metrics.get(f"{key}_ci_low"), self.metrics.get(f"{key}_ci_high")
        return None if low is None or high is None else (low, high)


def _scores(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    values: dict[str, float] = {}
    for suffix, t in (("_at_threshold", threshold), ("", DEFAULT_THRESHOLD)):
        for name, value in confusion_at_threshold(probabilities, labels, t).metrics().items():
            values[f"{name}{suffix}"] = value
    values["auroc"] = auroc(probabilities, labels)
    values["auprc"] = average_precision(probabilities, labels)
    return values


def _resampled_scores(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float
) -> WeightedMetricFn:
    """``_scores`` for a block of bootstrap resamples at once, from per-film weights: the
    films are ranked once, and every resample's counts are cumulative sums over them."""
    ranked = RankedScores.of(probabilities, labels)

    def scores(draws: PatientDraws) -> dict[str, np.ndarray]:
        tally = ranked.tally(draws.weights)
        values: dict[str, np.ndarray] = {}
        for suffix, t in (("_at_threshold", threshold), ("", DEFAULT_THRESHOLD)):
            for name, value in tally.confusion(t).metrics().items():
                values[f"{name}{suffix}"] = value
        values["auroc"] = tally.auroc()
        values["auprc"] = tally.average_precision()
        return values

    return scores


def weighted_log_loss(
    probabilities: np.ndarray, labels: np.ndarray, class_weights: Sequence[float] | None
) -> float:
    """The training loss (class-weighted binary cross-entropy) from probabilities."""
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    per_film = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
    weights = np.ones(2) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    return float(np.mean(per_film * weights[labels]))


def confidently_wrong_indices(
    probabilities: np.ndarray, labels: np.ndarray, threshold: float, k: int
) -> list[int]:
    """Up to ``k`` wrong calls, the most confident in the wrong class first."""
    predicted = (probabilities >= threshold).astype(np.int64)
    wrong = np.flatnonzero(predicted != labels)
    confidence = np.where(predicted[wrong] == 1, probabilities[wrong], 1 - probabilities[wrong])
    return wrong[np.argsort(-confidence, kind="stable")][:k].tolist()


def evaluate_predictions(
    predictions: Mapping[str, SplitPredictions],
    rule: ThresholdRule | None = None,
    operating_point: OperatingPoint | None = None,
    settings: ReportSettings | None = None,
    class_weights: Sequence[float] | None = None,
) -> EvaluationReport:
    """Every number of the report from one prediction per film per split.

    The threshold is ``operating_point`` when given (e.g. the one stored in a checkpoint), else
    chosen by ``rule`` on the ``val`` split. Temperature scaling, when asked for, is fitted on
    ``val`` only and reported as calibration; decisions always use the model's own probabilities.
    """
    rule = rule or ThresholdRule()
    settings = settings or ReportSettings()
    _check_predictions(predictions, settings)
    stability = None
    if operating_point is None:
        if "val" not in predictions:
            raise ValueError("choosing a threshold needs validation predictions (split 'val')")
        val = predictions["val"]
        operating_point = choose_operating_point(val.probabilities, val.labels, rule)
        stability = threshold_interval(
            val.probabilities, val.labels, val.patients, rule, settings.seed, settings.level
        )
    threshold = operating_point.threshold
    temperature = None
    if settings.calibrate and "val" in predictions:
        val = predictions["val"]
        temperature = fit_temperature(val.probabilities, val.labels)
    metrics: dict[str, float] = {"val/threshold": threshold}
    if stability is not None:
        metrics |= stability.metrics()
    if temperature is not None:
        metrics["val/temperature"] = temperature
    splits: dict[str, SplitReport] = {}
    for split, preds in predictions.items():
        splits[split], split_metrics = _split_report(
            split, preds, threshold, settings, temperature, class_weights
        )
        metrics.update(split_metrics)
    return EvaluationReport(
        operating_point, metrics, splits, settings, temperature, threshold_interval=stability
    )


def _check_predictions(
    predictions: Mapping[str, SplitPredictions], settings: ReportSettings
) -> None:
    """Fail before any work on what no report can be made of: a subgroup column no film of any
    split has (a setting to fix), or probabilities that are NaN or infinite."""
    if settings.subgroups:
        present = {col for preds in predictions.values() for col in present_columns(preds.columns)}
        check_subgroup_columns(settings.subgroups, sorted(present))
    for split, preds in predictions.items():
        bad = int((~np.isfinite(preds.probabilities)).sum())
        if bad:
            raise NonFinitePredictions(
                f"{bad} of {len(preds)} {split} predictions are NaN or infinite (the network "
                "diverged): no threshold or metric can be reported"
            )


def _split_report(
    split: str,
    preds: SplitPredictions,
    threshold: float,
    settings: ReportSettings,
    temperature: float | None = None,
    class_weights: Sequence[float] | None = None,
) -> tuple[SplitReport, dict[str, float]]:
    """One split's report and its metrics (``<split>/<metric>``), in the order the report
    lists them: scores with bootstrap intervals, loss, sensitivity per subtype, calibration,
    then the subgroup tables."""
    probs, labels = preds.probabilities, preds.labels
    metrics = scores_with_intervals(split, preds, threshold, settings)
    metrics[f"{split}/loss"] = weighted_log_loss(probs, labels, class_weights)
    metrics.update(_subtype_recalls(split, preds, threshold))
    confusion = confusion_at_threshold(probs, labels, threshold).as_dict()
    rel = reliability(probs, labels, settings.bins)
    metrics[f"{split}/ece"] = rel.ece
    report = SplitReport(preds, confusion, rel.ece, rel)
    if temperature is not None:
        calibrated = reliability(apply_temperature(probs, temperature), labels, settings.bins)
        report.calibrated_ece = calibrated.ece
        metrics[f"{split}/ece_calibrated"] = calibrated.ece
    report.wrong = confidently_wrong_indices(probs, labels, threshold, settings.top_k_wrong)
    report.subgroups = subgroups_of(preds, threshold, settings)
    if report.subgroups is not None:
        metrics.update(report.subgroups.metrics(split))
    return report, metrics


def subgroup_names(preds: SplitPredictions, settings: ReportSettings) -> tuple[str, ...]:
    """The columns the split is reported by: ``settings.subgroups``, and ``source`` wherever
    its films come from more than one source (a number over several hospitals or datasets is
    read per source too, and the source alone is checked as a shortcut)."""
    names = settings.subgroups
    sources = preds.columns.get(SOURCE_COLUMN)
    if sources is not None and len(set(sources)) > 1 and SOURCE_COLUMN not in names:
        names = (*names, SOURCE_COLUMN)
    return names


def subgroups_of(
    preds: SplitPredictions, threshold: float, settings: ReportSettings
) -> SubgroupReport | None:
    """The split's subgroup tables and shortcut checks at ``threshold`` (``subgroup_names``);
    None when there is no column to report by."""
    names = subgroup_names(preds, settings)
    if not names:
        return None
    return evaluate_subgroups(
        preds.columns,
        preds.probabilities,
        preds.labels,
        threshold,
        preds.patients,
        names=names,
        edges=settings.age_bands,
        flag=settings.shortcut_flag,
        resamples=settings.resamples,
        seed=settings.seed,
        level=settings.level,
    )


def scores_with_intervals(
    split: str, preds: SplitPredictions, threshold: float, settings: ReportSettings
) -> dict[str, float]:
    """``_scores`` of the split, each followed by its patient-bootstrap ``_ci_low``/``_ci_high``
    (a proportion's widened to its exact interval: ``proportions``)."""
    probs, labels = preds.probabilities, preds.labels
    point = _scores(probs, labels, threshold)
    intervals = bootstrap_weighted(
        _resampled_scores(probs, labels, threshold),
        len(preds),
        groups=preds.patients,
        resamples=settings.resamples,
        seed=settings.seed,
        level=settings.level,
    )
    for suffix, t in (("_at_threshold", threshold), ("", DEFAULT_THRESHOLD)):
        counts = confusion_counts(confusion_at_threshold(probs, labels, t))
        for name, (successes, trials) in counts.items():
            key = f"{name}{suffix}"
            intervals[key] = widened(intervals[key], successes, trials, settings.level)
    metrics: dict[str, float] = {}
    for name, value in point.items():
        metrics[f"{split}/{name}"] = value
        low, high = intervals[name]
        metrics[f"{split}/{name}_ci_low"] = low
        metrics[f"{split}/{name}_ci_high"] = high
    return metrics


def _subtype_recalls(split: str, preds: SplitPredictions, threshold: float) -> dict[str, float]:
    """Sensitivity at the threshold per pneumonia subtype the split has, with its film count."""
    metrics: dict[str, float] = {}
    subtypes = np.asarray(preds.subtypes)
    for subtype in SUBTYPES:
        chosen = subtypes == subtype
        if chosen.any():
            caught = float(np.mean(preds.probabilities[chosen] >= threshold))
            metrics[f"{split}/recall_{subtype}_at_threshold"] = caught
            metrics[f"{split}/n_{subtype}"] = float(chosen.sum())
    return metrics


def write_predictions(path: Path, predictions: SplitPredictions, threshold: float) -> None:
    """Per film: file, label, subtype, patient, probability, the call at ``threshold``, then the
    films' metadata columns (view, age, source ...)."""
    extra = [name for name in predictions.columns if name not in PREDICTION_COLUMNS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PREDICTION_COLUMNS, *extra])
        patients = predictions.patients or ("",) * len(predictions)
        for index, (file, label, subtype, patient, probability) in enumerate(
            zip(
                predictions.files,
                predictions.labels,
                predictions.subtypes,
                patients,
                predictions.probabilities,
                strict=True,
            )
        ):
            writer.writerow(
                [
                    file,
                    "PNEUMONIA" if label == 1 else "NORMAL",
                    subtype,
                    patient,
                    f"{probability:.6f}",
                    "PNEUMONIA" if probability >= threshold else "NORMAL",
                    *(predictions.columns[name][index] for name in extra),
                ]
            )


def read_predictions(path: Path) -> SplitPredictions:
    """A ``predictions_<split>.csv`` that ``write_predictions`` wrote, back as predictions."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        labels = np.array([row["label"] == "PNEUMONIA" for row in rows], dtype=np.int64)
        probabilities = np.array([float(row["probability"]) for row in rows], dtype=np.float64)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a predictions file cxrnet wrote ({error})") from error
    patients = tuple(row["patient"] for row in rows)
    extra = [name for name in (rows[0] if rows else {}) if name not in PREDICTION_COLUMNS]
    return SplitPredictions(
        probabilities,
        labels,
        tuple(row["file"] for row in rows),
        tuple(row["subtype"] for row in rows),
        # Unknown patients (written as "") cannot group a bootstrap: resample films instead.
        patients if all(patients) else None,
        {name: tuple(row[name] or "" for row in rows) for name in extra},
    )


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)

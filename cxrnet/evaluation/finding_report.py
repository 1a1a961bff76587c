"""The per-finding part of a findings model's report (``data.task=findings``).

The triage finding (pneumonia) has the whole report of a binary model: its films are those that
label pneumonia, and its threshold is the run's operating point. Every finding, the triage one
too, also gets a row here: AUROC and AUPRC with patient-bootstrap intervals, the threshold
chosen on the validation films that label it (with the run's threshold rule), sensitivity and
specificity there, calibration (ECE), and its tables per subgroup (and per source) as the
triage report has them. Each number is computed on the films that label that finding, never on
films whose source did not look for it. The mean AUROC and AUPRC are over the findings with
``MIN_POSITIVES`` positive test films, and the report says how many those were.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrnet.data.records import Record
from cxrnet.data.sources import source_of
from cxrnet.evaluation.calibration import reliability
from cxrnet.evaluation.finding_metrics import MIN_POSITIVES
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD
from cxrnet.evaluation.report import (
    ReportSettings,
    SplitPredictions,
    scores_with_intervals,
    subgroups_of,
)
from cxrnet.evaluation.subgroups import SubgroupReport
from cxrnet.evaluation.thresholds import OperatingPoint, ThresholdRule, choose_operating_point

# A finding whose val films do not label it both ways has no threshold to choose: it keeps the
# default, fixed and chosen on nothing, and the report says so.
UNCHOSEN = OperatingPoint(DEFAULT_THRESHOLD, "fixed", None, chosen_on="")

# The numbers of a finding's row, with intervals (as ``scores_with_intervals`` names them).
_WITH_INTERVALS = ("auroc", "auprc", "recall_at_threshold", "specificity_at_threshold")


@dataclass(frozen=True)
class FindingScores:
    """One split's probabilities and targets (NaN: unlabelled) per finding, with its films."""

    names: tuple[str, ...]
    probabilities: np.ndarray  # (N, F)
    targets: np.ndarray  # (N, F)
    records: tuple[Record, ...]

    def __post_init__(self) -> None:
        shape = (len(self.records), len(self.names))
        if self.probabilities.shape != shape or self.targets.shape != shape:
            raise ValueError(
                f"{len(self.records)} films and {len(self.names)} findings need arrays of shape "
                f"{shape}, got {self.probabilities.shape} and {self.targets.shape}"
            )

    def labelling(self, name: str) -> list[Record]:
        """The films that label the finding, in order (those ``of`` scores)."""
        j = self.names.index(name)
        return [r for r, t in zip(self.records, self.targets[:, j], strict=True) if not np.isnan(t)]

    def of(self, name: str) -> SplitPredictions:
        """The finding's probabilities on the films that label it, as a binary split."""
        j = self.names.index(name)
        labelled = ~np.isnan(self.targets[:, j])
        records = [record for record, keep in zip(self.records, labelled, strict=True) if keep]
        return SplitPredictions.from_records(
            self.probabilities[labelled, j], self.targets[labelled, j].astype(np.int64), records
        )


@dataclass
class FindingReport:
    """Every finding's numbers per split, its validation-chosen threshold, its subgroups."""

    thresholds: dict[str, OperatingPoint]
    metrics: dict[str, float] = field(default_factory=dict)
    subgroups: dict[tuple[str, str], SubgroupReport] = field(default_factory=dict)
    counts: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


def finding_thresholds(
    val: FindingScores, rule: ThresholdRule, triage: str, triage_point: OperatingPoint
) -> dict[str, OperatingPoint]:
    """Each finding's operating point, chosen by ``rule`` on the val films that label it; the
    triage finding keeps the run's (``triage_point``, which may be chosen on fewer films)."""
    points = {}
    for name in val.names:
        if name == triage:
            points[name] = triage_point
            continue
        films = val.of(name)
        if len(np.unique(films.labels)) < 2:
            points[name] = UNCHOSEN
            continue
        points[name] = choose_operating_point(films.probabilities, films.labels, rule)
    return points


def evaluate_findings(
    scores: Mapping[str, FindingScores],
    thresholds: Mapping[str, OperatingPoint],
    settings: ReportSettings,
) -> FindingReport:
    """Every finding's row and subgroup tables on every split of ``scores``."""
    report = FindingReport(dict(thresholds))
    for split, split_scores in scores.items():
        in_mean = []
        for name in split_scores.names:
            films = split_scores.of(name)
            positives = int(films.labels.sum())
            report.counts[(split, name)] = (positives, len(films) - positives)
            prefix = f"{split}/finding/{name}"
            threshold = thresholds[name].threshold
            if len(films) == 0:
                continue
            values = scores_with_intervals(split, films, threshold, settings)
            for metric in _WITH_INTERVALS:
                for suffix in ("", "_ci_low", "_ci_high"):
                    report.metrics[f"{prefix}/{metric}{suffix}"] = values[
                        f"{split}/{metric}{suffix}"
                    ]
            report.metrics[f"{prefix}/threshold"] = threshold
            report.metrics[f"{prefix}/n_pos"] = float(positives)
            report.metrics[f"{prefix}/n_neg"] = float(len(films) - positives)
            report.metrics[f"{prefix}/ece"] = reliability(
                films.probabilities, films.labels, settings.bins
            ).ece
            if positives >= MIN_POSITIVES and positives < len(films):
                in_mean.append(name)
            subgroups = subgroups_of(films, threshold, settings)
            if subgroups is not None:
                report.subgroups[(split, name)] = subgroups
                report.metrics |= {
                    f"{prefix}/{key.removeprefix(split + '/')}": value
                    for key, value in subgroups.metrics(split).items()
                }
        for metric in ("auroc", "auprc"):
            chosen = [report.metrics[f"{split}/finding/{name}/{metric}"] for name in in_mean]
            report.metrics[f"{split}/finding_mean/{metric}"] = (
                float(np.mean(chosen)) if chosen else math.nan
            )
        report.metrics[f"{split}/finding_mean/findings"] = float(len(in_mean))
    return report


def finding_names_in_mean(report: FindingReport, split: str, names: Sequence[str]) -> list[str]:
    """The findings the split's means are over (``MIN_POSITIVES`` positives, a negative)."""
    return [
        name
        for name in names
        if (counts := report.counts.get((split, name)))
        and counts[0] >= MIN_POSITIVES
        and counts[1] > 0
    ]


# The findings CSV's value for a finding its source does not label.
UNLABELLED = ""


def _target_cell(value: float) -> str:
    return UNLABELLED if math.isnan(value) else str(int(value))


def read_finding_predictions(path: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """A ``findings_<split>.csv`` back as its findings, probabilities and targets (N, F);
    a ``ValueError`` naming the file when it is not one ``write_finding_predictions`` wrote."""
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            names = tuple(c[2:] for c in reader.fieldnames or () if c.startswith("p_"))
            rows = list(reader)
        probabilities = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
        targets = np.array(
            [[math.nan if r[f"label_{n}"] == UNLABELLED else float(r[f"label_{n}"]) for n in names]
             for r in rows]
        )  # fmt: skip
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a findings file cxrnet wrote ({error})") from error
    if not names:
        raise ValueError(f"{path} is not a findings file cxrnet wrote (no p_<finding> column)")
    return names, probabilities.reshape(len(rows), len(names)), targets.reshape(len(rows), -1)


def pooled_finding_thresholds(
    parts: Sequence[tuple[tuple[str, ...], np.ndarray, np.ndarray]],
    rule: ThresholdRule,
    triage: str,
    triage_point: OperatingPoint,
) -> dict[str, OperatingPoint]:
    """Each finding's operating point chosen by ``rule`` on the folds' pooled out-of-fold
    findings predictions (``read_finding_predictions`` of each fold's val split), the triage
    finding keeping ``triage_point``: a fold ensemble's thresholds, as its pneumonia one."""
    names = parts[0][0]
    if any(part[0] != names for part in parts):
        raise ValueError(f"the folds learnt different findings: {sorted({p[0] for p in parts})}")
    probabilities = np.concatenate([part[1] for part in parts])
    targets = np.concatenate([part[2] for part in parts])
    points = {}
    for j, name in enumerate(names):
        if name == triage:
            points[name] = triage_point
            continue
        labelled = ~np.isnan(targets[:, j])
        y = targets[labelled, j].astype(np.int64)
        if len(np.unique(y)) < 2:
            points[name] = UNCHOSEN
            continue
        points[name] = choose_operating_point(
            probabilities[labelled, j], y, rule, chosen_on=triage_point.chosen_on
        )
    return points


def write_finding_predictions(
    path: Path, scores: FindingScores, thresholds: Mapping[str, OperatingPoint]
) -> None:
    """Per film: file, patient, source, then per finding its probability, its label (1, 0,
    blank where unlabelled) and the call at its threshold; last, ``any_finding``: whether any
    finding is called (a film for a radiologist's list, whichever finding it is)."""
    names = scores.names
    header = ["file", "patient", "source"]
    for name in names:
        header += [f"p_{name}", f"label_{name}", f"call_{name}"]
    header.append("any_finding")
    cuts = np.array([thresholds[name].threshold for name in names])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for record, probabilities, targets in zip(
            scores.records, scores.probabilities, scores.targets, strict=True
        ):
            calls = probabilities >= cuts  # a NaN threshold (no val film labels it) calls none
            row: list[str] = [str(record.path), record.patient, source_of(record)]
            for j in range(len(names)):
                row += [f"{probabilities[j]:.6f}", _target_cell(targets[j]), str(int(calls[j]))]
            row.append(str(int(calls.any())))
            writer.writerow(row)

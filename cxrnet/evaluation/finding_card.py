"""The "Findings" section of a findings model's ``report.md`` (``evaluation.finding_report``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from cxrnet.evaluation.finding_metrics import MIN_POSITIVES
from cxrnet.evaluation.finding_report import FindingReport, finding_names_in_mean
from cxrnet.evaluation.model_card import subgroup_cells
from cxrnet.evaluation.report import ReportSettings
from cxrnet.evaluation.thresholds import OperatingPoint


def _with_interval(metrics: Mapping[str, float], key: str) -> str:
    value = metrics.get(key, math.nan)
    if not math.isfinite(value):
        return "n/a"
    low, high = metrics.get(f"{key}_ci_low", math.nan), metrics.get(f"{key}_ci_high", math.nan)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} ({low:.3f}-{high:.3f})"


def _threshold_cell(point: OperatingPoint) -> str:
    return f"{point.threshold:.3f}" + (" (fixed)" if not point.chosen_on else "")


def findings_section(
    report: FindingReport,
    names: Sequence[str],
    splits: Sequence[str],
    triage: str,
    settings: ReportSettings,
    criterion: str,
) -> list[str]:
    """Per split, a row per finding on the films that label it; the means and what they are
    over; then each finding's subgroup tables."""
    lines = [
        "",
        "## Findings",
        "",
        "Each finding on the films whose source labels it (a film whose source never looked for "
        "a finding is no negative for it). Thresholds are chosen on the val films that label "
        f"the finding ({criterion}); {triage}'s is the run's operating point, the triage "
        f"decision. Intervals: {round(settings.level * 100)}% patient bootstrap "
        f"({settings.resamples} resamples). Means are over the findings with at least "
        f"{MIN_POSITIVES} present films and one absent in that split. A finding the val films "
        "do not label both ways has no threshold to choose: it is called at 0.5 (`fixed`).",
    ]
    for split in splits:
        in_mean = finding_names_in_mean(report, split, names)
        metrics = report.metrics
        lines += [
            "",
            f"### {split}",
            "",
            f"Mean AUROC {_with_interval(metrics, f'{split}/finding_mean/auroc')}, mean AUPRC "
            f"{_with_interval(metrics, f'{split}/finding_mean/auprc')}, over {len(in_mean)} "
            f"finding(s): {', '.join(in_mean) or 'none'}.",
            "",
            "| finding | present / absent | AUROC | AUPRC | threshold (val) | sensitivity "
            "| specificity | ECE |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in names:
            present, absent = report.counts.get((split, name), (0, 0))
            prefix = f"{split}/finding/{name}"
            ece = metrics.get(f"{prefix}/ece", math.nan)
            lines.append(
                f"| {name} | {present} / {absent} | {_with_interval(metrics, f'{prefix}/auroc')} "
                f"| {_with_interval(metrics, f'{prefix}/auprc')} "
                f"| {_threshold_cell(report.thresholds[name])} "
                f"| {_with_interval(metrics, f'{prefix}/recall_at_threshold')} "
                f"| {_with_interval(metrics, f'{prefix}/specificity_at_threshold')} "
                f"| {'n/a' if not math.isfinite(ece) else f'{ece:.3f}'} |"
            )
    for (split, name), subgroups in report.subgroups.items():
        for column, rows in subgroups.tables.items():
            lines += ["", f"### {split}: {name} by {column}", ""]
            lines += [
                f"| {column} | films | {name} | prevalence | AUROC | sensitivity | specificity |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            lines += ["| " + " | ".join(subgroup_cells(row)) + " |" for row in rows]
    return lines

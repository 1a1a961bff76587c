"""``report.md``: the evaluation read as a model card, from an ``EvaluationReport`` and context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxrnet.data.population import DataDescription
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD
from cxrnet.evaluation.proportions import METHOD
from cxrnet.evaluation.report import THRESHOLD_METRICS, EvaluationReport, finite
from cxrnet.evaluation.subgroups import Estimate, SubgroupRow
from cxrnet.evaluation.threshold_stability import extreme_threshold_note

TTA_NOTE = (
    "Test-time augmentation: every probability here is the mean of the film's and its mirror "
    "image's (tta=true); a stored threshold was chosen without it."
)


def selection_note(
    counts: Sequence[Mapping[str, Any]],
    *,
    monitor: str,
    split: str,
    val_fraction: float,
    criterion: str,
    keep_in_val: Sequence[str] = (),
    threshold_films: str = "the same val split",
) -> str:
    """Which films chose the checkpoint and which chose the threshold, and how many of each
    class: the two choices a too-small val split spoils (issue 20 row 15). ``threshold_films``
    is ``ThresholdFilms.describe`` (``threshold.films``)."""
    how = (
        "the official val folder as given"
        if split == "official"
        else f"data.split={split}"
        + ("" if split == "kfold" else f", val_fraction {val_fraction}")
        + " from train+val"
    )
    if keep_in_val and split != "official":
        how += (
            f", plus every film from source split(s) {', '.join(keep_in_val)} "
            f"(data.keep_in_val=[{', '.join(keep_in_val)}])"
        )
    row = next((row for row in counts if row.get("split") == "val"), None)
    size = "size unknown"
    if row is not None:
        per_class = ", ".join(f"{row[name]} {name}" for name in ("NORMAL", "PNEUMONIA"))
        size = f"{row['images']} films: {per_class}"
    return (
        f"Checkpoint chosen on: the val split ({how}; {size}), by the best {monitor}. "
        f"Threshold chosen on: {threshold_films} ({criterion})."
    )


_LABELS = {
    "accuracy": "accuracy",
    "precision": "precision (PPV)",
    "recall": "sensitivity",
    "specificity": "specificity",
    "f1": "F1",
}


def _cell(report: EvaluationReport, key: str) -> str:
    value = report.metrics.get(key)
    if not finite(value):
        return "n/a"
    interval = report.interval(key)
    if interval is None or not all(finite(v) for v in interval):
        return f"{value:.3f}"
    return f"{value:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def render_model_card(
    report: EvaluationReport,
    *,
    checkpoint: str,
    data_sources: Sequence[str],
    counts: Sequence[Mapping[str, Any]],
    preprocessing: Mapping[str, Any],
    network: Mapping[str, Any],
    figures: Mapping[str, str],
    limits: Sequence[str] = (),
    error_figures: Mapping[tuple[str, int], str] | None = None,
    notes: Sequence[str] = (),
    data_scored: str = "",
    sections: Sequence[str] = (),
    policies: Sequence[str] = (),
    source_counts: Sequence[Mapping[str, Any]] = (),
    left_out: Sequence[tuple[str, int]] = (),
    data: DataDescription | None = None,
) -> str:
    """The card as Markdown; ``notes`` are paragraphs added after the threshold's, for what
    the reader must know to read the numbers (e.g. what each column of an ensemble is).
    ``data_scored`` says in the header which data the numbers are of (default: the sources).
    ``sections``: further lines after the subgroups (a findings model's per-finding tables).
    ``policies``: how each public dataset's labels were mapped (``DataSettings.label_policies``);
    ``source_counts``: the films per source, split and class (``source_class_table``);
    ``left_out``: the files the data left out, counted per reason (listed in ignored.csv).
    ``data``: what the films are (``cxrnet.data.population``): the title, a banner under it,
    and the limits listed before ``limits``."""
    data = data or DataDescription("chest films", "", ())
    scored = data_scored or ", ".join(str(source) for source in data_sources)
    lines = [
        f"# Model card: pneumonia vs normal on {data.title}",
        "",
        *([data.banner, ""] if data.banner else []),
        f"Checkpoint: `{checkpoint}`",
        "",
        f"Data scored: {scored}",
        "",
        *_data_section(data_sources, counts),
        *_table("Films per source and class", source_counts),
        *_listed("Label policy of the public datasets", policies),
        *_listed(
            "Files left out, every one listed in ignored.csv",
            [f"{count:,}: {reason}" for reason, count in left_out],
        ),
        *_recipe_section(report, preprocessing, network, notes),
        *_metrics_section(report),
        *_confusion_section(report),
        *_subgroups_section(report),
        *sections,
    ]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{split}]({path})" for split, path in figures.items()]
    lines += _errors_section(report, error_figures)
    lines += ["", "## Known limits", ""]
    lines += [f"- {limit}" for limit in (*data.limits, *limits)]
    return "\n".join(lines) + "\n"


def _data_section(data_sources: Sequence[str], counts: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "## Data",
        "",
        "Sources: " + ", ".join(f"`{source}`" for source in data_sources),
        "",
    ]
    return lines + _table("", counts)


def _table(title: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``rows`` as a Markdown table (under ``title``, when given); nothing without rows."""
    if not rows:
        return []
    columns = list(rows[0])
    lines = [f"{title}:", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return [*lines, ""]


def _listed(title: str, items: Sequence[str]) -> list[str]:
    return [f"{title}:", "", *(f"- {item}" for item in items), ""] if items else []


def _recipe_section(
    report: EvaluationReport,
    preprocessing: Mapping[str, Any],
    network: Mapping[str, Any],
    notes: Sequence[str],
) -> list[str]:
    """Preprocessing, network and the decision threshold, with the notes on reading it."""
    return [
        "## Preprocessing and network",
        "",
        "Preprocessing (applied identically by training, evaluation, prediction and export): "
        + ", ".join(f"{key}={value}" for key, value in preprocessing.items())
        + "; one grey channel scaled to [0, 1].",
        "",
        "Network: " + ", ".join(f"{key}={value}" for key, value in network.items()),
        "",
        "## Decision threshold",
        "",
        f"Threshold {report.operating_point.describe()}. A film is called PNEUMONIA when its "
        "probability is at least the threshold. It is stored with the model and used unchanged "
        "on every other split.",
        "",
        *(
            [report.threshold_interval.describe(), ""]
            if report.threshold_interval is not None
            else []
        ),
        *([note, ""] if (note := extreme_threshold_note(report.operating_point.threshold)) else []),
        *(line for note in notes for line in (note, "")),
    ]


def _metrics_section(report: EvaluationReport) -> list[str]:
    """The metrics table (at the chosen and the default threshold) and subtype sensitivity."""
    s = report.settings
    op = report.operating_point
    lines = [
        "## Metrics",
        "",
        f"Point estimate ({round(s.level * 100)}% interval: {METHOD}; {s.resamples} "
        f"resamples of patients, seed {s.seed}).",
        "",
    ]
    splits = list(report.splits)
    header = "| metric | " + " | ".join(splits) + " |"
    lines += [header, "|" + " --- |" * (len(splits) + 1)]
    for name in THRESHOLD_METRICS:
        for suffix, where in (
            ("_at_threshold", f"at {op.threshold:.3f}"),
            ("", f"at {DEFAULT_THRESHOLD:g}"),
        ):
            cells = [_cell(report, f"{split}/{name}{suffix}") for split in splits]
            lines.append(f"| {_LABELS[name]} {where} | " + " | ".join(cells) + " |")
    for name, label in (("auroc", "AUROC"), ("auprc", "AUPRC")):
        cells = [_cell(report, f"{split}/{name}") for split in splits]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rows = [
        f"| {split} | {subtype} | {int(report.metrics[f'{split}/n_{subtype}'])} "
        f"| {report.metrics[key]:.3f} |"
        for split in splits
        for subtype in ("bacteria", "virus")
        if (key := f"{split}/recall_{subtype}_at_threshold") in report.metrics
    ]
    lines += ["", "### Sensitivity per pneumonia subtype (at the chosen threshold)", ""]
    if not rows:  # an empty table would read as a result; say why there is none
        return [
            *lines,
            "None: no pneumonia film scored here is labelled bacteria or virus (the Kermany "
            "set's file names are the only source of subtypes).",
        ]
    return [*lines, "| split | subtype | films | sensitivity |", "| --- | --- | --- | --- |", *rows]


def _confusion_section(report: EvaluationReport) -> list[str]:
    lines = ["", "### Confusion and calibration", ""]
    lines += ["| split | TP | FP | FN | TN | ECE | ECE after temperature |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for split, part in report.splits.items():
        c = part.confusion
        calibrated = "-" if part.calibrated_ece is None else f"{part.calibrated_ece:.3f}"
        lines.append(
            f"| {split} | {c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} | {part.ece:.3f} "
            f"| {calibrated} |"
        )
    if report.temperature is not None:
        lines += ["", f"Temperature {report.temperature:.3f}, fitted on validation only."]
    return lines


def _estimate(estimate: Estimate, undefined: str = "n/a") -> str:
    if estimate.value is None:
        return undefined
    if estimate.low is None or estimate.high is None:
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f} ({estimate.low:.3f}-{estimate.high:.3f})"


def _finite_or_none(value: float | None) -> float | None:
    return value if finite(value) else None


def subgroup_cells(row: SubgroupRow) -> list[str]:
    return [
        row.category.replace("|", "\\|"),  # a bar would end the Markdown cell
        str(row.n),
        str(row.n_pos),
        _estimate(row.prevalence),
        _estimate(row.auroc, "n/a (one class)"),
        _estimate(row.sensitivity, "n/a (no pneumonia)"),
        _estimate(row.specificity, "n/a (no normal)"),
    ]


def _subgroups_section(report: EvaluationReport) -> list[str]:
    """Per metadata column, the model's numbers within each category, after the shortcut
    check: how well the column alone predicts the label, flagged where a confound may hide."""
    parts = {split: part.subgroups for split, part in report.splits.items() if part.subgroups}
    if not parts:
        return []
    s = report.settings
    lines = [
        "",
        "## Subgroups",
        "",
        "Each category's films alone, at the chosen threshold "
        f"{report.operating_point.threshold:.3f}"
        f" ({round(s.level * 100)}% interval: {METHOD}; {s.resamples} resamples of the "
        "category's patients). Films lacking a column are counted under `unknown`.",
        "",
        "### Shortcut check",
        "",
        "How well each column alone predicts the label: a categorical column scores every film "
        "by its category's prevalence of pneumonia (on the same films: an upper bound), a "
        "numeric one by its value in the better direction. Flagged at AUROC >= "
        f"{s.shortcut_flag:g}.",
        "",
    ]
    flagged = [
        check.sentence(split, _finite_or_none(report.metrics.get(f"{split}/auroc")))
        for split, part in parts.items()
        for check in part.shortcuts
        if check.flagged
    ]
    lines += [f"- **Possible shortcut:** {sentence}" for sentence in flagged]
    if flagged:
        lines.append("")
    lines += [
        "| split | column | kind | categories | films scored | AUROC of the column alone "
        "| flagged |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split, part in parts.items():
        for check in part.shortcuts:
            area = "n/a (one class)" if check.auroc is None else f"{check.auroc:.3f}"
            lines.append(
                f"| {split} | {check.column} | {check.kind} | {check.categories} | "
                f"{check.films} of {check.total} | {area} | {'yes' if check.flagged else 'no'} |"
            )
    for split, part in parts.items():
        for column, rows in part.tables.items():
            lines += ["", f"### {split}: by {column}", ""]
            lines += [
                f"| {column} | films | pneumonia | prevalence | AUROC | sensitivity | "
                "specificity |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            lines += ["| " + " | ".join(subgroup_cells(row)) + " |" for row in rows]
    return lines


def _errors_section(
    report: EvaluationReport, error_figures: Mapping[tuple[str, int], str] | None
) -> list[str]:
    """The most confident errors per split, each with its heatmap where one was drawn."""
    lines = ["", "## Most confident errors", ""]
    if error_figures:
        lines += ["Each links a Grad-CAM heatmap: where the network saw evidence of pneumonia.", ""]
    for split, part in report.splits.items():
        preds = part.predictions
        for index in part.wrong:
            truth = "PNEUMONIA" if preds.labels[index] == 1 else "NORMAL"
            line = (
                f"- {split}: `{Path(preds.files[index]).name}` is {truth}, "
                f"p(pneumonia)={preds.probabilities[index]:.3f}"
            )
            figure = (error_figures or {}).get((split, index))
            lines.append(f"{line} ([heatmap]({figure}))" if figure else line)
    return lines

"""The evaluation pass shared by ``cxrnet-train`` and ``cxrnet-eval``: predict each split once,
then derive the report, its files and what the loggers get from those predictions."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import Logger, WandbLogger

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.film_report import ignored_reasons
from cxrnet.data.findings import TRIAGE_FINDING, triage_output
from cxrnet.data.population import describe_run_data
from cxrnet.data.records import SOURCE_COLUMN, Record
from cxrnet.data.sources import source_of
from cxrnet.data.split_report import source_class_table
from cxrnet.evaluation.figures import plot_split
from cxrnet.evaluation.finding_card import findings_section
from cxrnet.evaluation.finding_report import (
    FindingScores,
    evaluate_findings,
    finding_thresholds,
    write_finding_predictions,
)
from cxrnet.evaluation.model_card import (
    TTA_NOTE,
    render_model_card,
)
from cxrnet.evaluation.report import (
    EvaluationReport,
    ReportSettings,
    SplitPredictions,
    evaluate_predictions,
    finite,
    metadata_columns,
    write_predictions,
)
from cxrnet.evaluation.subgroup_columns import check_subgroup_columns, present_columns
from cxrnet.evaluation.threshold_films import ThresholdFilms
from cxrnet.evaluation.threshold_stability import threshold_interval
from cxrnet.evaluation.thresholds import OperatingPoint, ThresholdRule, choose_operating_point
from cxrnet.models.module import ClassifierModule
from cxrnet.passes.predictions import predict_findings, predict_split
from cxrnet.plain_data import plain_data
from cxrnet.publish import write_text
from cxrnet.tracking.wandb_report import WandbReport

log = logging.getLogger(__name__)


def threshold_rule(values: Mapping[str, Any] | None) -> ThresholdRule:
    """The ``threshold`` config block as a rule (unknown keys such as ``rechoose`` ignored)."""
    return ThresholdRule.from_mapping(values)


def threshold_films_for(
    values: Mapping[str, Any] | None, datamodule: ChestXRayDataModule
) -> ThresholdFilms:
    """``threshold.films`` (or ``threshold.source``) checked against the data's val split: a
    filter that selects no film, or films of one class only, is a ``ConfigError`` naming it.
    Every val film for the subtype task (no threshold) and for a fixed threshold (none is
    chosen)."""
    values = values or {}
    if datamodule.num_classes != 2 or threshold_rule(values).criterion == "fixed":
        return ThresholdFilms()
    films = ThresholdFilms.from_config(
        plain_data(values.get("films")), plain_data(values.get("source"))
    )
    records = datamodule.split_records.get("val", [])
    films.select(records, [datamodule.label_of(record) for record in records])
    return films


def report_settings(values: Mapping[str, Any] | None) -> ReportSettings:
    """The ``report`` config block as settings (``ReportSettings`` checks the subgroup keys)."""
    values = dict(values or {})
    known = {key: values[key] for key in ReportSettings.__dataclass_fields__ if key in values}
    return ReportSettings(**known)


def with_source_subgroup(settings: ReportSettings, records: Iterable[Record]) -> ReportSettings:
    """``settings`` with ``source`` among the subgroups when the films come from more than one
    source: a number pooled over a public set and a site says little about the site, so each
    source's row (with its interval) stands beside the others without being asked for."""
    if SOURCE_COLUMN in settings.subgroups:
        return settings
    sources = {source_of(record) for record in records}
    if len(sources - {""}) < 2:
        return settings
    return dataclasses.replace(settings, subgroups=(*settings.subgroups, SOURCE_COLUMN))


def check_subgroup_records(settings: ReportSettings, records: Iterable[Record]) -> None:
    """Every ``report.subgroups`` column is one some of ``records`` (the films to be evaluated)
    carries: a ``ConfigError`` naming it and the columns they have, before any prediction."""
    if settings.subgroups:
        present = present_columns(metadata_columns(list(records)))
        check_subgroup_columns(settings.subgroups, present)


def run_evaluation_pass(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    splits: Sequence[str],
    output_dir: Path,
    *,
    rule: ThresholdRule,
    operating_point: OperatingPoint | None = None,
    settings: ReportSettings | None = None,
    loggers: Sequence[Logger] = (),
    wandb_report: WandbReport | None = None,
    checkpoint: str = "",
    tta: bool = False,
    data_scored: str = "",
    notes: Sequence[str] = (),
    threshold_films: ThresholdFilms | None = None,
    finding_points: Mapping[str, OperatingPoint] | None = None,
) -> EvaluationReport:
    """Predict each of ``splits`` once and write predictions, figures and report.md.

    ``operating_point`` None: chosen by ``rule`` on the validation split, which is then
    predicted even if not listed. Splits the data has none of are skipped with a warning.
    ``tta``: every film's probability is averaged with its mirror image's. ``data_scored``
    says in the report's header which data this is (by default, its sources); ``notes`` are
    paragraphs for the report's threshold section. ``threshold_films`` (``threshold.films``): the
    val films the threshold is chosen on, when not all of them.

    A findings model (``data.task=findings``): the report is its triage finding's (pneumonia,
    on the films that label it), plus a Findings section and ``findings_<split>.csv`` for every
    finding; ``finding_points`` are the stored thresholds per finding (None: chosen on val with
    ``rule``), returned in the report's ``finding_thresholds``.
    """
    wanted = list(dict.fromkeys([*(["val"] if operating_point is None else []), *splits]))
    settings = settings or ReportSettings()
    records = datamodule.split_records
    check_subgroup_records(settings, (r for split in wanted for r in records.get(split, [])))
    findings = tuple(getattr(model, "findings", ()))
    predictions, scores, scored = _predict_splits(model, datamodule, wanted, findings, tta)
    chosen_on_films = bool(
        operating_point is None and threshold_films and threshold_films.on and "val" in predictions
    )
    if chosen_on_films:
        operating_point = operating_point_on_films(
            predictions["val"], scored["val"], rule, threshold_films
        )
    report = evaluate_predictions(
        predictions, rule, operating_point, settings, model.hparams.get("class_weights")
    )
    if chosen_on_films and threshold_films is not None:  # chosen above, on some val films
        report = _with_interval_on_films(
            report, predictions["val"], scored["val"], rule, threshold_films
        )
    figures = _write_splits(report, predictions, output_dir)
    sections: list[str] = []
    if findings:
        sections = _finding_sections(
            report, scores, rule, finding_points, settings, output_dir, splits
        )
    # Heatmaps index the datasets: only where every film of the split was scored.
    whole = {s for s in predictions if len(scored[s]) == len(datamodule.split_records[s])}
    errors = _error_heatmaps(report, datamodule, model, output_dir, whole)
    card = render_model_card(
        report,
        checkpoint=checkpoint,
        data_scored=data_scored,
        data_sources=[str(source) for source in datamodule.sources],
        counts=datamodule.counts(),
        preprocessing=datamodule.decode_params.as_dict(),
        network=dict(model.hparams["net"]),
        figures=figures,
        data=describe_run_data(datamodule.settings, datamodule.split_records),
        error_figures=errors,
        notes=[*notes, *([TTA_NOTE] if tta else [])],
        sections=sections,
        policies=datamodule.settings.label_policies(),
        source_counts=source_class_table(datamodule.split_records),
        left_out=ignored_reasons(datamodule.ignored),
    )
    write_text(output_dir / "report.md", card)
    _send_to_loggers(report, loggers, wandb_report or WandbReport(), datamodule, model)
    return report


def _predict_splits(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    wanted: Sequence[str],
    findings: Sequence[str],
    tta: bool,
) -> tuple[dict[str, SplitPredictions], dict[str, FindingScores], dict[str, list[Record]]]:
    """Each wanted split the data has, predicted once: its (triage) predictions, a findings
    model's scores per finding, and the films the predictions are of (a findings model's: those
    that label the triage finding). A split the data lacks is skipped with a warning."""
    predictions: dict[str, SplitPredictions] = {}
    scores: dict[str, FindingScores] = {}
    scored: dict[str, list[Record]] = {}
    for split in wanted:
        if split not in datamodule.datasets:
            log.warning("no %s split under %s: not evaluated", split, datamodule.root)
            continue
        loader = datamodule.eval_dataloader(split)
        records = datamodule.split_records[split]
        if findings:
            scores[split] = predict_findings(model, loader, records, findings, tta=tta)
            predictions[split] = scores[split].of(TRIAGE_FINDING)
            scored[split] = scores[split].labelling(TRIAGE_FINDING)
        else:
            predictions[split] = predict_split(model, loader, records, tta=tta)
            scored[split] = records
    return predictions, scores, scored


def _write_splits(
    report: EvaluationReport, predictions: Mapping[str, SplitPredictions], output_dir: Path
) -> dict[str, str]:
    """Each split's predictions CSV and figure; the figures' paths under ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    for split, preds in predictions.items():
        threshold = report.operating_point.threshold
        write_predictions(output_dir / f"predictions_{split}.csv", preds, threshold)
        path = plot_split(report, split, output_dir / "figures" / f"{split}.png")
        figures[split] = str(path.relative_to(output_dir))
    return figures


def _with_interval_on_films(
    report: EvaluationReport,
    val: SplitPredictions,
    records: Sequence[Record],
    rule: ThresholdRule,
    films: ThresholdFilms,
) -> EvaluationReport:
    """``report`` with the interval of its threshold over the val films that chose it."""
    mask = films.select(records, val.labels)
    patients = None if val.patients is None else list(np.asarray(val.patients)[mask])
    settings = report.settings
    stability = threshold_interval(
        val.probabilities[mask], val.labels[mask], patients, rule, settings.seed, settings.level
    )
    if stability is None:
        return report
    metrics = report.metrics | stability.metrics()
    return dataclasses.replace(report, metrics=metrics, threshold_interval=stability)


def operating_point_on_films(
    val: SplitPredictions, records: Sequence[Record], rule: ThresholdRule, films: ThresholdFilms
) -> OperatingPoint | None:
    """The operating point chosen on the val films ``films`` selects; None for NaN predictions,
    which ``evaluate_predictions`` refuses with its own error."""
    if not np.isfinite(val.probabilities).all():
        return None
    mask = films.select(records, val.labels)
    return choose_operating_point(
        val.probabilities[mask], val.labels[mask], rule, chosen_on=films.chosen_on
    )


def _finding_sections(
    report: EvaluationReport,
    scores: Mapping[str, FindingScores],
    rule: ThresholdRule,
    stored: Mapping[str, OperatingPoint] | None,
    settings: ReportSettings,
    output_dir: Path,
    splits: Sequence[str],
) -> list[str]:
    """Each finding's thresholds (stored, or chosen on val), numbers, CSV and report section;
    the thresholds and metrics go into ``report``."""
    names = next(iter(scores.values())).names
    if stored is None:
        stored = finding_thresholds(scores["val"], rule, TRIAGE_FINDING, report.operating_point)
    missing = [name for name in names if name not in stored]
    if missing:
        raise ValueError(f"no stored threshold for finding(s) {missing}")
    thresholds = {name: stored[name] for name in names}
    findings = evaluate_findings(scores, thresholds, settings)
    report.finding_thresholds = thresholds
    report.metrics.update(findings.metrics)
    for split, split_scores in scores.items():
        write_finding_predictions(output_dir / f"findings_{split}.csv", split_scores, thresholds)
    shown = [split for split in ("val", *splits) if split in scores]
    return findings_section(
        findings,
        names,
        list(dict.fromkeys(shown)),
        TRIAGE_FINDING,
        settings,
        f"threshold.criterion={rule.criterion}",
    )


def _error_heatmaps(
    report: EvaluationReport,
    datamodule: ChestXRayDataModule,
    model: ClassifierModule,
    output_dir: Path,
    splits: set[str],
) -> dict[tuple[str, int], str]:
    """Grad-CAM overlays of each split's most confident errors, as paths relative to the run."""
    try:
        from cxrnet.inference.gradcam import gradcam, save_overlay
    except ImportError:  # pragma: no cover - captum is an optional extra
        return {}
    written: dict[tuple[str, int], str] = {}
    for split, part in report.splits.items():
        if not part.wrong or split not in splits:
            continue
        images = torch.stack([datamodule.datasets[split][i][0] for i in part.wrong])
        try:
            # A findings model's errors are its triage finding's: explain that output.
            which = {"output": triage_output(model.findings)} if model.findings else {}
            maps = gradcam(model.net, images.to(model.device), **which)
        except ImportError:
            log.warning("captum is not installed: no heatmaps (pip install 'cxrnet[explain]')")
            return written
        for rank, (index, heatmap) in enumerate(zip(part.wrong, maps, strict=True)):
            preds = part.predictions
            film = (images[rank, 0].cpu().numpy() * 255).round().astype(np.uint8)
            name = f"errors/{split}_{rank:02d}_{Path(preds.files[index]).stem}.png"
            caption = f"p(pneumonia)={preds.probabilities[index]:.3f}"
            save_overlay(film, heatmap, output_dir / "figures" / name, caption=caption)
            written[(split, index)] = f"figures/{name}"
    return written


def _send_to_loggers(
    report: EvaluationReport,
    loggers: Sequence[Logger],
    wandb_report: WandbReport,
    datamodule: ChestXRayDataModule,
    model: ClassifierModule,
) -> None:
    scalars = {key: value for key, value in report.metrics.items() if finite(value)}
    for logger in loggers:
        if isinstance(logger, WandbLogger):

            def image_of(split: str, index: int) -> Any:
                return datamodule.datasets[split][index][0]

            wandb_report.log_report(logger, report, model.class_names, image_of)
            wandb_report.log_subgroups(logger, report)
            wandb_report.log_findings(logger, report)
        logger.log_metrics({f"report/{key}": value for key, value in scalars.items()})
        logger.save()

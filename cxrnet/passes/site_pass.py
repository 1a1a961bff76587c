"""What ``cxrnet-eval`` adds when it scores another site's films: the films of other classes
predicted, the site's operating points and calibration (``cxrnet.evaluation.external``), the
pointing game where the films have opacity boxes (``cxrnet.evaluation.pointing``), appended to
report.md and returned as metrics (metrics.json)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.findings import triage_output
from cxrnet.data.records import PATH_ERRORS
from cxrnet.data.seen_films import SeenCheck
from cxrnet.evaluation.external import (
    UNCHECKED,
    VALIDATION_SOURCE,
    OtherFilms,
    group_values,
    render_site_section,
    site_report,
)
from cxrnet.evaluation.pointing import (
    PointingResult,
    parse_boxes,
    play,
    render_pointing_section,
    score_by_group,
    score_films,
)
from cxrnet.evaluation.report import EvaluationReport, ReportSettings, metadata_columns
from cxrnet.inference.ensemble import MeanProbabilityNet
from cxrnet.models.module import ClassifierModule
from cxrnet.passes.predictions import predict_probabilities
from cxrnet.publish import write_file

log = logging.getLogger(__name__)

BOXES_COLUMN = "boxes"
OTHER_PREDICTIONS = "predictions_other_classes.csv"


def _other_probabilities(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    tta: bool,
    threshold: float,
    output_dir: Path,
) -> dict[str, OtherFilms]:
    """Each other class's films with their probabilities; every film's probability and call
    at ``threshold`` in ``predictions_other_classes.csv``, then its metadata columns (as in
    ``predictions_<split>.csv``)."""
    if datamodule.other_dataset is None or not datamodule.others:
        return {}
    probabilities, _ = predict_probabilities(model, datamodule.other_dataloader(), tta=tta)
    if model.findings:  # a findings model flags other-class films by its triage finding
        probabilities = probabilities[:, triage_output(model.findings)]
    fixed = ["file", "class", "patient", "probability", "prediction"]
    extra = sorted({c for film in datamodule.others for c in film.metadata} - set(fixed))

    def fill(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
            writer = csv.writer(handle)
            writer.writerow([*fixed, *extra])
            for film, p in zip(datamodule.others, probabilities.tolist(), strict=True):
                call = "PNEUMONIA" if p >= threshold else "NORMAL"
                further = [film.metadata.get(c, "") for c in extra]
                writer.writerow(
                    [film.path, film.class_name, film.patient, f"{p:.6f}", call, *further]
                )

    write_file(output_dir / OTHER_PREDICTIONS, fill)
    groups: dict[str, list[int]] = {}
    for index, film in enumerate(datamodule.others):
        groups.setdefault(film.class_name, []).append(index)
    result = {}
    for name, indices in groups.items():
        films = [datamodule.others[i] for i in indices]
        names = sorted({column for film in films for column in film.metadata})
        result[name] = OtherFilms(
            probabilities.numpy().astype(np.float64)[indices],
            tuple(film.patient for film in films),
            {c: tuple(film.metadata.get(c, "") for film in films) for c in names},
        )
    return result


def pointing_game(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    settings: ReportSettings,
    max_films: int | None = None,
) -> PointingResult | None:
    """Grad-CAM's peak against the boxes of every test PNEUMONIA film that has boxes (the first
    ``max_films`` in file order, when set); None when no film has boxes."""
    records = datamodule.split_records.get("test", [])
    chosen = [
        (index, parse_boxes(record.metadata.get(BOXES_COLUMN, ""), str(record.path)))
        for index, record in enumerate(records)
        if record.label == 1 and record.metadata.get(BOXES_COLUMN, "").strip()
    ]
    if max_films:
        chosen = chosen[:max_films]
    if not chosen:
        return None
    from cxrnet.inference.gradcam import gradcam

    dataset = datamodule.datasets["test"]
    images = torch.stack([dataset[index][0] for index, _ in chosen])

    # An ensemble's heatmap is the mean of its members' (each from its own last layer).
    ensemble = isinstance(model.net, MeanProbabilityNet)
    nets = list(model.net.members) if ensemble else [model.net]

    # A findings model's boxes are pneumonia's: explain its triage output.
    findings = tuple(getattr(model, "findings", ()))
    which = {"output": triage_output(findings)} if findings else {}

    def heatmaps(batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(model.device)
        return np.mean([gradcam(net, batch, **which) for net in nets], axis=0)

    films = play(
        images,
        [records[index].path for index, _ in chosen],
        [records[index].patient for index, _ in chosen],
        [boxes for _, boxes in chosen],
        datamodule.decode_params,
        heatmaps,
        batch_size=datamodule.eval_batch_size,
    )
    result = score_films(films, settings.resamples, settings.seed, settings.level)
    played = metadata_columns([records[index] for index, _ in chosen])
    groups = group_values(played, len(chosen), settings)
    return score_by_group(
        result, groups, settings.resamples, settings.seed, settings.level, settings.age_bands
    )


def _write_pointing_csv(path: Path, result: PointingResult) -> None:
    def fill(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "patient", "peak_x", "peak_y", "hit", "chance"])
            for film in result.films:
                x, y = film.peak if film.peak is not None else ("", "")
                peak = [f"{x:.1f}", f"{y:.1f}"] if film.peak is not None else [x, y]
                writer.writerow([film.file, film.patient, *peak, int(film.hit), film.chance])

    write_file(path, fill)


def evaluate_site(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    report: EvaluationReport,
    validation: Mapping[str, float],
    output_dir: Path,
    options: Mapping[str, Any] | None = None,
    tta: bool = False,
    validation_source: str = VALIDATION_SOURCE,
    seen: SeenCheck | None = None,
) -> dict[str, float]:
    """The site section of ``output_dir/report.md`` and its metrics, from the evaluation pass's
    test predictions. ``options``: the ``report`` config (``pointing_game``,
    ``pointing_game_max_films``)."""
    options = dict(options or {})
    settings = report.settings
    test = report.splits["test"]
    site = site_report(
        test.predictions,
        report.operating_point,
        validation,
        settings,
        test.ece,
        _other_probabilities(model, datamodule, tta, report.operating_point.threshold, output_dir),
        validation_source,
    )
    metrics = site.metrics() | (seen.metrics() if seen is not None else {})
    section = render_site_section(
        site,
        settings.level,
        figure="figures/test.png",
        provenance=seen.sentence() if seen is not None else UNCHECKED,
    )
    if site.others:
        section += f"\nPer film: [{OTHER_PREDICTIONS}]({OTHER_PREDICTIONS}).\n"
    if options.get("pointing_game", True):
        try:
            result = pointing_game(
                model, datamodule, settings, options.get("pointing_game_max_films")
            )
        except ImportError:
            log.warning("captum is not installed: no pointing game (pip install 'cxrnet[explain]')")
            section += (
                "\nNo pointing game: Grad-CAM needs captum (pip install 'cxrnet[explain]').\n"
            )
            result = None
        if result is not None:
            metrics |= result.metrics()
            _write_pointing_csv(output_dir / "pointing_game.csv", result)
            section += "\n" + render_pointing_section(result, settings.level)
            section += "\nPer film: [pointing_game.csv](pointing_game.csv).\n"
    card = output_dir / "report.md"
    text = card.read_text() if card.is_file() else ""
    write_file(card, lambda temporary: temporary.write_text(f"{text.rstrip()}\n\n{section}"))
    return metrics

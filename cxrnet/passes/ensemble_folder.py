"""The folder ``cxrnet-ensemble`` writes for a k-fold sweep (``write_fold_ensemble``),
``<sweep>/ensemble`` by default: ``predictions_oof.csv`` and ``predictions_test.csv``,
``figures/``, ``report.md`` and ``ensemble.json`` (the manifest ``cxrnet-predict`` and
``cxrnet-export`` take in place of a checkpoint; written last, and atomically, so its presence
means the rest is there). The threshold criterion and report settings are the sweep's own
(``threshold.*`` and ``report.*`` in its ``multirun.yaml``); the ensemble and its numbers come
from ``fold_ensemble``. ``HEADLINE`` and ``metric_cell`` are what the command's summary and the
card show of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cxrnet.config import register_resolvers
from cxrnet.data.decode import DecodeParams
from cxrnet.data.population import SYNTHETIC, DataDescription, describe_data, is_synthetic
from cxrnet.data.sources import unnamed_source
from cxrnet.evaluation.figures import plot_split
from cxrnet.evaluation.model_card import render_model_card
from cxrnet.evaluation.report import finite, write_predictions
from cxrnet.models.checkpoint import load_checkpoint, preprocessing_of
from cxrnet.models.ensemble_manifest import MANIFEST_NAME, EnsembleManifest, write_manifest
from cxrnet.passes.evaluation_pass import report_settings, threshold_rule
from cxrnet.passes.fold_ensemble import (
    CROSS_VALIDATED,
    HELD_OUT,
    OOF,
    FoldEnsemble,
    build_fold_ensemble,
    member_overrides,
)
from cxrnet.publish import write_text
from cxrnet.runs import lookup
from cxrnet.user_errors import EnsembleError

ENSEMBLE_DIR = "ensemble"
SWEEP_CONFIG = "multirun.yaml"  # what Hydra's sweeper saves in every sweep folder
# What the summary and the card show: (label, cross-validated key, held-out ensemble key).
HEADLINE = (
    ("AUROC", "auroc", "auroc"),
    ("F1", "f1", "f1_at_threshold"),
    ("sensitivity", "recall", "recall_at_threshold"),
    ("specificity", "specificity", "specificity_at_threshold"),
)
ENSEMBLE_NOTES = (
    "This model is the mean of the fold models' probabilities (ensemble.json lists them). The "
    "`test` column is the ensemble itself on the held-out set, which no choice looked at. The "
    "`oof` column pools every train+val film scored by the one fold model that did not train "
    "on it: it describes the single fold models, and its threshold metrics are in-sample (the "
    "threshold was chosen on these predictions); the cross-validated estimate below calls each "
    "fold at the threshold chosen on the other folds instead.",
    "The threshold was chosen on the pooled single-model out-of-fold scores and is applied "
    "unchanged to the ensemble's mean probability, which is usually a little less extreme; "
    "the `test` column shows how well it carries over.",
)


def sweep_settings(sweep_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The sweep's ``threshold`` and ``report`` blocks and its experiment, from its
    ``multirun.yaml``; the members' own records give the rest of the recipe."""
    path = sweep_dir / SWEEP_CONFIG
    if not path.is_file():
        raise EnsembleError(
            f"{path} does not exist: pass the folder that cxrnet-train -m wrote, which holds it"
        )
    register_resolvers()
    cfg = OmegaConf.load(path)

    def block(key: str) -> dict[str, Any]:
        node = OmegaConf.select(cfg, key, default=None)
        return {} if node is None else dict(OmegaConf.to_container(node, resolve=True))

    experiment = OmegaConf.select(cfg, "hydra.runtime.choices.experiment", default=None)
    return block("threshold"), block("report"), {"experiment": experiment}


def _shared_preprocessing(ensemble: FoldEnsemble) -> DecodeParams:
    found: dict[int, DecodeParams] = {}
    for member in ensemble.members:
        found[member.fold] = preprocessing_of(load_checkpoint(member.checkpoint, mmap=True))
    if len(set(found.values())) > 1:
        each = ", ".join(f"fold {fold}: {p.as_dict()}" for fold, p in found.items())
        raise EnsembleError(f"the fold models decode films differently ({each}): not one recipe")
    return next(iter(found.values()))


def _counts(ensemble: FoldEnsemble) -> list[dict[str, Any]]:
    rows = []
    names = {OOF: "out-of-fold (train+val)", HELD_OUT: "held-out (test)"}
    for split, part in ensemble.report.splits.items():
        labels = part.predictions.labels
        pneumonia = int(labels.sum())
        rows.append(
            {
                "split": names[split],
                "NORMAL": len(labels) - pneumonia,
                "PNEUMONIA": pneumonia,
                "total": len(labels),
            }
        )
    return rows


def write_fold_ensemble(
    sweep_dir: Path, output_dir: Path | None = None
) -> tuple[FoldEnsemble, Path]:
    """Build the sweep's ensemble and write its folder (``<sweep>/ensemble`` by default):
    predictions, figures, ``report.md`` and, last, the manifest, whose path comes back."""
    threshold_cfg, report_cfg, recipe = sweep_settings(sweep_dir)
    ensemble = build_fold_ensemble(
        sweep_dir, threshold_rule(threshold_cfg), report_settings(report_cfg)
    )
    preprocessing = _shared_preprocessing(ensemble)
    out = output_dir or sweep_dir / ENSEMBLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    report = ensemble.report
    figures = {}
    for split, part in report.splits.items():
        threshold = report.operating_point.threshold
        write_predictions(out / f"predictions_{split}.csv", part.predictions, threshold)
        figure = plot_split(report, split, out / "figures" / f"{split}.png")
        figures[split] = str(figure.relative_to(out))
    manifest_path = out / MANIFEST_NAME
    first = ensemble.members[0]
    card = render_model_card(
        report,
        checkpoint=f"{manifest_path} (mean of {len(ensemble.members)} fold models)",
        data_sources=[str(first.run.record.paths.get("data_root")) if first.run.record else ""],
        counts=_counts(ensemble),
        preprocessing=preprocessing.as_dict(),
        network=lookup(first.run.config, "model.net", default=None) or {},
        figures=figures,
        data=_described(first.run.record.paths.get("data_root") if first.run.record else None),
        notes=(*ENSEMBLE_NOTES, _cross_validated_note(report.metrics)),
    )
    write_text(out / "report.md", card)
    manifest = EnsembleManifest(
        members=tuple(
            os.path.relpath(member.checkpoint.resolve(), out.resolve())
            for member in ensemble.members
        ),
        operating_point=report.operating_point,
        preprocessing=preprocessing,
        folds=tuple(member.fold for member in ensemble.members),
        recipe={**recipe, "overrides": member_overrides(first)},
        metrics=report.metrics,
        finding_points=report.finding_thresholds,
    )
    write_manifest(manifest_path, manifest)
    return ensemble, manifest_path


def metric_cell(metrics: Mapping[str, float], key: str) -> str:
    """``key``'s value with its interval where it has one, as the summary and card show it;
    "-" where the value is missing or undefined."""
    value = metrics.get(key)
    if not finite(value):
        return "-"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if finite(low) and finite(high):
        return f"{value:.3f} ({low:.3f}-{high:.3f})"
    return f"{value:.3f}"


def _cross_validated_note(metrics: Mapping[str, float]) -> str:
    cells = ", ".join(
        f"{label} {metric_cell(metrics, f'{CROSS_VALIDATED}/{key}')}" for label, key, _ in HEADLINE
    )
    return f"Cross-validated (cross-fitted thresholds, 95% patient-bootstrap intervals): {cells}."


def _described(data_root: object) -> DataDescription:
    """What the folds' films are, from the data root the runs recorded (a fold ensemble's card
    has the sweep's records, not its films): synthetic or named by its folder."""
    roots = data_root if isinstance(data_root, list) else [data_root] if data_root else []
    kinds = {
        unnamed_source(Path(root)): SYNTHETIC if is_synthetic(root) else ""
        for root in roots
        if isinstance(root, str)
    }
    return describe_data(kinds, {})

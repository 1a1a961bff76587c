"""``cxrnet-ensemble <sweep folder>``: the fold models of a k-fold sweep as one ensemble.

Writes ``<sweep>/ensemble/``: ``ensemble.json`` (the manifest ``cxrnet-predict`` and
``cxrnet-export`` take in place of a checkpoint; written last, and atomically, so its presence
means the rest is there), ``predictions_oof.csv`` and ``predictions_test.csv``, ``report.md`` and
``figures/``. The threshold criterion and report settings are the sweep's own (``threshold.*``
and ``report.*`` in its ``multirun.yaml``). ``cxrnet-train -m experiment=best_cv`` runs this
when its last fold ends (``BuildEnsemble`` in ``hydra_callbacks``); after rerunning a failed
fold in its folder, run it by hand.

Plain argparse, like ``cxrnet-compare``: it reads what a Hydra sweep wrote and is not one itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cxrnet.cli.errors import exit_code_for
from cxrnet.cli.evaluation_pass import KNOWN_LIMITS, report_settings, threshold_rule
from cxrnet.cli.hydra_support import register_resolvers
from cxrnet.data.decode import DecodeParams
from cxrnet.errors import EnsembleError
from cxrnet.evaluation.figures import plot_split
from cxrnet.evaluation.fold_ensemble import (
    CROSS_VALIDATED,
    HELD_OUT,
    OOF,
    FoldEnsemble,
    build_fold_ensemble,
    member_config,
    member_overrides,
)
from cxrnet.evaluation.model_card import render_model_card
from cxrnet.evaluation.report import finite, write_predictions
from cxrnet.inference.ensemble import (
    MANIFEST_NAME,
    EnsembleManifest,
    write_manifest,
)
from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.inference import preprocessing_of

log = logging.getLogger(__name__)

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


def write_fold_ensemble(sweep_dir: Path, output_dir: Path | None = None) -> Path:
    """Build the sweep's ensemble and write its folder; the manifest's path."""
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
        network=member_config(first, "model.net") or {},
        figures=figures,
        # KNOWN_LIMITS[0] is about the official 16-film validation split, unused by k-fold.
        limits=KNOWN_LIMITS[1:],
        notes=(*ENSEMBLE_NOTES, _cross_validated_note(report.metrics)),
    )
    (out / "report.md").write_text(card)
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
    )
    write_manifest(manifest_path, manifest)
    _print_summary(ensemble, manifest_path)
    return manifest_path


def _cell(metrics: Mapping[str, float], key: str) -> str:
    value = metrics.get(key)
    if not finite(value):
        return "-"
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if finite(low) and finite(high):
        return f"{value:.3f} ({low:.3f}-{high:.3f})"
    return f"{value:.3f}"


def _cross_validated_note(metrics: Mapping[str, float]) -> str:
    cells = ", ".join(
        f"{label} {_cell(metrics, f'{CROSS_VALIDATED}/{key}')}" for label, key, _ in HEADLINE
    )
    return f"Cross-validated (cross-fitted thresholds, 95% patient-bootstrap intervals): {cells}."


def _print_summary(ensemble: FoldEnsemble, manifest_path: Path) -> None:
    report = ensemble.report
    metrics = report.metrics
    print(f"\nfold ensemble of {len(ensemble.members)} models: {manifest_path}")
    print(f"threshold {report.operating_point.describe()}")
    held_out = HELD_OUT in report.splits
    titles = ["cross-validated (single models)", *(["held-out (ensemble)"] if held_out else [])]
    print(f"{'':<12}  " + "  ".join(f"{title:<31}" for title in titles))
    for label, cv_key, held_out_key in HEADLINE:
        cells = [_cell(metrics, f"{CROSS_VALIDATED}/{cv_key}")]
        if held_out:
            cells.append(_cell(metrics, f"{HELD_OUT}/{held_out_key}"))
        print(f"{label:<12}  " + "  ".join(f"{cell:<31}" for cell in cells))
    if not held_out:
        print("no held-out split (no test folder, data.holdout_fraction=0): cross-validated only")
    print(f"report: {manifest_path.parent / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrnet-ensemble",
        description="The fold models of a k-fold sweep as one ensemble: threshold chosen on "
        "the pooled out-of-fold validation predictions, manifest, held-out report.",
        epilog="example: cxrnet-ensemble logs/train/multiruns/<sweep>",
    )
    parser.add_argument("sweep", type=Path, help="the folder cxrnet-train -m wrote")
    parser.add_argument(
        "--out", type=Path, help=f"folder to write (default: <sweep>/{ENSEMBLE_DIR})"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 with the ensemble written; 2 when a fold failed or is missing, or the sweep is not one."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_fold_ensemble(args.sweep, args.out)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise
        print(f"cxrnet-ensemble: error: {error}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a W&B run gets beyond per-step metrics: the split, resumable checkpoints, the report.

The callback is harmless with any logger set: without a ``WandbLogger`` every hook returns at
once, and on ranks other than 0 it never touches W&B.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from cxrnet.evaluation.report import EvaluationReport, SplitReport
from cxrnet.evaluation.subgroups import ESTIMATES
from cxrnet.tracking.wandb_logger import CHECKPOINT_KEY

log = logging.getLogger(__name__)


def thumbnail(image: Tensor, size: int) -> Any:
    """A (1, H, W) image in [0, 1] as uint8 pixels no larger than ``size`` on either side."""
    if max(image.shape[-2:]) > size:
        scale = size / max(image.shape[-2:])
        shape = [max(1, round(side * scale)) for side in image.shape[-2:]]
        image = F.interpolate(image[None], size=shape, mode="area")[0]
    return (image[0].clamp(0, 1) * 255).round().byte().numpy()


class WandbReport(Callback):
    """Adds to the W&B run: the split file, the run id in checkpoints, and a validation report.

    The report is a sink: the entry point's evaluation pass hands it its ``EvaluationReport``
    (``log_report``): a confusion matrix at the chosen threshold, ROC and precision-recall
    curves, and a table of the most confidently wrong validation images (``report.top_k_wrong``
    of them, the ones report.md lists).
    """

    def __init__(
        self,
        split_csv: str | None = None,
        thumbnail_size: int = 128,
        max_curve_points: int = 2000,
    ) -> None:
        super().__init__()
        self.split_csv = Path(split_csv) if split_csv else None
        self.thumbnail_size = thumbnail_size
        self.max_curve_points = max_curve_points

    @staticmethod
    def _wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
        """The W&B logger on rank 0; None elsewhere, so other ranks never reach W&B."""
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._wandb_logger(trainer)
        if logger is None or self.split_csv is None:
            return
        if not self.split_csv.is_file():
            log.warning("no split file at %s to log to W&B", self.split_csv)
            return
        import wandb

        # One collection for every run: runs on the same split share one artifact version.
        artifact = wandb.Artifact(
            "split", type="split", description="Which image went to which split (split.csv)"
        )
        artifact.add_file(str(self.split_csv), name="split.csv")
        logger.experiment.log_artifact(artifact)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logger = self._wandb_logger(trainer)
        if logger is None:
            return
        run = logger.experiment
        checkpoint[CHECKPOINT_KEY] = {
            "run_id": getattr(run, "id", None),
            "project": getattr(run, "project", None),
        }

    def log_report(
        self,
        logger: WandbLogger,
        report: EvaluationReport,
        class_names: Sequence[str],
        image_of: Callable[[str, int], Tensor],
        split: str = "val",
    ) -> None:
        """Log what the evaluation pass computed for ``split``: the report's calls at its
        (validation-chosen) threshold, its curves and its most confidently wrong films, the
        ones report.md shows; nothing is re-predicted or recomputed here."""
        if split not in report.splits:
            log.warning("no %s split in the report: no W&B report", split)
            return
        import wandb

        part = report.splits[split]
        threshold = report.operating_point.threshold
        labels = np.asarray(part.predictions.labels)
        probs = np.asarray(part.predictions.probabilities, dtype=np.float64)
        calls = (probs >= threshold).astype(np.int64)
        payload: dict[str, Any] = {
            f"{split}/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=labels.tolist(),
                preds=calls.tolist(),
                class_names=list(class_names),
                title=f"Confusion matrix ({split}, threshold {threshold:.4g})",
            )
        }
        for kind, x_name, y_name, title in (
            ("roc", "False positive rate", "True positive rate", f"ROC curve ({split})"),
            ("pr", "Recall", "Precision", f"Precision-recall curve ({split})"),
        ):
            rows = curve_rows(part, kind, class_names[1], self.max_curve_points)
            if rows:
                payload[f"{split}/{kind}_curve"] = wandb.plot_table(
                    "wandb/area-under-curve/v0",
                    wandb.Table(columns=["class", "x", "y"], data=rows),
                    {"x": "x", "y": "y", "class": "class"},
                    {"title": title, "x-axis-title": x_name, "y-axis-title": y_name},
                )
        table = wandb.Table(
            columns=["image", "file", "label", "prediction", "p_prediction", "p_label"]
        )
        for index in part.wrong:
            label, call = int(labels[index]), int(calls[index])
            p_pneumonia = float(probs[index])
            p_of = {1: p_pneumonia, 0: 1 - p_pneumonia}
            file = part.predictions.files[index]
            image = wandb.Image(
                thumbnail(image_of(split, index), self.thumbnail_size),
                caption=f"{Path(file).name}: {class_names[label]} as {class_names[call]}",
            )
            table.add_data(
                image,
                file,
                class_names[label],
                class_names[call],
                round(p_of[call], 4),
                round(p_of[label], 4),
            )
        payload[f"{split}/confidently_wrong"] = table
        payload[f"{split}/threshold"] = threshold
        logger.experiment.log(payload)

    def log_subgroups(self, logger: WandbLogger, report: EvaluationReport) -> None:
        """Every split's subgroup tables (one per column) and shortcut checks, as W&B tables
        holding what report.md shows; nothing when the report has no subgroups."""
        payload = subgroup_tables(report)
        if payload:
            logger.experiment.log(payload)

    def log_findings(self, logger: WandbLogger, report: EvaluationReport) -> None:
        """A findings model's ``<split>/findings`` tables: report.md's Findings rows."""
        payload = finding_tables(report)
        if payload:
            logger.experiment.log(payload)


def curve_rows(part: SplitReport, kind: str, positive: str, max_points: int) -> list[list[Any]]:
    """Rows ``[positive, x, y]`` of the split's ROC or precision-recall curve, at most
    ``max_points`` evenly spaced points with both ends kept (W&B tables are capped); none when
    the split has one class only."""
    curve = part.curve(kind)
    if curve is None:
        log.warning("no %s curve for %s: the split has one class only", kind, positive)
        return []
    x, y = curve
    keep = np.arange(len(x))
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(np.int64))
    return [[positive, float(x[i]), float(y[i])] for i in keep]


FINDING_METRICS = ("auroc", "auprc", "recall_at_threshold", "specificity_at_threshold")
FINDING_COLUMNS = ["finding", "present", "absent", "threshold", "ece"] + [
    f"{name}{part}" for name in FINDING_METRICS for part in ("", "_ci_low", "_ci_high")
]


def finding_rows(metrics: Mapping[str, float], split: str) -> list[list[Any]]:
    """Rows of ``FINDING_COLUMNS`` for each finding the report's metrics hold for ``split``
    (``<split>/finding/<name>/...``, ``evaluation.finding_report``), in the order they were
    computed; undefined values as None (empty in W&B)."""
    names = list(
        dict.fromkeys(
            key.split("/")[2]
            for key in metrics
            if key.startswith(f"{split}/finding/") and key.count("/") == 3
        )
    )
    rows = []
    for name in names:
        prefix = f"{split}/finding/{name}"
        row: list[Any] = [
            name,
            int(metrics.get(f"{prefix}/n_pos", 0)),
            int(metrics.get(f"{prefix}/n_neg", 0)),
        ]
        cells = FINDING_COLUMNS[3:]
        row += [_finite(metrics.get(f"{prefix}/{cell}")) for cell in cells]
        rows.append(row)
    return rows


def _finite(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) else None


def finding_tables(report: EvaluationReport) -> dict[str, Any]:
    """``<split>/findings`` W&B tables; none for a model without findings."""
    import wandb

    payload = {}
    for split in report.splits:
        rows = finding_rows(report.metrics, split)
        if rows:
            payload[f"{split}/findings"] = wandb.Table(columns=FINDING_COLUMNS, data=rows)
    return payload


SUBGROUP_COLUMNS = ["category", "films", "pneumonia"] + [
    f"{name}{part}" for name in ESTIMATES for part in ("", "_ci_low", "_ci_high")
]
SHORTCUT_COLUMNS = ["column", "kind", "categories", "films_scored", "films", "auroc", "flagged"]


def subgroup_tables(report: EvaluationReport) -> dict[str, Any]:
    """``<split>/subgroups/<column>`` and ``<split>/shortcut_check`` tables (undefined
    estimates as None) for every split with subgroups."""
    import wandb

    payload: dict[str, Any] = {}
    for split, part in report.splits.items():
        if part.subgroups is None:
            continue
        for column, rows in part.subgroups.tables.items():
            data = [
                [
                    row.category,
                    row.n,
                    row.n_pos,
                    *(
                        value
                        for estimate in row.estimates().values()
                        for value in (estimate.value, estimate.low, estimate.high)
                    ),
                ]
                for row in rows
            ]
            payload[f"{split}/subgroups/{column}"] = wandb.Table(
                columns=SUBGROUP_COLUMNS, data=data
            )
        checks = [
            [c.column, c.kind, c.categories, c.films, c.total, c.auroc, c.flagged]
            for c in part.subgroups.shortcuts
        ]
        payload[f"{split}/shortcut_check"] = wandb.Table(columns=SHORTCUT_COLUMNS, data=checks)
    return payload

"""What a W&B run gets beyond per-step metrics: the split, resumable checkpoints, a val report.

The callback is harmless with any logger set: without a ``WandbLogger`` every hook returns at
once, and on ranks other than 0 it never touches W&B.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

from cxrnet.evaluation.predictions import predict_probabilities
from cxrnet.tracking import CHECKPOINT_KEY

log = logging.getLogger(__name__)


def collect_probabilities(
    module: L.LightningModule, loader: DataLoader, forward_context: Any = None
) -> tuple[Tensor, Tensor]:
    """Class probabilities (N, C) and labels (N,) for every batch of ``loader``, in order.

    Binary modules predict the positive class only; the negative column is added here so that
    binary and multiclass tasks share the code below.
    """
    probs, labels = predict_probabilities(module, loader, forward_context)
    if probs.ndim == 1:
        probs = torch.stack([1 - probs, probs], dim=1)
    return probs, labels


def predict_classes(probs: Tensor, threshold: float = 0.5) -> Tensor:
    """Binary: pneumonia when its probability reaches ``threshold``; multiclass: the argmax."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).long()
    return probs.argmax(dim=1)


def confidently_wrong(probs: Tensor, labels: Tensor, preds: Tensor, k: int) -> list[int]:
    """Indices of up to ``k`` wrong predictions, most confident (in the wrong class) first."""
    wrong = (preds != labels).nonzero().flatten()
    confidence = probs[wrong, preds[wrong]]
    order = confidence.argsort(descending=True, stable=True)
    return wrong[order][:k].tolist()


def curve_rows(
    probs: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    kind: str,
    max_points: int = 2000,
) -> list[list[Any]]:
    """Rows ``[class, x, y]`` of one-vs-rest ROC (``x=fpr``) or PR (``x=recall``) curves.

    Binary tasks plot the positive class only (the other curve is its mirror image). Classes
    with no positive or no negative image have no curve and are left out.
    """
    classes = [1] if probs.shape[1] == 2 else list(range(probs.shape[1]))
    rows: list[list[Any]] = []
    for index in classes:
        target = (labels == index).long()
        if target.sum() == 0 or target.sum() == len(target):
            log.warning("no %s curve for %s: validation has one class only", kind, index)
            continue
        if kind == "roc":
            x, y, _ = binary_roc(probs[:, index], target)
        elif kind == "pr":
            y, x, _ = binary_precision_recall_curve(probs[:, index], target)
        else:
            raise ValueError(f"curve kind must be 'roc' or 'pr', got {kind!r}")
        keep = _thin(len(x), max_points)
        rows += [[class_names[index], float(x[i]), float(y[i])] for i in keep]
    return rows


def _thin(n: int, max_points: int) -> list[int]:
    """At most ``max_points`` evenly spaced indices with both ends kept: W&B tables are capped."""
    if n <= max_points:
        return list(range(n))
    return torch.linspace(0, n - 1, max_points).round().long().unique().tolist()


def thumbnail(image: Tensor, size: int) -> Any:
    """A (1, H, W) image in [0, 1] as uint8 pixels no larger than ``size`` on either side."""
    if max(image.shape[-2:]) > size:
        scale = size / max(image.shape[-2:])
        shape = [max(1, round(side * scale)) for side in image.shape[-2:]]
        image = F.interpolate(image[None], size=shape, mode="area")[0]
    return (image[0].clamp(0, 1) * 255).round().byte().numpy()


class WandbReport(Callback):
    """Adds to the W&B run: the split file, the run id in checkpoints, and a validation report.

    The report comes after every ``trainer.validate`` call (the entry point validates the best
    checkpoint): a confusion matrix, ROC and precision-recall curves, and a table of the
    ``top_k_wrong`` most confidently wrong validation images with thumbnails.
    """

    def __init__(
        self,
        split_csv: str | None = None,
        top_k_wrong: int = 16,
        thumbnail_size: int = 128,
        max_curve_points: int = 2000,
    ) -> None:
        super().__init__()
        self.split_csv = Path(split_csv) if split_csv else None
        self.top_k_wrong = top_k_wrong
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only a validate() call, where the entry point has loaded the best checkpoint; the
        # per-epoch validation inside fit() is what the metrics already show.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.VALIDATING:
            return
        logger = self._wandb_logger(trainer)
        if logger is None:
            return
        loader = self._val_loader(trainer)
        if loader is None:
            log.warning("no validation loader: no W&B validation report")
            return
        forward_context = trainer.precision_plugin.forward_context
        probs, labels = collect_probabilities(pl_module, loader, forward_context)
        logger.experiment.log(self.report(trainer, pl_module, loader, probs, labels))

    @staticmethod
    def _val_loader(trainer: L.Trainer) -> DataLoader | None:
        # The data module's own loader covers the whole set; the trainer's may be one DDP shard.
        datamodule = trainer.datamodule
        if datamodule is not None:
            return datamodule.val_dataloader()
        loaders = trainer.val_dataloaders
        if isinstance(loaders, (list, tuple)):
            return loaders[0] if loaders else None
        return loaders

    def report(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        loader: DataLoader,
        probs: Tensor,
        labels: Tensor,
    ) -> dict[str, Any]:
        """The W&B charts and table for one validation pass."""
        import wandb

        class_names = list(
            getattr(pl_module, "class_names", None)
            or [str(index) for index in range(probs.shape[1])]
        )
        threshold = float(getattr(pl_module.hparams, "threshold", 0.5))
        preds = predict_classes(probs, threshold)
        payload: dict[str, Any] = {
            "val/confusion_matrix": wandb.plot.confusion_matrix(
                y_true=labels.tolist(),
                preds=preds.tolist(),
                class_names=class_names,
                title=f"Confusion matrix (validation, threshold {threshold:g})",
            )
        }
        for kind, x_name, y_name, title in (
            ("roc", "False positive rate", "True positive rate", "ROC curve (validation)"),
            ("pr", "Recall", "Precision", "Precision-recall curve (validation)"),
        ):
            rows = curve_rows(probs, labels, class_names, kind, self.max_curve_points)
            if rows:
                payload[f"val/{kind}_curve"] = wandb.plot_table(
                    "wandb/area-under-curve/v0",
                    wandb.Table(columns=["class", "x", "y"], data=rows),
                    {"x": "x", "y": "y", "class": "class"},
                    {"title": title, "x-axis-title": x_name, "y-axis-title": y_name},
                )
        payload["val/confidently_wrong"] = self._wrong_table(
            trainer, loader, probs, labels, preds, class_names
        )
        return payload

    def _wrong_table(
        self,
        trainer: L.Trainer,
        loader: DataLoader,
        probs: Tensor,
        labels: Tensor,
        preds: Tensor,
        class_names: Sequence[str],
    ) -> Any:
        import wandb

        records = getattr(trainer.datamodule, "split_records", {}).get("val")
        if records is not None and len(records) != len(labels):
            records = None  # not the loader's order, so the names would be wrong
        table = wandb.Table(
            columns=["image", "file", "label", "prediction", "p_prediction", "p_label"]
        )
        for index in confidently_wrong(probs, labels, preds, self.top_k_wrong):
            label, pred = int(labels[index]), int(preds[index])
            file = str(records[index].path) if records is not None else f"val[{index}]"
            image = wandb.Image(
                thumbnail(loader.dataset[index][0], self.thumbnail_size),
                caption=f"{Path(file).name}: {class_names[label]} as {class_names[pred]}",
            )
            table.add_data(
                image,
                file,
                class_names[label],
                class_names[pred],
                round(float(probs[index, pred]), 4),
                round(float(probs[index, label]), 4),
            )
        return table

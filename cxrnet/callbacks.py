"""Lightning callbacks every run can use."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

if TYPE_CHECKING:
    import lightning as L


class FailOnNonFinite(Callback):
    """Fail the run as soon as a training loss (or the monitored metric) is NaN or infinite.

    A diverged run otherwise trains on NaN weights to the end and reports a score that looks
    real (an AUROC of 0 or 0.5); in a search it must be a failed trial instead.
    """

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(
                f"the training loss is {loss.detach().float().mean().item()} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx}: training diverged (a lower "
                "model.optimizer.lr usually helps)"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.monitor or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(
                f"{self.monitor} is {float(value)} after epoch {trainer.current_epoch}: "
                "the search cannot rank this trial"
            )

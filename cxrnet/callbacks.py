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


class TrainingDiverged(FloatingPointError):
    """The loss or the monitored metric became NaN or infinite: the run has no result."""


def current_lr(trainer: L.Trainer) -> float | None:
    """The first parameter group's learning rate now, or None before optimizers exist."""
    optimizers = trainer.optimizers
    return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None


class FailOnNonFinite(Callback):
    """Fail the run as soon as a training loss (or the monitored metric) is NaN or infinite.

    A diverged run otherwise trains on NaN weights to the end and reports a score that looks
    real (an AUROC of 0.93 from NaN predictions); it must be a failed run instead. On by default
    (conf/callbacks/default.yaml); ``~callbacks.fail_on_non_finite`` switches it off.
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
            raise TrainingDiverged(
                f"training diverged: the loss is {loss.detach().float().mean().item()} at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step} (batch {batch_idx}), "
                f"learning rate {current_lr(trainer)}; lower model.optimizer.lr"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.monitor or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise TrainingDiverged(
                f"{self.monitor} is {float(value)} after epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}, learning rate {current_lr(trainer)}: the predictions "
                "are not finite, so the run cannot be scored; lower model.optimizer.lr"
            )

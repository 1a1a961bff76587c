"""Lightning callbacks every run can use."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

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


class LastCheckpoint(Callback):
    """Save ``last.ckpt`` when a run is stopped by SIGTERM or Ctrl-C, and remember why.

    Lightning stops at the end of the current batch on SIGTERM (the scheduler's "please stop")
    but saves nothing and exits with code 0; on Ctrl-C it exits with code 1, which looks like
    any failure. The checkpoint makes the run resumable (``ckpt_path=last``) and ``reason`` lets
    the entry point record the run as interrupted. (Between signals ``last.ckpt`` is written by
    ModelCheckpoint at the end of each validation: the point an exact resume starts from. One
    written on a signal, mid-epoch, resumes but does not replay the rest of that epoch exactly.)
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / self.FILENAME
        self.reason: str | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.reason = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.reason = "SIGINT"
        else:
            return
        if trainer.state.fn == TrainerFn.FITTING:
            # Every rank takes part (the strategy gathers state); rank 0 writes the file.
            trainer.save_checkpoint(self.path)


class EpochSeed(Callback):
    """Reseed every random generator at the start of each training epoch from (seed, epoch).

    The shuffle order, the augmentation and dropout of an epoch then depend on the seed and the
    epoch number only, not on everything drawn before. A run resumed from an end-of-epoch
    ``last.ckpt`` therefore trains exactly as the uninterrupted run did (with
    ``trainer.deterministic=true``); without this, a resume restarts the generators from the
    seed and the remaining epochs draw different numbers.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct seed per (seed, epoch) within numpy's 32-bit range."""
    return (seed * 1_000_003 + epoch) % 2**32

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

from cxrnet.data.sampling import epoch_seed
from cxrnet.publish import write_file
from cxrnet.training.seeding import capture_rng, restore_rng

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
    """Write ``last.ckpt`` every ``every_n_train_steps`` training steps and when a run is stopped
    by SIGTERM or Ctrl-C, and remember why it stopped.

    ModelCheckpoint writes ``last.ckpt`` at the end of each epoch's validation; on a cluster an
    epoch can be long, and a job killed outright (SIGKILL, a lost node) then loses all of it.
    With ``every_n_train_steps`` the run also saves in the middle of an epoch, and a resume from
    there continues exactly (``cxrnet.data.sampling``, ``EpochSeed``). Each write goes to a
    staging file first and is renamed over ``last.ckpt``, so a kill while writing leaves the
    previous checkpoint whole. No mid-epoch save at an epoch's last step: ModelCheckpoint's
    follows it at once, with the epoch's validation.

    Lightning stops at the end of the current batch on SIGTERM (the scheduler's "please stop")
    but saves nothing and exits with code 0; on Ctrl-C it exits with code 1, which looks like
    any failure. The checkpoint makes the run resumable (``ckpt_path=last``) and ``reason`` lets
    the entry point record the run as interrupted.
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_train_steps must be >= 1 or null (off), got "
                f"{every_n_train_steps}"
            )
        self.path = Path(dirpath) / self.FILENAME
        self.every_n_train_steps = every_n_train_steps
        self.reason: str | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        every = self.every_n_train_steps
        if (
            every is None
            or trainer.global_step % every
            or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        ):
            return
        self.save(trainer)

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
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` whole or not at all."""
        # Every rank takes part (the strategy gathers state); rank 0 writes the file.
        if trainer.is_global_zero:
            write_file(self.path, trainer.save_checkpoint)
        else:
            trainer.save_checkpoint(self.path)


class EpochSeed(Callback):
    """Reseed every global random generator at the start of each training epoch from (seed,
    epoch), and carry their states in checkpoints.

    What the network draws (dropout) then depends on the seed and the epoch only, not on
    everything drawn before: a run resumed from an end-of-epoch ``last.ckpt`` trains exactly as
    the uninterrupted run did (with ``trainer.deterministic=true``). A resume from the middle
    of an epoch (``LastCheckpoint.every_n_train_steps``, SIGTERM) starts no epoch, so the states
    saved with the checkpoint are put back just before training continues. The training draw
    itself (order, augmentation) has its own generator per epoch (``cxrnet.data.sampling``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._saved_rng: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seed_everything(epoch_seed(self.seed, trainer.current_epoch), workers=True, verbose=False)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": capture_rng()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_rng = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the sanity check and the loaders' creation, which draw from these generators
        # too; the resumed run's first step then draws what the uninterrupted run's did.
        if self._saved_rng is not None:
            restore_rng(self._saved_rng)
            self._saved_rng = None

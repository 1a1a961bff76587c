"""Pruning from inside training: report the monitor to the Optuna trial after each epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from cxrnet.runs import RunStatus, RunStopped

if TYPE_CHECKING:
    import lightning as L


class TrialPrunedRun(RunStopped, optuna.TrialPruned):
    """Optuna's TrialPruned that the run record also understands: the job is ``pruned``."""

    status = RunStatus.PRUNED


class ReportToTrial(Callback):
    """Report ``monitor`` to the Optuna trial after each training epoch's validation; prune."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only while fitting: the validation of the best checkpoint afterwards is not an epoch.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return  # the LightningModule itself raises for an unknown monitor
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise TrialPrunedRun(
                f"pruned after epoch {epoch}: {self.monitor}={float(value):.4f} "
                "is worse than the pruner's bar at this epoch"
            )

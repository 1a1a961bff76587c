"""A callback that kills its own training process with SIGKILL at a given step.

The tests add it from the command line
(``+callbacks.sigkill._target_=helpers.sigkill.SigkillAtStep``) to kill a run at an exact point
in the middle of an epoch: polling for a checkpoint from outside races with a run that takes a
fraction of a second per step. SIGKILL cannot be caught, so the
run saves and records nothing, as when a node is lost or the OOM killer strikes.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch.callbacks import Callback


class SigkillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

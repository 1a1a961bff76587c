"""A callback that holds a training run at the start of an epoch until the test lets it go.

Added from the command line (``+callbacks.gate._target_=helpers.gate.HoldAtEpoch``): the run
touches ``reached`` when it gets there and trains on once ``release`` exists, so a test acts
while the run is surely mid-training, without guessing how long an epoch takes. It goes on by
itself after ``max_wait_s``, so a test that failed does not leave it waiting.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class HoldAtEpoch(Callback):
    def __init__(self, epoch: int, reached: str, release: str, max_wait_s: float = 300) -> None:
        self.epoch = epoch
        self.reached = Path(reached)
        self.release = Path(release)
        self.max_wait_s = max_wait_s

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        if trainer.current_epoch != self.epoch:
            return
        self.reached.touch()
        deadline = time.monotonic() + self.max_wait_s
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

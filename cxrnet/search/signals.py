"""SIGTERM ends a search worker the way Ctrl-C does: its trial marked interrupted and queued again.

Slurm sends SIGTERM when it cancels or pre-empts a job or at its time limit, and SIGKILL
``KillWait`` seconds later. Python's default for SIGTERM is to die at once, which would leave
the trial RUNNING until its heartbeat goes stale; the worker instead stops the trial and exits
non-zero, and the trial is queued for the next worker that asks (``requeue_interrupted``).

While a trial trains, Lightning has its own SIGTERM handler (it stops at the end of the current
batch, and cxrnet saves ``last.ckpt`` and records the run as interrupted), and calls the one it
found installed, this one, which then only notes the signal. Outside training (data set-up, the
evaluation pass, between trials) this one raises ``SearchInterrupted`` at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import optuna
from optuna.trial import FrozenTrial


class SearchInterrupted(KeyboardInterrupt):
    """The worker was told to stop by a signal; ``exit_code`` is the shell's 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"search stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class TermSignal:
    """Whether SIGTERM arrived while installed (see ``stop_on_sigterm``)."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if signal.getsignal(signal.SIGTERM) is self:
            raise SearchInterrupted(signum)
        # Called by Lightning's handler: the trial stops at the end of its batch.

    def stop_study(self, study: optuna.Study, _trial: FrozenTrial) -> None:
        """An Optuna callback: no new trial once SIGTERM arrived (e.g. as a trial's training
        ended, too late for Lightning to stop it)."""
        if self.received:
            study.stop()

    def check(self) -> None:
        """Raise ``SearchInterrupted`` if SIGTERM arrived (e.g. while Lightning handled it)."""
        if self.received:
            raise SearchInterrupted(signal.SIGTERM)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[TermSignal]:
    """Install a ``TermSignal`` for SIGTERM while the block runs; the previous handler after."""
    handler = TermSignal()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)

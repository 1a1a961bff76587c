"""Hydra multirun support: jobs of a parallel sweep behave exactly like single runs, and a
k-fold sweep ends with its fold ensemble (``BuildEnsemble``).

Parallel sweeps use hydra-joblib-launcher (``hydra/launcher=parallel`` or ``=joblib``), which runs
each job in a loky worker process. loky makes ``"loky"`` the process-wide multiprocessing start
method inside its workers, and PyTorch DataLoader workers (``data.num_workers > 0``, the default)
then die with ``AttributeError: 'Process' object has no attribute 'env'`` (joblib#1104, hydra#964).
``RestoreStartMethod``, a Hydra callback listed in conf/hydra/default.yaml, puts the platform's own
start method back when each job starts; everywhere else it does nothing.

Why not a launcher plugin of our own: Hydra finds plugins by walking the ``hydra_plugins``
namespace package, which an editable install (setuptools >= 64, PEP 660) hides from it (hydra#3252),
so a plugin shipped inside cxrnet would silently vanish from every developer checkout. A Hydra
callback is instantiated from its ``_target_`` and needs no discovery.
"""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

LOKY_START_METHOD = "loky"


class RestoreStartMethod(Callback):
    """Undo loky's start method inside a parallel job, before the job builds its DataLoaders."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        restore_start_method()


def restore_start_method() -> bool:
    """Reset a loky start method to the platform default; True when something was changed."""
    if multiprocessing.get_start_method(allow_none=True) != LOKY_START_METHOD:
        return False
    # None restores the interpreter's default (fork on Linux up to 3.13, forkserver from 3.14,
    # spawn on macOS): what the same job would use when run on its own.
    multiprocessing.set_start_method(None, force=True)
    return True


class BuildEnsemble(Callback):
    """After the last job of a k-fold sweep, its fold ensemble: ``cxrnet-ensemble <sweep>``.

    Listed by ``experiment=best_cv``. Hydra calls this only when every job succeeded (a failed
    fold already ends the sweep non-zero with its error) and turns a callback's exceptions into
    warnings, so a failure here leaves by ``SystemExit``: the sweep's command exits non-zero.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cxrnet.cli.ensemble import main  # torch and the report only when a sweep asks

        code = main([str(config.hydra.sweep.dir)])
        if code:
            print("cxrnet-train: the fold ensemble was not written", file=sys.stderr)
            raise SystemExit(code)

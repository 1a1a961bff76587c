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

``CheckOutputFolder`` refuses a run or sweep folder that cannot be made (``paths.log_dir`` a file,
a read-only disk) before Hydra tries to make it, which would end in a traceback, and a run folder
another process trains in (``cxrnet.runs.folder_lock``) before Hydra writes its ``.hydra/`` there.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import USAGE_ERROR_EXIT
from cxrnet.user_errors import ConfigError

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


class SweepFolder(Callback):
    """A sweep names its folder when it starts (every job's run folder is below it) and, when
    every job has ended, the command that compares its runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(f"sweep folder: {Path(str(config.hydra.sweep.dir)).expanduser().absolute()}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)).expanduser().absolute()
        print(f"\nsweep folder: {folder}\nnext: cxrnet-compare {folder}   (its runs side by side)")


class CheckOutputFolder(Callback):
    """A run (or sweep) folder that cannot be made is one ``error:`` line and exit 2.

    Hydra makes the folder after this callback and before the task function, so the entry
    point's own error handling (``exit_codes.brief_errors``) never sees the failure. Hydra turns
    a callback's exceptions into warnings, hence the ``SystemExit``; with ``HYDRA_FULL_ERROR=1``
    this does nothing and Hydra's own traceback follows.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unmakeable(str(config.hydra.run.dir), "hydra.run.dir")
        _refuse_held(Path(str(config.hydra.run.dir)).expanduser().absolute())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_unmakeable(str(config.hydra.sweep.dir), "hydra.sweep.dir")


def unmakeable_folder_reason(folder: Path) -> str | None:
    """Why ``folder`` cannot be made (its nearest existing parent is a file or not writable);
    None when it exists as a folder or can be made. Makes nothing."""
    for existing in (folder, *folder.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if existing != folder and not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable"
        return None
    return None


def _refuse_unmakeable(folder: str, key: str) -> None:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    reason = unmakeable_folder_reason(Path(folder).expanduser().absolute())
    if reason is not None:
        print(
            f"error: the output folder {folder} ({key}, under paths.log_dir) cannot be made: "
            f"{reason}; set paths.log_dir (or {key}) to a folder you can write",
            file=sys.stderr,
        )
        raise SystemExit(USAGE_ERROR_EXIT)


def _refuse_held(run_dir: Path) -> None:
    """Refuse a run folder another process trains in before Hydra overwrites the ``.hydra/``
    (config.yaml, overrides.yaml) of the running run; the job itself takes the lock later. Ranks
    other than 0 of a multi-process job share rank 0's folder and lock, so they pass."""
    from cxrnet.runs.folder_lock import LOCK_NAME, refuse_if_held

    if not (run_dir / LOCK_NAME).exists():
        return  # the usual case: a new folder; nothing more to import
    from cxrnet.training.ddp import DDP_JOB_ENV
    from cxrnet.training.preflight import rank_from_env

    if rank_from_env() != 0 or os.environ.get(DDP_JOB_ENV):
        return
    try:
        refuse_if_held(run_dir)
    except ConfigError as error:
        # Also under HYDRA_FULL_ERROR=1: going on would overwrite the running run's files.
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_EXIT) from None

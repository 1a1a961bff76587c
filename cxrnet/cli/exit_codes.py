"""How an entry point ends on an error a user can fix: one clear message, no traceback.

``@brief_errors`` goes under ``@hydra.main``. A user error (``ConfigError``, ``DataError``:
a wrong setting, a missing file, bad data) prints ``error: <message>`` and exits with status 2,
the usual code for a usage error; a run that ended without a result (``TrainingDiverged`` or
other NaN results, ``RunStopped``, e.g. no checkpoint saved) prints its one line and exits 1.
Anything else is a fault in cxrnet or the machine and keeps its traceback.
``HYDRA_FULL_ERROR=1`` prints the traceback of user errors too.

Hydra's own ``@hydra.main`` catches every ``Exception`` and exits 1 with a traceback, but lets
``SystemExit`` through, hence the exit from inside the task function. In a multirun sweep the
error is raised on instead: Hydra then records the job as failed and goes on with the next one.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cxrnet.runs import RunStopped
from cxrnet.user_errors import ConfigError, DataError

USAGE_ERROR_EXIT = 2
RUN_FAILED_EXIT = 1
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataError)
# FloatingPointError: a diverged network (TrainingDiverged) or its NaN predictions.
RUN_FAILURES: tuple[type[BaseException], ...] = (FloatingPointError, RunStopped)

T = TypeVar("T")


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_code_for(error: BaseException) -> int | None:
    """The exit status for an error that ends briefly; None for one that keeps its traceback."""
    if isinstance(error, USER_ERRORS):
        return USAGE_ERROR_EXIT
    if isinstance(error, RUN_FAILURES):
        return RUN_FAILED_EXIT
    return None


def brief_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
    """Wrap a Hydra task function so user errors end it with one message and status 2."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T:
        try:
            return task(cfg)
        except Exception as error:
            code = exit_code_for(error)
            if code is None or _in_multirun():
                raise
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                traceback.print_exc()
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(code) from None

    return wrapper

"""How an entry point ends on an error a user can fix: one clear message, no traceback.

``@brief_errors`` goes under ``@hydra.main``. A user error (``ConfigError``, ``DataError``:
a wrong setting, a missing file, bad data) prints ``error: <message>`` and exits with status 2,
the usual code for a usage error; a run that ended without a result (``TrainingDiverged`` or
other NaN results, ``RunStopped``, e.g. no checkpoint saved) prints its one line and exits 1.
Anything else is a fault in cxrnet or the machine and keeps its traceback. A ``_target_`` that
Hydra's instantiation policy blocks (``os.system``, ``subprocess.run``) is a user error too, and
so is cxrnet's own refusal of a setting raised while Hydra builds a target.
``HYDRA_FULL_ERROR=1`` prints the traceback of user errors too.

Hydra's own ``@hydra.main`` catches every ``Exception`` and exits 1 with a traceback, but lets
``SystemExit`` through, hence the exit from inside the task function. In a multirun sweep the
error is raised on instead: Hydra then records the job as failed and goes on with the next one.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

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


def blocked_target(error: BaseException) -> ConfigError | None:
    """Hydra's refusal to build a blocklisted ``_target_`` as one line naming the key; None for
    any other error (a target's own failure keeps its traceback)."""
    from hydra.errors import InstantiationException

    text = str(error)
    if not isinstance(error, InstantiationException) or "is blocklisted" not in text:
        return None
    target = re.search(r"Target '([^']+)'", text)
    key = re.search(r"full_key: (\S+)", text)
    name = target.group(1) if target else "?"
    setting = f"{key.group(1)}._target_" if key else "_target_"
    bypass = ""
    if "HYDRA_INSTANTIATE_ALLOWLIST_OVERRIDE=" in text:
        bypass = f", or allow it with HYDRA_INSTANTIATE_ALLOWLIST_OVERRIDE={name} if you trust it"
    return ConfigError(
        f"{setting}={name} is blocked: a config may not name a callable that runs commands or "
        f"changes files; set {setting} to the class that setting builds (an optimizer, scheduler, "
        f"callback or logger class, as in cxrnet's conf/){bypass}"
    )


def instantiation_error(
    error: BaseException, cfg: DictConfig | None = None
) -> ConfigError | DataError | None:
    """cxrnet's own refusal of a setting, raised while Hydra builds a ``_target_`` (the data
    module refusing ``data.split``, the module ``model.label_smoothing``), unwrapped from
    Hydra's ``Error in call to target ...`` into one line naming the config node; None for any
    other error (a third-party class's own failure keeps its traceback)."""
    from hydra.errors import InstantiationException

    cause = error.__cause__
    if not isinstance(error, InstantiationException) or cause is None:
        return None
    if not isinstance(cause, USER_ERRORS) and not (
        isinstance(cause, ValueError) and _raised_by_cxrnet(cause)
    ):
        return None
    found = re.search(r"full_key: (\S+)", str(error))
    text, kind = str(cause), DataError if isinstance(cause, DataError) else ConfigError
    if found is None:
        return kind(text)
    key = found.group(1)
    if text.startswith(f"{key}."):  # the message names the setting already
        return kind(text)
    # "split must be one of ..." from the node at data: "data.split must be one of ...".
    first = text.split(" ", 1)[0]
    node = OmegaConf.select(cfg, key) if cfg is not None else None
    if isinstance(node, DictConfig) and first in node:
        return kind(f"{key}.{text}")
    return kind(f"{key}: {text}")


def _raised_by_cxrnet(error: BaseException) -> bool:
    """The error's innermost frame is in cxrnet's own code: cxrnet checking a value it was
    given, not a fault deeper down."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


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
            brief = blocked_target(error) or instantiation_error(error, cfg) or error
            code = exit_code_for(brief)
            if code is None or _in_multirun():
                raise
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                traceback.print_exc()
            print(f"error: {brief}", file=sys.stderr)
            raise SystemExit(code) from None

    return wrapper

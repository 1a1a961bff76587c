"""Third-party output that tells a cxrnet user nothing, silenced at the entry points only (a
library user's own program keeps every warning it would otherwise see).

- Lightning's hint to prepend ``srun`` wherever the command exists: cxrnet's Slurm launcher
  (hydra-submitit, ``hydra/launcher=slurm``) starts each task with ``srun`` itself, and a run
  started by hand on a login node is meant to run there.
- Lightning's tips advertising other packages (``litlogger``, ``litmodels``).
- torch's FutureWarning about ``isinstance(treespec, LeafSpec)``, raised inside Lightning's own
  code, which a user cannot act on.
"""

from __future__ import annotations

import logging
import warnings

_WARNINGS = (
    (r"The `srun` command is available on your system but is not used", Warning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)
# Lightning logs its tips through lightning_utilities' rank-zero logger, which Lightning renames
# to its own module's on import.
_TIP_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def silence_known_noise() -> None:
    """Filter the output listed above (idempotent)."""
    for message, category in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())

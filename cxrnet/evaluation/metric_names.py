"""The names of the epoch metrics ``ClassifierModule`` logs and which way each is better.

Apart from ``metrics`` (which builds them with torchmetrics) so that checking a config's
``monitor`` before a run imports neither torch nor torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cxrnet.user_errors import ConfigError

MonitorMode = Literal["max", "min"]

# Logged per stage for every task; multiclass runs add recall_<class> (epoch_metric_names).
EPOCH_METRICS = ("loss", "accuracy", "precision", "recall", "specificity", "f1", "auroc")


def epoch_metric_names(stage: str, class_names: Sequence[str]) -> list[str]:
    """Every ``<stage>/<metric>`` name ``ClassifierModule`` logs at the end of an epoch."""
    names = list(EPOCH_METRICS)
    if len(class_names) > 2:
        names += [f"recall_{name.lower()}" for name in class_names]
    return [f"{stage}/{name}" for name in names]


def monitor_mode_for(monitor: str, mode: str | None = None) -> MonitorMode:
    """Whether a higher or lower ``monitor`` is better: losses are minimised, scores maximised.

    ``mode`` None follows the metric; a mode that contradicts it (keep the highest loss) is an
    error, since it would silently pick the worst checkpoint.
    """
    natural: MonitorMode = "min" if "loss" in monitor.rsplit("/", 1)[-1] else "max"
    if mode is None:
        return natural
    if mode not in ("max", "min"):
        raise ConfigError(f"monitor_mode must be 'max', 'min' or null, got {mode!r}")
    if mode != natural:
        raise ConfigError(
            f"monitor_mode={mode} contradicts monitor={monitor}: a "
            f"{'loss' if natural == 'min' else 'score'} is best when "
            f"{'lowest' if natural == 'min' else 'highest'}; set monitor_mode={natural} or "
            "leave it unset (null) to follow the metric"
        )
    return mode


# Per-category tables live in report.md and metrics.json: at hundreds of keys they would bury
# the split's own numbers in a console summary.
_TABLE_KEYS = ("subgroup", "shortcut")


def in_console_summary(key: str) -> bool:
    """Whether a ``<split>/<metric>`` key is a point estimate a console summary shows (not an
    interval bound, a count, or a row of a subgroup table)."""
    parts = key.split("/")
    in_table = any(part in _TABLE_KEYS for part in parts[1:-1])
    return "_ci_" not in key and "/n_" not in key and not in_table

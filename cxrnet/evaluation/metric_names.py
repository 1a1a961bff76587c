"""The names of the epoch metrics ``ClassifierModule`` logs and which way each is better.

Apart from ``metrics`` (which builds them with torchmetrics) so that checking a config's
``monitor`` before a run imports neither torch nor torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cxrnet.data.findings import FINDINGS
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


# data.task=findings: per finding (``<stage>/<metric>/<finding>``), and the pooled names: the
# loss over every labelled finding, the mean AUROC and AUPRC over the findings with enough
# positive films (``findings_in_mean`` of them; ``evaluation.finding_metrics``).
FINDING_METRICS = ("auroc", "auprc", "recall", "specificity")
FINDING_POOLED = ("loss", "auroc", "auprc", "findings_in_mean")


def finding_metric_names(stage: str, findings: Sequence[str]) -> list[str]:
    """Every name ``ClassifierModule`` logs at the end of an epoch of a findings model."""
    pooled = [f"{stage}/{name}" for name in FINDING_POOLED]
    return pooled + [f"{stage}/{metric}/{name}" for metric in FINDING_METRICS for name in findings]


def is_finding_name(name: str) -> bool:
    """Whether ``name`` is a per-finding metric's (``val/auroc/pneumonia``)."""
    parts = name.split("/")
    return len(parts) == 3 and parts[1] in FINDING_METRICS and parts[2] in FINDINGS


# Per-source validation metrics (``per_source_names``): the metrics that have one value per
# source, and the name of the worst source's value (lowest score, highest loss).
SOURCE_METRICS = ("loss", "accuracy", "precision", "recall", "specificity", "f1", "auroc")
WORST_SOURCE = "worst"


def per_source_names(stage: str, sources: Sequence[str]) -> list[str]:
    """``<stage>/<metric>/<source>`` for each source, and ``<stage>/<metric>/worst``: what
    ``ClassifierModule`` logs when its val films come from named sources."""
    if not sources:
        return []
    return [
        f"{stage}/{metric}/{name}" for metric in SOURCE_METRICS for name in (*sources, WORST_SOURCE)
    ]


def is_per_source_name(name: str) -> bool:
    """Whether ``name`` has the form of a per-source metric (``val/auroc/<source>``): which
    sources the data has is known only once it is read (``check_source_monitor``)."""
    parts = name.split("/")
    per_source = len(parts) == 3 and parts[0] == "val" and parts[1] in SOURCE_METRICS
    return per_source and bool(parts[2]) and not is_finding_name(name)


def check_source_monitor(monitor: str, sources: Sequence[str], key: str = "monitor") -> None:
    """A per-source ``monitor`` names a source the val films come from, or ``worst``; ``key``
    is the setting that holds it, for the message."""
    if not is_per_source_name(monitor):
        return
    source = monitor.split("/")[2]
    if (source == WORST_SOURCE and sources) or source in sources:
        return
    present = (
        f"the val films' sources are {list(sources)}"
        if sources
        else "no val film has a source (a manifest's source column)"
    )
    raise ConfigError(
        f"{key}={monitor}: {present}; monitor one of "
        f"{per_source_names('val', sources) or ['val/auroc', 'val/loss', '...']}"
    )


def monitor_mode_for(monitor: str, mode: str | None = None) -> MonitorMode:
    """Whether a higher or lower ``monitor`` is better: losses are minimised, scores maximised.

    ``mode`` None follows the metric; a mode that contradicts it (keep the highest loss) is an
    error, since it would silently pick the worst checkpoint.
    """
    # The metric is the part after the stage: val/loss, val/loss/<source> (per_source_names).
    parts = monitor.split("/")
    metric = parts[1] if len(parts) > 2 else parts[-1]
    natural: MonitorMode = "min" if "loss" in metric else "max"
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
    # A findings model's rows (<split>/finding/<name>/<metric>): its AUROC and threshold only;
    # the rest of each row is report.md's Findings table.
    if len(parts) == 4 and parts[1] == "finding" and parts[3] not in ("auroc", "threshold"):
        return False
    return "_ci_" not in key and "/n_" not in key and not in_table

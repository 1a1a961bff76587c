"""Epoch-level classification metrics, one collection per stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

# The names live apart so that config checks need no torch; imported here for the modules that
# build and log the metrics.
from cxrnet.evaluation.metric_names import MonitorMode, epoch_metric_names, monitor_mode_for
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD

__all__ = [
    "MonitorMode",
    "WeightedMean",
    "classification_metrics",
    "epoch_metric_names",
    "metric_states",
    "monitor_mode_for",
]


class WeightedMean(MeanMetric):
    """torchmetrics' weighted ``MeanMetric`` without its NaN check.

    The check is an ``if nans.any()`` per update, a host synchronisation per step on a GPU. Its
    ``nan_strategy="disable"`` would skip it but (torchmetrics 1.9) also replaces the weights with
    ones, so this update is the parent's without the check: a NaN value makes the mean NaN.
    Same states (``mean_value``, ``weight``), so checkpoints holding them load either way.
    """

    def update(self, value: float | Tensor, weight: float | Tensor = 1.0) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weight = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        if value.numel() == 0:
            return
        self.mean_value += (value * torch.broadcast_to(weight, value.shape)).sum()
        self.weight += torch.broadcast_to(weight, value.shape).sum()


def classification_metrics(
    num_classes: int,
    threshold: float = DEFAULT_THRESHOLD,
    validate_args: bool = True,
    sync_on_compute: bool = True,
) -> MetricCollection:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and AUROC.

    Binary metrics take the pneumonia probability; multiclass ones take class probabilities and
    are macro-averaged, with recall per class added as ``recall_<index>`` by the caller.
    ``validate_args=False`` skips torchmetrics' input checks, each a host synchronisation per
    update: for inputs the training loop itself produces. ``sync_on_compute=False`` for inputs
    every process already holds in full (gathered), which a sync would count once per process.
    """
    common = {"validate_args": validate_args, "sync_on_compute": sync_on_compute}
    if num_classes == 2:
        binary = {"threshold": threshold, **common}
        return MetricCollection(
            {
                "accuracy": BinaryAccuracy(**binary),
                "precision": BinaryPrecision(**binary),
                "recall": BinaryRecall(**binary),
                "specificity": BinarySpecificity(**binary),
                "f1": BinaryF1Score(**binary),
                "auroc": BinaryAUROC(**common),
            }
        )
    kwargs = {"num_classes": num_classes, "average": "macro", **common}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(**kwargs),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "specificity": MulticlassSpecificity(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
            "auroc": MulticlassAUROC(**kwargs),
            "class_recall": MulticlassRecall(num_classes=num_classes, average=None, **common),
        }
    )


def metric_states(metrics: Mapping[str, Metric | MetricCollection]) -> dict[str, dict[str, Any]]:
    """What each updated metric has accumulated (tensors and lists of tensors), by name.

    torchmetrics keeps its states out of the state dict; a checkpoint written in the middle of
    an epoch needs them, or the resumed epoch's metrics cover only the batches after it.
    """
    states: dict[str, dict[str, Any]] = {}
    for prefix, metric in _flat(metrics):
        if metric.update_called:
            states[prefix] = {
                "update_count": metric.update_count,
                **{name: getattr(metric, name) for name in metric._defaults},
            }
    return states


def restore_metric_states(
    metrics: Mapping[str, Metric | MetricCollection], states: Mapping[str, Mapping[str, Any]]
) -> None:
    """Put back what ``metric_states`` returned; metrics it does not name start empty."""
    for prefix, metric in _flat(metrics):
        metric.reset()
        saved = states.get(prefix)
        if saved is None:
            continue
        for name in metric._defaults:
            value = saved[name]
            setattr(metric, name, list(value) if isinstance(value, (list, tuple)) else value)
        metric._update_count = int(saved["update_count"])


def _flat(metrics: Mapping[str, Metric | MetricCollection]) -> list[tuple[str, Metric]]:
    """Every metric with a dotted name; a collection's members each with their own states."""
    flat = []
    for key, metric in metrics.items():
        if isinstance(metric, MetricCollection):
            # copy_state: members of a compute group otherwise share their leader's state only.
            flat += [(f"{key}.{n}", m) for n, m in metric.items(keep_base=True, copy_state=True)]
        else:
            flat.append((key, metric))
    return flat

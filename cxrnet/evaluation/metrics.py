"""Epoch-level classification metrics, one collection per stage."""

from __future__ import annotations

from torchmetrics import MetricCollection
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


def classification_metrics(
    num_classes: int, threshold: float = 0.5, validate_args: bool = True
) -> MetricCollection:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and AUROC.

    Binary metrics take the pneumonia probability; multiclass ones take class probabilities and
    are macro-averaged, with recall per class added as ``recall_<index>`` by the caller.
    ``validate_args=False`` skips torchmetrics' input checks, each a host synchronisation per
    update: for inputs the training loop itself produces.
    """
    if num_classes == 2:
        binary = {"threshold": threshold, "validate_args": validate_args}
        return MetricCollection(
            {
                "accuracy": BinaryAccuracy(**binary),
                "precision": BinaryPrecision(**binary),
                "recall": BinaryRecall(**binary),
                "specificity": BinarySpecificity(**binary),
                "f1": BinaryF1Score(**binary),
                "auroc": BinaryAUROC(validate_args=validate_args),
            }
        )
    kwargs = {"num_classes": num_classes, "average": "macro", "validate_args": validate_args}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(**kwargs),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "specificity": MulticlassSpecificity(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
            "auroc": MulticlassAUROC(**kwargs),
            "class_recall": MulticlassRecall(
                num_classes=num_classes, average=None, validate_args=validate_args
            ),
        }
    )

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


def classification_metrics(num_classes: int, threshold: float = 0.5) -> MetricCollection:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and AUROC.

    Binary metrics take the pneumonia probability; multiclass ones take class probabilities and
    are macro-averaged, with recall per class added as ``recall_<index>`` by the caller.
    """
    if num_classes == 2:
        return MetricCollection(
            {
                "accuracy": BinaryAccuracy(threshold=threshold),
                "precision": BinaryPrecision(threshold=threshold),
                "recall": BinaryRecall(threshold=threshold),
                "specificity": BinarySpecificity(threshold=threshold),
                "f1": BinaryF1Score(threshold=threshold),
                "auroc": BinaryAUROC(),
            }
        )
    kwargs = {"num_classes": num_classes, "average": "macro"}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(**kwargs),
            "precision": MulticlassPrecision(**kwargs),
            "recall": MulticlassRecall(**kwargs),
            "specificity": MulticlassSpecificity(**kwargs),
            "f1": MulticlassF1Score(**kwargs),
            "auroc": MulticlassAUROC(**kwargs),
            "class_recall": MulticlassRecall(num_classes=num_classes, average=None),
        }
    )

"""Per-image predictions and a validation-chosen threshold applied to the test split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.records import PATH_ERRORS
from cxrnet.evaluation.predictions import predict_probabilities
from cxrnet.evaluation.thresholds import Criterion, binary_metrics_at, choose_threshold
from cxrnet.models.module import ClassifierModule


def predict_split(
    model: ClassifierModule, datamodule: ChestXRayDataModule, split: str
) -> np.ndarray:
    """Pneumonia probabilities for ``split``, in the order of ``datamodule.split_records``."""
    probabilities, _ = predict_probabilities(model, datamodule.eval_dataloader(split))
    return probabilities.numpy()


def write_predictions(
    path: Path, datamodule: ChestXRayDataModule, split: str, probabilities: np.ndarray
) -> None:
    records = datamodule.split_records[split]
    with path.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "subtype", "patient", "probability"])
        for record, probability in zip(records, probabilities, strict=True):
            writer.writerow(
                [
                    record.path,
                    record.class_name,
                    record.subtype,
                    record.patient,
                    f"{probability:.6f}",
                ]
            )


def operating_point(
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    output_dir: Path,
    criterion: Criterion = "youden",
    min_sensitivity: float = 0.95,
    include_test: bool = True,
) -> dict[str, float]:
    """Choose the threshold on validation, then report both splits at it.

    Keys: ``val/threshold`` and ``<split>/<metric>_at_threshold``. The test split never
    influences the threshold; its predictions are only scored.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, float] = {}
    probabilities: dict[str, np.ndarray] = {}
    for split in ("val", "test") if include_test else ("val",):
        if split in datamodule.datasets:
            probabilities[split] = predict_split(model, datamodule, split)
            bad = int((~np.isfinite(probabilities[split])).sum())
            if bad:
                # A threshold on NaN scores would still give numbers; they would mean nothing.
                raise FloatingPointError(
                    f"{bad} of {len(probabilities[split])} {split} predictions are NaN or "
                    "infinite (the network diverged): no threshold or metric can be reported"
                )
            write_predictions(
                output_dir / f"predictions_{split}.csv", datamodule, split, probabilities[split]
            )
    val_labels = datamodule.datasets["val"].labels.numpy()
    threshold = choose_threshold(probabilities["val"], val_labels, criterion, min_sensitivity)
    values["val/threshold"] = threshold
    for split, split_probabilities in probabilities.items():
        labels = datamodule.datasets[split].labels.numpy()
        for name, value in binary_metrics_at(split_probabilities, labels, threshold).items():
            values[f"{split}/{name}_at_threshold"] = value
        # Sensitivity per pneumonia subtype: a model that misses viral cases should show it.
        subtypes = np.array([record.subtype for record in datamodule.split_records[split]])
        for subtype in ("bacteria", "virus"):
            chosen = subtypes == subtype
            if chosen.any():
                caught = float(np.mean(split_probabilities[chosen] >= threshold))
                values[f"{split}/recall_{subtype}_at_threshold"] = caught
    return values

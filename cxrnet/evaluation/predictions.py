"""Per-image probabilities from a classifier over a whole loader, in the loader's order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cxrnet.data.records import Record
from cxrnet.evaluation.report import SplitPredictions


def predict_probabilities(
    module: L.LightningModule,
    loader: DataLoader,
    forward_context: Callable[[], AbstractContextManager[object]] | None = None,
) -> tuple[Tensor, Tensor]:
    """``module.predict_step`` over every batch: probabilities and labels, on the CPU.

    A plain loop rather than ``trainer.predict``: under DDP that gives each rank a shard, while
    a threshold or a report needs every prediction in one place. Binary modules give (N,) pneumonia
    probabilities, multiclass ones (N, C).
    """
    was_training = module.training
    module.eval()
    probabilities, labels = [], []
    try:
        with torch.inference_mode():
            for batch_idx, (images, targets) in enumerate(loader):
                batch = (images.to(module.device), targets.to(module.device))
                if forward_context is None:
                    probs = module.predict_step(batch, batch_idx)
                else:
                    with forward_context():
                        probs = module.predict_step(batch, batch_idx)
                probabilities.append(probs.float().cpu())
                labels.append(targets.cpu())
    finally:
        module.train(was_training)
    return torch.cat(probabilities), torch.cat(labels).long()


def predict_split(
    module: L.LightningModule, loader: DataLoader, records: Sequence[Record]
) -> SplitPredictions:
    """One split's pneumonia probabilities with each film's file, subtype and patient.

    ``records`` must be in the loader's order (a data module's ``split_records``).
    """
    probabilities, labels = predict_probabilities(module, loader)
    if len(records) != len(labels):
        raise ValueError(f"{len(records)} records for {len(labels)} predictions")
    return SplitPredictions.from_records(probabilities.numpy(), labels.numpy(), records)

"""Per-image probabilities from a classifier over a whole loader, in the loader's order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from cxrnet.data.records import Record
from cxrnet.evaluation.finding_report import FindingScores
from cxrnet.evaluation.report import SplitPredictions


def predict_probabilities(
    module: L.LightningModule,
    loader: DataLoader,
    forward_context: Callable[[], AbstractContextManager[object]] | None = None,
    tta: bool = False,
) -> tuple[Tensor, Tensor]:
    """``module.predict_step`` over every batch: probabilities and labels, on the CPU.

    A plain loop rather than ``trainer.predict``: under DDP that gives each rank a shard, while
    a threshold or a report needs every prediction in one place. Binary modules give (N,) pneumonia
    probabilities, multiclass ones (N, C). ``tta``: light test-time augmentation, each film's
    probabilities averaged with its mirror image's (as ``cxrnet-predict tta=true``).
    """

    def step(batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if forward_context is None:
            return module.predict_step(batch, batch_idx)
        with forward_context():
            return module.predict_step(batch, batch_idx)

    was_training = module.training
    module.eval()
    probabilities, labels = [], []
    try:
        with torch.inference_mode():
            for batch_idx, (images, targets) in enumerate(loader):
                batch = (images.to(module.device), targets.to(module.device))
                probs = step(batch, batch_idx)
                if tta:
                    mirrored = (batch[0].flip(-1), batch[1])
                    probs = (probs + step(mirrored, batch_idx)) / 2
                probabilities.append(probs.float().cpu())
                labels.append(targets.cpu())
    finally:
        module.train(was_training)
    targets = torch.cat(labels)
    # A findings model's targets are float rows (NaN: unlabelled), a class model's indices.
    return torch.cat(probabilities), targets if targets.is_floating_point() else targets.long()


def predict_split(
    module: L.LightningModule, loader: DataLoader, records: Sequence[Record], *, tta: bool = False
) -> SplitPredictions:
    """One split's pneumonia probabilities with each film's file, subtype and patient.

    ``records`` must be in the loader's order (a data module's ``split_records``).
    """
    probabilities, labels = predict_probabilities(module, loader, tta=tta)
    if len(records) != len(labels):
        raise ValueError(f"{len(records)} records for {len(labels)} predictions")
    return SplitPredictions.from_records(probabilities.numpy(), labels.numpy(), records)


def predict_findings(
    module: L.LightningModule,
    loader: DataLoader,
    records: Sequence[Record],
    findings: Sequence[str],
    *,
    tta: bool = False,
) -> FindingScores:
    """One split's probabilities per finding (a findings model) with the loader's target rows.

    ``records`` must be in the loader's order (a data module's ``split_records``).
    """
    probabilities, targets = predict_probabilities(module, loader, tta=tta)
    if len(records) != len(targets):
        raise ValueError(f"{len(records)} records for {len(targets)} predictions")
    return FindingScores(
        tuple(findings),
        probabilities.double().numpy(),
        targets.double().numpy(),
        tuple(records),
    )

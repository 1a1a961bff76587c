"""The masked, weighted BCE of a findings model (``data.task=findings``).

A film's target row holds 1, 0 or NaN per finding, NaN where its source does not label that
finding (or labels it uncertain and ``data.uncertain=ignore``). A masked finding contributes
no loss and no gradient: its term is selected away with ``torch.where`` (multiplying by a zero
mask would not do: the BCE of a NaN target is NaN, and NaN times 0 is NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def finding_loss(
    logits: Tensor, targets: Tensor, weights: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Each film's mean BCE over the findings it labels (0 for a film that labels none).

    ``weights`` (F, 2) weighs each finding's absent and present films (``positive_weights``);
    ``label_smoothing`` moves each labelled target that far towards 0.5, as the binary task does.
    """
    labelled = ~torch.isnan(targets)
    known = torch.where(labelled, targets, torch.zeros_like(targets))
    soft = known * (1 - label_smoothing) + label_smoothing / 2
    bce = F.binary_cross_entropy_with_logits(logits.float(), soft.float(), reduction="none")
    weight = torch.where(known > 0.5, weights[:, 1], weights[:, 0])
    terms = torch.where(labelled, bce * weight, torch.zeros_like(bce))
    return terms.sum(dim=1) / labelled.sum(dim=1).clamp(min=1)

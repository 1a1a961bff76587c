"""Each task's per-film loss and its weights: BCE (binary), cross-entropy (subtype), and the
masked, weighted BCE of a findings model (``data.task=findings``).

Class weights weigh each film's loss by its true class, as Keras' ``class_weight`` does;
``label_smoothing`` moves the targets that far towards the uniform distribution. For findings,
a film's target row holds 1, 0 or NaN per finding, NaN where its source does not label that
finding (or labels it uncertain and ``data.uncertain=ignore``). A masked finding contributes
no loss and no gradient: its term is selected away with ``torch.where`` (multiplying by a zero
mask would not do: the BCE of a NaN target is NaN, and NaN times 0 is NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def class_loss(
    logits: Tensor, targets: Tensor, weights: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """Each film's BCE (one logit) or cross-entropy (more), times its true class's weight."""
    if len(weights) == 2:
        soft = targets.float() * (1 - label_smoothing) + label_smoothing / 2
        per_sample = F.binary_cross_entropy_with_logits(logits.squeeze(-1), soft, reduction="none")
    else:
        per_sample = F.cross_entropy(
            logits, targets, reduction="none", label_smoothing=label_smoothing
        )
    return per_sample * weights[targets]


def batch_loss(per_sample: Tensor, targets: Tensor, findings: bool) -> Tensor:
    """The batch's loss: the mean over films, or (findings) over every labelled finding, so a
    film that labels ten findings weighs ten times one that labels one."""
    if not findings:
        return per_sample.mean()
    labelled = (~torch.isnan(targets)).sum(dim=1)
    return (per_sample * labelled).sum() / labelled.sum().clamp(min=1)


def class_weight_tensor(class_weights: Sequence[float] | None, num_classes: int) -> Tensor:
    """(C,): each class's loss weight (1 without weights)."""
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"class_weights has {len(class_weights)} entries for {num_classes} classes"
        )
    if class_weights is None:
        return torch.ones(num_classes)
    return torch.tensor([float(w) for w in class_weights])


def finding_weight_tensor(weights: Sequence[Sequence[float]] | None, num_findings: int) -> Tensor:
    """(F, 2): each finding's weights of its absent and present films (1 without weights)."""
    if weights is None:
        return torch.ones(num_findings, 2)
    tensor = torch.tensor([[float(w) for w in pair] for pair in weights])
    if tensor.shape != (num_findings, 2):
        raise ValueError(
            f"finding_weights has shape {tuple(tensor.shape)} for {num_findings} findings; "
            "expected one (absent, present) pair per finding"
        )
    return tensor


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

"""Epoch metrics of a findings model (``data.task=findings``): each finding on its labelled films.

A finding's AUROC, AUPRC, sensitivity and specificity come from the films whose source labels it
(target not NaN) and nothing else: a film of a source that never looked for an effusion is no
negative for it. ``FindingPredictions`` keeps the epoch's probabilities and targets as
concatenated states, which torchmetrics gathers from every process when computed, so under DDP
each number covers every process's films. The pooled AUROC and AUPRC are means over the findings
with at least ``min_positives`` positive films and one negative; ``findings_in_mean`` says how
many that was, so a mean over one finding is never read as a mean over ten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cxrnet.evaluation.confusion import confusion_at_threshold
from cxrnet.evaluation.curves import auroc, average_precision
from cxrnet.evaluation.metric_names import FINDING_METRICS

# Fewer positive films than this make a finding's AUROC too noisy to average with the others'.
MIN_POSITIVES = 5


class FindingPredictions(Metric):
    """Every film's finding probabilities and targets (NaN: unlabelled) seen this epoch."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probabilities", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probabilities: Tensor, targets: Tensor) -> None:
        self.probabilities.append(probabilities)
        self.targets.append(targets)

    def compute(self) -> tuple[Tensor, Tensor]:
        return dim_zero_cat(self.probabilities), dim_zero_cat(self.targets)


def one_finding(
    probabilities: np.ndarray, targets: np.ndarray, threshold: float
) -> dict[str, float]:
    """AUROC, AUPRC, sensitivity and specificity of one finding on the films that label it, with
    the numbers of positive and negative films; NaN where the films cannot define a metric."""
    labelled = ~np.isnan(targets)
    p, y = probabilities[labelled].astype(np.float64), targets[labelled].astype(np.int64)
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    counts = confusion_at_threshold(p, y, threshold).metrics()
    return {
        "auroc": auroc(p, y),
        "auprc": average_precision(p, y) if positives else math.nan,
        "recall": float(counts["recall"]) if positives else math.nan,
        "specificity": float(counts["specificity"]) if negatives else math.nan,
        "positives": positives,
        "negatives": negatives,
    }


def finding_values(
    stage: str,
    findings: Sequence[str],
    probabilities: np.ndarray,
    targets: np.ndarray,
    threshold: float = 0.5,
    min_positives: int = MIN_POSITIVES,
) -> dict[str, float]:
    """``<stage>/<metric>/<finding>`` for each finding, and the means over the findings with
    ``min_positives`` positive films and a negative one (``<stage>/auroc``, ``<stage>/auprc``,
    ``<stage>/findings_in_mean``)."""
    values: dict[str, float] = {}
    in_mean: list[dict[str, float]] = []
    for j, name in enumerate(findings):
        one = one_finding(probabilities[:, j], targets[:, j], threshold)
        values |= {f"{stage}/{metric}/{name}": one[metric] for metric in FINDING_METRICS}
        if one["positives"] >= min_positives and one["negatives"] > 0:
            in_mean.append(one)
    for metric in ("auroc", "auprc"):
        values[f"{stage}/{metric}"] = (
            float(np.mean([one[metric] for one in in_mean])) if in_mean else math.nan
        )
    values[f"{stage}/findings_in_mean"] = float(len(in_mean))
    return values

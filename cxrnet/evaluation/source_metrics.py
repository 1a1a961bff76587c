"""Validation metrics per source of the films (``val/auroc/<source>``, ``val/auroc/worst``).

A model trained on a public set and a site's films is judged by how it does at the site, and a
pooled AUROC can hide a poor one. The val loader then yields each film's source index beside
its image and label (``cxrnet.data.dataset.SourcedDataset``); ``SourcePredictions`` keeps the
epoch's probabilities, targets, per-film losses and source indices as concatenated states, which
torchmetrics gathers from every process when computed (under DDP each process has its share of
the films, so every number covers all of them, as the pooled metrics do). Each source's metrics
are then ``classification_metrics`` on that source's films alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from cxrnet.evaluation.metric_names import SOURCE_METRICS, WORST_SOURCE
from cxrnet.evaluation.metrics import classification_metrics


class SourcePredictions(Metric):
    """Every film's prediction, target, loss and source index seen this epoch, all processes'."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("probabilities", "targets", "losses", "sources"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self, probabilities: Tensor, targets: Tensor, losses: Tensor, sources: Tensor
    ) -> None:
        self.probabilities.append(probabilities)
        self.targets.append(targets)
        self.losses.append(losses)
        self.sources.append(sources)

    def compute(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (
            dim_zero_cat(self.probabilities),
            dim_zero_cat(self.targets),
            dim_zero_cat(self.losses),
            dim_zero_cat(self.sources),
        )


def source_values(
    stage: str,
    sources: Sequence[str],
    probabilities: Tensor,
    targets: Tensor,
    losses: Tensor,
    source_index: Tensor,
    num_classes: int,
    threshold: float,
) -> dict[str, float]:
    """``<stage>/<metric>/<source>`` from each source's films alone, and ``<stage>/<metric>/worst``:
    the lowest score (highest loss) over the sources where it is defined.

    A metric a source's films cannot define is NaN, never torchmetrics' 0: AUROC without both
    classes, recall without a positive film, specificity without a negative one.
    """
    values: dict[str, float] = {}
    for index, source in enumerate(sources):
        mask = source_index == index
        targets_here = targets[mask]
        if not bool(mask.any()):
            values |= {f"{stage}/{metric}/{source}": math.nan for metric in SOURCE_METRICS}
            continue
        present = set(targets_here.unique().tolist())
        metrics = classification_metrics(num_classes, threshold, sync_on_compute=False)
        metrics = metrics.to(probabilities.device)
        metrics.update(probabilities[mask], targets_here)
        with warnings.catch_warnings():
            if len(present) < num_classes:
                # torchmetrics warns that it returns 0 for what is undefined here: NaN below.
                warnings.simplefilter("ignore", UserWarning)
            computed = {
                name: float(value) for name, value in metrics.compute().items() if value.ndim == 0
            }
        if len(present) < num_classes:
            computed["auroc"] = math.nan
        if num_classes == 2:
            if 1 not in present:
                computed["recall"] = math.nan
            if 0 not in present:
                computed["specificity"] = math.nan
        computed["loss"] = float(losses[mask].mean())
        values |= {f"{stage}/{metric}/{source}": computed[metric] for metric in SOURCE_METRICS}
    for metric in SOURCE_METRICS:
        defined = [
            values[f"{stage}/{metric}/{source}"]
            for source in sources
            if math.isfinite(values[f"{stage}/{metric}/{source}"])
        ]
        pick = max if metric == "loss" else min
        values[f"{stage}/{metric}/{WORST_SOURCE}"] = pick(defined) if defined else math.nan
    return values

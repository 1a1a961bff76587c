"""The loaders the data module serves: batch sizes per process, the training draw (resumable
on one process, Lightning's distributed sampler under DDP), the class weights of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from cxrnet.data.sampling import EpochSampler, ResumableLoader
from cxrnet.data.source_balance import draw_weights, drawn_class_weights
from cxrnet.user_errors import DataError


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """sklearn's 'balanced' weights, n / (k * n_c): 1.94 / 0.67 on the real training split."""
    counts = np.bincount(labels, minlength=num_classes)
    missing = [i for i, count in enumerate(counts) if count == 0]
    if missing:
        raise DataError(f"training split has no images of class index {missing}; cannot weight")
    return [float(len(labels) / (num_classes * count)) for count in counts]


def per_process_batch_size(global_batch: int, world_size: int, key: str = "data.batch_size") -> int:
    """``data.batch_size`` is the global batch: each of ``world_size`` processes loads its share.

    Changing the number of GPUs then leaves the optimisation (and the learning rate that suits
    it) as it was; a batch that does not divide evenly is an error rather than a silent change.
    """
    if global_batch % world_size:
        raise ValueError(
            f"{key}={global_batch} is the global batch and must divide evenly over "
            f"{world_size} processes (trainer.devices x trainer.num_nodes); use a multiple of "
            f"{world_size}, e.g. {max(1, round(global_batch / world_size)) * world_size}"
        )
    return global_batch // world_size


@dataclass(frozen=True)
class TrainingDraw:
    """A split as the training draw sees it: each film's label and source, and each source's
    share of the draw (``data.source_balance``; None: no source balance)."""

    labels: np.ndarray
    sources: list[str]
    balance: dict[str, float] | None


def loss_class_weights(draw: TrainingDraw, num_classes: int) -> list[float]:
    """The loss's class weights under ``imbalance=class_weight``: 'balanced' over the films,
    or over the classes the source-balanced draw shows the model."""
    if draw.balance is not None:
        return drawn_class_weights(draw.sources, draw.labels, draw.balance, num_classes)
    return balanced_class_weights(draw.labels, num_classes)


def sampling_weights(draw: TrainingDraw, imbalance: str, num_classes: int) -> list[float] | None:
    """Each film's draw weight under ``imbalance=sampler`` (classes drawn equally often) and
    ``source_balance`` (sources drawn in proportion; cxrnet/data/source_balance.py); None for a
    plain permutation."""
    if draw.balance is not None:
        return draw_weights(draw.sources, draw.labels, draw.balance, imbalance == "sampler")
    if imbalance != "sampler":
        return None
    per_class = balanced_class_weights(draw.labels, num_classes)
    return [per_class[label] for label in draw.labels]


@dataclass(frozen=True)
class LoaderOptions:
    """What every loader of a run shares; ``batch_size`` is the global batch of all processes."""

    batch_size: int
    num_workers: int
    pin_memory: bool
    world_size: int

    def per_process(self, key: str) -> dict[str, Any]:
        return {
            "batch_size": per_process_batch_size(self.batch_size, self.world_size, key),
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "drop_last": False,
        }


def evaluation_loader(dataset: Dataset, options: LoaderOptions) -> DataLoader:
    """The films in their stored order, each once."""
    per_process = options.per_process("data.eval_batch_size (or data.batch_size)")
    return DataLoader(dataset, shuffle=False, sampler=None, **per_process)


def resumable_training_loader(
    dataset: Dataset, sampler: EpochSampler, epoch: int, skip: int, options: LoaderOptions
) -> DataLoader:
    """One process: the epoch's draw from (seed, epoch), ``skip`` batches already trained."""
    per_process = options.per_process("data.batch_size")
    sampler.resume(epoch, skip * per_process["batch_size"])
    return ResumableLoader(dataset, sampler=sampler, **per_process)


def distributed_training_loader(
    dataset: Dataset, weights: list[float] | None, options: LoaderOptions
) -> DataLoader:
    """Under DDP Lightning replaces or wraps the sampler so each process draws its share (of
    the weighted sample too; the weights come from the whole training split on every process).
    Such a loader starts an interrupted epoch again (see README, resume)."""
    sampler = None
    if weights is not None:
        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=len(weights),
            replacement=True,
        )
    per_process = options.per_process("data.batch_size")
    return DataLoader(dataset, shuffle=sampler is None, sampler=sampler, **per_process)

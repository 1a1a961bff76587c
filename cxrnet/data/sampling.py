"""The training draw of each epoch as a function of (seed, epoch), resumable mid-epoch.

A shuffled ``DataLoader`` draws its order from the global generator when an epoch's iterator is
created, and albumentations draws each augmentation from a stream that advances sample by
sample; a run resumed in the middle of an epoch can reproduce neither (Lightning restores the
batch counter, but a plain loader starts the epoch again, with other numbers). Here the epoch's
whole draw comes from its own generator seeded by (seed, epoch): the order (a permutation, or a
weighted draw with replacement) and one augmentation seed per drawn sample, which the sampler
hands to the dataset with the index. Skipping the batches already trained (the data module keeps
that position in each checkpoint) then leaves the rest of the epoch exactly as the uninterrupted
run saw it, whichever worker loads which batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

# An index into the dataset and the seed of that draw's augmentation.
SampleKey = tuple[int, int]


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct seed per (seed, epoch) within numpy's 32-bit range."""
    return (seed * 1_000_003 + epoch) % 2**32


class EpochSampler(Sampler[SampleKey]):
    """``num_samples`` draws per epoch: a permutation, or weighted with replacement.

    Lightning calls ``set_epoch`` before each epoch. ``resume(epoch, skip)`` makes the next pass
    over ``epoch`` start after its first ``skip`` draws (a pass over another epoch ignores it).
    """

    def __init__(
        self, num_samples: int, seed: int, weights: Sequence[float] | None = None, epoch: int = 0
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = num_samples
        self.seed = seed
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = epoch
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self.epoch = epoch
        self._resume = (epoch, skip)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[SampleKey]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(
                self.weights, self.num_samples, replacement=True, generator=generator
            )
        seeds = torch.randint(2**31, (self.num_samples,), generator=generator)
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        yield from zip(order[skip:].tolist(), seeds[skip:].tolist(), strict=True)


def training_position(sampler: EpochSampler | None, trainer: Any) -> dict[str, int]:
    """Where training stands (a data module's ``state_dict``, saved in every checkpoint): the
    epoch and how many of its batches are trained, which a resume skips; {} before training."""
    if trainer is None or sampler is None:
        return {}
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if progress.is_last_batch:  # the epoch is over: the next one starts from its beginning
        return {"epoch": sampler.epoch + 1, "batches": 0}
    return {"epoch": sampler.epoch, "batches": progress.current.processed}


class ResumableLoader(DataLoader):
    """A training loader over an ``EpochSampler``, which tells Lightning it resumes mid-epoch.

    Lightning warns that a mid-epoch resume is unreliable unless the training loader has
    ``state_dict`` / ``load_state_dict``. The position itself is saved and restored by the data
    module (``ChestXRayDataModule.state_dict``), which Lightning restores before anything asks
    for a loader: Lightning skips ``load_state_dict`` of a loader that was asked for early (by
    ``trainer.estimated_stepping_batches``, which one-cycle schedules read).
    """

    def __init__(self, dataset: Any, *, sampler: EpochSampler, **kwargs: Any) -> None:
        # The loader's own generator: creating an epoch's iterator draws a worker base seed,
        # which would otherwise move the global generator (and the dropout drawn after it).
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))
        super().__init__(dataset, sampler=sampler, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

"""A Dataset over decoded uint8 images: augmentation per epoch, scaling to [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from cxrnet.data.sampling import SampleKey


def uint8_tensor(image: np.ndarray) -> torch.Tensor:
    """One (S, S) image as a (1, S, S) uint8 tensor of its own.

    A copy: cached images are read-only memory maps, which torch will not wrap.
    """
    return torch.from_numpy(np.array(image, dtype=np.uint8)).unsqueeze(0)


class XRayDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Rows of ``images`` (N, S, S) uint8 selected by ``indices``, with their integer labels.

    The images array is shared between splits (and may be a memory map); only indices differ.
    An item is a position, or a position and the seed of its augmentation (``SampleKey``, from
    ``cxrnet.data.sampling.EpochSampler``): then the augmentation depends on that draw alone.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        indices: Sequence[int] | None = None,
        transform: Callable[..., dict[str, np.ndarray]] | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        self.images = images
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} images")
        # data.task=findings: a float row per film (NaN where unlabelled), served in place of
        # the label; ``labels`` (pneumonia or not) still drives the weighted draw.
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)
        if self.targets is not None and len(self.targets) != len(self.indices):
            raise ValueError(f"{len(self.targets)} target rows for {len(self.indices)} images")
        self.transform = transform
        self._seeded_with: int | None = None

    def target(self, item: int) -> torch.Tensor:
        """What the loader serves as the film's target: its label, or its findings row."""
        return self.labels[item] if self.targets is None else self.targets[item]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        item, seed = key if isinstance(key, tuple) else (key, None)
        image = self.images[self.indices[item]]
        if self.transform is not None:
            if seed is None:
                self._seed_transform()
            else:
                self._seed_sample(seed)
            image = self.transform(image=np.asarray(image))["image"]
        return uint8_tensor(image).float().div_(255.0), self.target(item)

    def _seed_sample(self, seed: int) -> None:
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed)
            self._seeded_with = None  # the stream below, if used again, starts afresh

    def _seed_transform(self) -> None:
        """Tie albumentations' own generator to torch's seed, so seed_everything governs it.

        albumentations >= 2 draws from a generator seeded from OS entropy, which no global seed
        reaches. ``torch.initial_seed()`` is the run's seed in the main process and a distinct,
        seeded value in each DataLoader worker, so workers still augment differently.
        """
        seed = torch.initial_seed()
        if seed != self._seeded_with and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)
            self._seeded_with = seed


class SeededSample(NamedTuple):
    """A training image as decoded, with its label and the seed of its augmentation.

    Collated by the DataLoader into a batch of the same type: images (N, 1, S, S) uint8, labels
    (N,), seeds (N,) int64, which ``cxrnet.data.batch_augment`` augments on the device.
    """

    image: torch.Tensor
    label: torch.Tensor
    seed: int


class SeededXRayDataset(Dataset[SeededSample]):
    """``dataset``'s images un-augmented and as uint8, each with the seed of its augmentation.

    Loader workers then only index the cache, and a quarter of float32's bytes cross to the
    device. The seed is the sampler's (``SampleKey``); for a bare index (under DDP, whose
    sampler yields no seeds) it is drawn from a generator seeded like ``XRayDataset``'s
    albumentations stream: the run's seed, and a distinct one in each loader worker.
    """

    def __init__(self, dataset: XRayDataset) -> None:
        self.images = dataset.images
        self.indices = dataset.indices
        self.labels = dataset.labels
        self.target = dataset.target
        self._generator: torch.Generator | None = None
        self._seeded_with: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | SampleKey) -> SeededSample:
        item, seed = key if isinstance(key, tuple) else (key, None)
        if seed is None:
            seed = self._next_seed()
        image = uint8_tensor(self.images[self.indices[item]])
        return SeededSample(image, self.target(item), int(seed))

    def _next_seed(self) -> int:
        if self._generator is None or self._seeded_with != torch.initial_seed():
            self._seeded_with = torch.initial_seed()
            self._generator = torch.Generator().manual_seed(self._seeded_with)
        return int(torch.randint(2**31, (1,), generator=self._generator))


class SourcedDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """``dataset``'s items with each film's source index (its position in the sources' names)
    after the label: what the val loader yields for per-source metrics
    (``cxrnet.evaluation.source_metrics``)."""

    def __init__(self, dataset: XRayDataset, source_index: Sequence[int]) -> None:
        if len(source_index) != len(dataset):
            raise ValueError(f"{len(source_index)} source indices for {len(dataset)} images")
        self.dataset = dataset
        self.source_index = torch.as_tensor(np.asarray(source_index), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, label = self.dataset[key]
        item = key[0] if isinstance(key, tuple) else key
        return image, label, self.source_index[item]

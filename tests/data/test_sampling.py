"""The resumable training draw: (seed, epoch) orders, mid-epoch state, RNG states, last.ckpt."""

from __future__ import annotations

import io
import random
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from cxrnet.data.dataset import XRayDataset
from cxrnet.data.sampling import EpochSampler, ResumableLoader
from cxrnet.data.transforms import build_train_transform
from cxrnet.training.callbacks import LastCheckpoint
from cxrnet.training.seeding import capture_rng, restore_rng

WEIGHTS = [3.0, 1.0, 1.0, 0.5, 0.5, 2.0, 1.0, 1.0, 0.25, 4.0, 1.0, 1.0]


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["shuffle", "weighted"])
def test_a_resumed_pass_yields_exactly_the_rest_of_that_epoch(weights) -> None:
    full = list(EpochSampler(len(WEIGHTS), seed=7, weights=weights, epoch=2))
    assert len(full) == len(WEIGHTS)
    resumed = EpochSampler(len(WEIGHTS), seed=7, weights=weights)
    resumed.resume(2, 5)
    assert list(resumed) == full[5:]
    assert list(resumed) == full  # the skip is for one pass only
    resumed.set_epoch(3)
    assert list(resumed) != full  # another epoch, another draw
    resumed.resume(2, 5)
    resumed.set_epoch(3)  # Lightning moved on to the next epoch: nothing is skipped
    assert len(list(resumed)) == len(WEIGHTS)


def test_the_weighted_draw_follows_the_weights() -> None:
    weights = [0.0, 1.0, 0.0, 3.0]
    sampler = EpochSampler(400, seed=1, weights=weights * 100)
    drawn = np.bincount([index % 4 for index, _ in sampler], minlength=4)
    assert drawn[0] == drawn[2] == 0
    assert 2.0 < drawn[3] / drawn[1] < 4.5


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_restored_loader_gives_the_remaining_batches_with_their_augmentation(
    num_workers: int,
) -> None:
    images = np.random.default_rng(0).integers(0, 255, (12, 24, 24), dtype=np.uint8)
    transform = build_train_transform(rotate=20, zoom=0.2, shift=0.1, hflip=True)

    def loader(skip_batches: int = 0) -> ResumableLoader:
        dataset = XRayDataset(images, [0, 1] * 6, transform=transform)
        sampler = EpochSampler(len(dataset), seed=3, epoch=1)
        sampler.resume(1, skip_batches * 4)  # as the data module does from a checkpoint
        return ResumableLoader(dataset, sampler=sampler, batch_size=4, num_workers=num_workers)

    full = [batch for batch, _ in loader()]
    assert not torch.equal(full[0][0], full[0][1])
    rest = [batch for batch, _ in loader(skip_batches=1)]
    assert len(rest) == len(full) - 1
    assert all(torch.equal(a, b) for a, b in zip(rest, full[1:], strict=True))


def test_rng_states_survive_a_weights_only_checkpoint() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    buffer = io.BytesIO()
    torch.save({"rng": capture_rng()}, buffer)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    buffer.seek(0)
    restore_rng(torch.load(buffer, weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(again[0], expected[0])
    assert np.array_equal(again[1], expected[1]) and again[2] == expected[2]


class RecordingLastCheckpoint(LastCheckpoint):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saved_at: list[int] = []

    def save(self, trainer: L.Trainer) -> None:
        super().save(trainer)
        self.saved_at.append(trainer.global_step)


def test_last_checkpoint_every_n_steps_skips_each_epochs_last_step(tmp_path: Path) -> None:
    last = RecordingLastCheckpoint(tmp_path, every_n_train_steps=4)
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=8,
        limit_val_batches=0,
        callbacks=[last],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    # Steps 8 and 16 end an epoch: the epoch's own checkpoint (ModelCheckpoint) comes next.
    assert last.saved_at == [4, 12]
    assert (tmp_path / "last.ckpt").is_file()
    assert [p.name for p in tmp_path.glob(".last.ckpt.partial-*")] == []


def test_last_checkpoint_every_n_steps_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every_n_train_steps must be >= 1 or null"):
        LastCheckpoint(tmp_path, every_n_train_steps=0)

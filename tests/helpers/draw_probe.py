"""A callback that records which training images each DDP rank drew (tests/training/
test_distributed.py).

Added to a cxrnet-train run from the command line (the tests folder on ``PYTHONPATH``):

    +callbacks.draws._target_=helpers.draw_probe.RecordDraws +callbacks.draws.out_dir=<folder>

Each rank writes ``<folder>/draws_rank<r>.json``: per epoch the dataset indices its training
loader yielded and, when Lightning wrapped a custom sampler (``DistributedSamplerWrapper``),
the whole draw of that sampler that the ranks' shares were cut from; the loss's class weights;
the training labels; and the sampler type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.callbacks import Callback


class _Recording:
    """A sampler that yields what ``inner`` yields, keeping a copy."""

    def __init__(self, inner: Sized) -> None:
        self.inner = inner
        self.drawn: list[int] = []

    def __iter__(self) -> Iterator[int]:
        for index in self.inner:  # type: ignore[attr-defined]
            self.drawn.append(int(index))
            yield index

    def __len__(self) -> int:
        return len(self.inner)


class RecordDraws(Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.epochs: list[dict[str, Any]] = []

    def _recording(self, trainer: L.Trainer) -> _Recording:
        batches = trainer.train_dataloader.batch_sampler
        if not isinstance(batches.sampler, _Recording):
            batches.sampler = _Recording(batches.sampler)
        return batches.sampler

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._recording(trainer).drawn = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recording = self._recording(trainer)
        sampler = recording.inner
        shared = None
        if isinstance(sampler, DistributedSamplerWrapper):
            # Its dataset is this epoch's draw of the wrapped sampler, read as a Dataset.
            shared = [int(sampler.dataset[i]) for i in range(len(sampler.dataset))]
        self.epochs.append({"drawn": list(recording.drawn), "shared_draw": shared})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sampler = self._recording(trainer).inner
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "sampler": type(sampler).__name__,
            "class_weights": pl_module.class_weights.tolist(),
            "labels": [int(label) for label in trainer.datamodule.datasets["train"].labels],
            "epochs": self.epochs,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"draws_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))

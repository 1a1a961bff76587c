"""A data module with the tests' defaults: small images, no worker processes, no cache."""

from __future__ import annotations

from pathlib import Path

from cxrnet.data.datamodule import ChestXRayDataModule


def make_dm(root: Path | str, **kwargs) -> ChestXRayDataModule:
    defaults = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache_dir": None}
    return ChestXRayDataModule(root=root, **(defaults | kwargs))

"""The global generators' states as checkpoint data.

An exact resume needs every random number of the rest of the run to be the one the uninterrupted
run drew. The training draw (order, weighted sample, augmentation) is a function of (seed, epoch)
(``cxrnet.data.sampling.epoch_seed``); what the network draws (dropout) comes from the global
generators, reseeded at each epoch's start (``cxrnet.training.callbacks.EpochSeed``) and, for a
checkpoint written in the middle of an epoch, saved with it and put back (``capture_rng`` /
``restore_rng``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """The states of torch's, numpy's and Python's global generators (and CUDA's, if used).

    Tensors, tuples and numbers only, so a checkpoint holding them still loads with
    ``weights_only=True`` (numpy's key array is stored as a tensor).
    """
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    """Put back what ``capture_rng`` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    # A checkpoint loaded with weights_only may give lists where getstate gave tuples.
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])

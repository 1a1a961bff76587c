"""What the network's output means: one home for the sigmoid, the default threshold and the
ensemble's combination rule, shared by training, evaluation, prediction and export."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# The decision threshold where none was chosen on validation (e.g. ``last.ckpt``), and the
# second operating point every report shows beside the chosen one.
DEFAULT_THRESHOLD = 0.5


def pneumonia_probability(logits: torch.Tensor) -> torch.Tensor:
    """The binary network's (N, 1) logits as (N,) pneumonia probabilities."""
    return torch.sigmoid(logits.squeeze(-1))


def network_probabilities(logits: torch.Tensor, findings: Sequence[str] = ()) -> torch.Tensor:
    """A network's logits as what it predicts: (N,) pneumonia probabilities for a binary model,
    (N, F) for a findings model (one sigmoid per finding; ``findings`` names them)."""
    return torch.sigmoid(logits) if findings else pneumonia_probability(logits)


def mean_probability(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The combination rule: each film's mean over the members (one home for train and serve)."""
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]), axis=0)

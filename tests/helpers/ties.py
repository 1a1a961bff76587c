"""How far an AUROC read back from 6-decimal predictions files can be from the unrounded one."""

from __future__ import annotations

import numpy as np


def tie_slack(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Half a pair per positive-negative pair tied in the file: rounding can make films the
    model scored apart tie (an untrained model's scores crowd together), and each tie moves the
    AUROC by at most half a pair either way."""
    positives, negatives = probabilities[labels == 1], probabilities[labels == 0]
    tied = int((positives[:, None] == negatives[None, :]).sum())
    return 0.5 * tied / max(1, len(positives) * len(negatives))

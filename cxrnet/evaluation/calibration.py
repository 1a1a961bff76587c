"""Reliability of the pneumonia probability, and temperature scaling fitted on validation only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-7


@dataclass(frozen=True)
class Reliability:
    """Per-bin mean probability, observed pneumonia rate and count; the expected calibration
    error is the count-weighted mean gap between the two."""

    edges: np.ndarray
    confidence: np.ndarray
    observed: np.ndarray
    counts: np.ndarray
    ece: float


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> Reliability:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # p == 1 belongs to the last bin, not one past it.
    which = np.clip(np.searchsorted(edges, probabilities, side="right") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, probabilities, bins) / counts
        observed = np.bincount(which, labels, bins) / counts
    filled = counts > 0
    gaps = np.abs(confidence[filled] - observed[filled]) * counts[filled]
    ece = float(gaps.sum() / counts.sum()) if counts.sum() else float("nan")
    return Reliability(edges, confidence, observed, counts.astype(int), ece)


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits_of(probabilities) / temperature))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + e^z) - y z, written to stay finite for large |z|.
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation log loss of ``sigmoid(logit / T)``.

    A golden-section search over log T in [-4, 4]: the loss is unimodal in T and one scalar does
    not justify an optimiser dependency. T > 1 softens overconfident probabilities.
    """
    logits = logits_of(probabilities)
    labels = np.asarray(labels, dtype=np.float64)
    low, high = -4.0, 4.0
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(logits, labels, np.exp(a)), _nll(logits, labels, np.exp(b))
    for _ in range(80):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(logits, labels, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2.0))

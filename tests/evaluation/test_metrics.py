"""Every whole-epoch metric against values computed by hand and by plain numpy.

The network is replaced by a pass-through, so each test chooses the logits the metrics see.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from cxrnet.models.module import ClassifierModule

SUBTYPES = ("normal", "bacteria", "virus")


def module_seeing_logits(**kwargs) -> ClassifierModule:
    module = ClassifierModule(
        net={"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8},
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        **kwargs,
    )
    module.net = torch.nn.Flatten()  # the "images" fed below are the logits themselves
    return module


def epoch_metrics(
    module: ClassifierModule,
    logits: np.ndarray,
    targets: Sequence[int],
    batch_sizes: Sequence[int],
    stage: str = "val",
) -> dict[str, float]:
    """Feed the samples in batches of unequal size, as an epoch does, then compute."""
    assert sum(batch_sizes) == len(targets)
    x = torch.tensor(logits, dtype=torch.float32).reshape(len(targets), -1)
    y = torch.tensor(targets)
    start = 0
    with torch.no_grad():
        for size in batch_sizes:
            module._step((x[start : start + size], y[start : start + size]), stage)
            start += size
    return module.compute_epoch_metrics(stage)


# ------------------------------------------------------------------------- numpy references


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def binary_reference(
    logits: np.ndarray, targets: np.ndarray, threshold: float, weights: Sequence[float]
) -> dict[str, float]:
    probability = 1 / (1 + np.exp(-logits))
    # torchmetrics counts p > threshold as positive: a score exactly at it is negative.
    predicted = probability > threshold
    truth = targets == 1
    tp, fp = (predicted & truth).sum(), (predicted & ~truth).sum()
    fn, tn = (~predicted & truth).sum(), (~predicted & ~truth).sum()
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    # log(1 + e^-z) for positives, log(1 + e^z) for negatives, weighted by the true class.
    bce = np.where(truth, np.logaddexp(0, -logits), np.logaddexp(0, logits))
    return {
        "accuracy": (tp + tn) / len(targets),
        "precision": precision,
        "recall": recall,
        "specificity": tn / (tn + fp),
        "f1": 2 * precision * recall / (precision + recall),
        "auroc": auroc(probability, truth),
        "loss": float(np.mean(np.asarray(weights)[targets] * bce)),
    }


# -------------------------------------------------------------------------- binary, by hand


def test_binary_metrics_match_a_hand_computed_epoch() -> None:
    probability = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.7, 0.2])
    targets = [1, 1, 1, 0, 0, 0, 0]
    logits = np.log(probability / (1 - probability))
    values = epoch_metrics(module_seeing_logits(), logits, targets, batch_sizes=[3, 4])
    # At 0.5: predicted [1, 1, 0, 0, 1, 1, 0], so TP 2, FN 1, FP 2, TN 2.
    # AUROC: 0.9 and 0.8 beat all 4 negatives, 0.4 beats 0.3 and 0.2: 10 of 12 pairs.
    loss = -(math.log(0.9 * 0.8 * 0.4) + math.log(0.7 * 0.4 * 0.3 * 0.8)) / 7
    expected = {
        "val/accuracy": 4 / 7,
        "val/precision": 2 / 4,
        "val/recall": 2 / 3,
        "val/specificity": 2 / 4,
        "val/f1": 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3),
        "val/auroc": 10 / 12,
        "val/loss": loss,
    }
    assert values == pytest.approx(expected, abs=1e-6)
    # The references below agree with the hand count, so they can be trusted on random data.
    reference = binary_reference(logits, np.array(targets), 0.5, [1.0, 1.0])
    assert {f"val/{k}": v for k, v in reference.items()} == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------- binary, against numpy


@pytest.mark.parametrize("stage", ["train", "val", "test"])
@pytest.mark.parametrize(
    ("threshold", "weights"), [(0.5, [1.0, 1.0]), (0.3, [1.94, 0.67]), (0.7, [0.5, 2.0])]
)
def test_every_binary_metric_over_a_whole_epoch_matches_numpy(
    stage: str, threshold: float, weights: list[float]
) -> None:
    rng = np.random.default_rng(int(threshold * 10))
    targets = rng.integers(0, 2, 97)
    # Informative but imperfect logits, rounded so that some scores tie.
    logits = np.round(rng.normal(1.2 * (2 * targets - 1), 1.5), 1)
    module = module_seeing_logits(threshold=threshold, class_weights=weights)
    values = epoch_metrics(module, logits, targets.tolist(), [32, 32, 17, 16], stage)
    expected = binary_reference(logits, targets, threshold, weights)
    assert values == pytest.approx({f"{stage}/{k}": v for k, v in expected.items()}, abs=1e-5)


def test_metrics_reset_between_epochs() -> None:
    module = module_seeing_logits()
    epoch_metrics(module, np.array([3.0, -3.0, 3.0, -3.0]), [0, 1, 0, 1], [4])  # all wrong
    logits = np.array([2.0, -1.0, 0.5, -0.2, 1.0])
    targets = np.array([1, 0, 1, 0, 0])
    values = epoch_metrics(module, logits, targets.tolist(), [2, 3])
    expected = binary_reference(logits, targets, 0.5, [1.0, 1.0])
    assert values == pytest.approx({f"val/{k}": v for k, v in expected.items()}, abs=1e-6)


# ------------------------------------------------------------------------ subtypes, by hand


SUBTYPE_TARGETS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])


def subtype_logits() -> np.ndarray:
    """Predicted classes [0, 0, 0, 1, 1, 1, 2, 2, 1], with second choices and no tied scores."""
    logits = np.full((9, 3), -1.0)
    logits[np.arange(9), [0, 0, 0, 1, 1, 1, 2, 2, 1]] = 2.0
    logits[2, 1], logits[3, 0], logits[8, 2] = 1.0, 1.5, 0.5
    # Distinct offsets, not constant along a row (softmax ignores those): equal scores would
    # make the AUROC hinge on float32 rounding.
    return logits + 0.01 * (np.arange(27) * 7 % 27).reshape(9, 3)


def subtype_epoch(**kwargs) -> dict[str, float]:
    module = module_seeing_logits(class_names=SUBTYPES, **kwargs)
    return epoch_metrics(
        module, subtype_logits(), SUBTYPE_TARGETS.tolist(), batch_sizes=[4, 5], stage="test"
    )


def test_subtype_macro_metrics_and_per_class_recall_match_a_hand_count() -> None:
    values = subtype_epoch()
    # Confusion (rows true normal/bacteria/virus, columns predicted):
    #   normal   [3, 1, 0]   recall 3/4, precision 3/3, specificity 5/5
    #   bacteria [0, 2, 1]   recall 2/3, precision 2/4, specificity 4/6
    #   virus    [0, 1, 1]   recall 1/2, precision 1/2, specificity 6/7
    recall = [3 / 4, 2 / 3, 1 / 2]
    precision = [1.0, 1 / 2, 1 / 2]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    assert values["test/recall_normal"] == pytest.approx(3 / 4)
    assert values["test/recall_bacteria"] == pytest.approx(2 / 3)
    assert values["test/recall_virus"] == pytest.approx(1 / 2)
    assert values["test/recall"] == pytest.approx(np.mean(recall))
    assert values["test/precision"] == pytest.approx(np.mean(precision))
    assert values["test/specificity"] == pytest.approx(np.mean([1.0, 4 / 6, 6 / 7]))
    assert values["test/f1"] == pytest.approx(np.mean(f1))
    # Macro accuracy is the mean per-class recall (balanced accuracy), not 6 of 9 correct.
    assert values["test/accuracy"] == pytest.approx(np.mean(recall))


def test_subtype_auroc_and_weighted_loss_match_numpy() -> None:
    weights = [1.0, 2.0, 3.0]
    values = subtype_epoch(class_weights=weights)
    targets, logits = SUBTYPE_TARGETS, subtype_logits()
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    probability = np.exp(log_softmax)
    per_class = [auroc(probability[:, c], targets == c) for c in range(3)]
    loss = np.mean(np.asarray(weights)[targets] * -log_softmax[np.arange(9), targets])
    assert values["test/auroc"] == pytest.approx(np.mean(per_class), abs=1e-6)
    assert values["test/loss"] == pytest.approx(loss, abs=1e-6)
    assert set(values) == {
        f"test/{name}"
        for name in (
            "loss",
            "accuracy",
            "precision",
            "recall",
            "specificity",
            "f1",
            "auroc",
            "recall_normal",
            "recall_bacteria",
            "recall_virus",
        )
    }

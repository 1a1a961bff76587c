"""experiments/cv_studies: the runner end to end on the synthetic set, and its analysis by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.experiment_scripts import load_script

from cxrnet.evaluation.report import read_predictions
from cxrnet.evaluation.thresholds import choose_threshold

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "cv_studies"
# Tiny and fast; the synthetic set's own test folder is the held-out set here.
EXTRA = [
    "data.holdout_fraction=0",
    "data.image_size=32",
    "trainer.max_epochs=1",
    "data.decode_workers=0",
]


def _pairwise_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_every_variant_sweeps_the_folds_on_top_of_the_cv_recipe(compose_cfg) -> None:
    studies = load_script("cv_studies", "studies")
    cfg = compose_cfg(overrides=["experiment=studies/cv_study"])
    assert (cfg.data.split, cfg.data.num_folds, cfg.data.image_size) == ("kfold", 5, 64)
    assert (cfg.data.holdout_fraction, cfg.data.holdout_seed) == (0.2, 19)
    assert cfg.trainer.max_epochs == 6 and cfg.data.augment.hflip  # the seed recipe
    for _study, variant in studies.variants_of(list(studies.STUDIES)):
        # Each variant's overrides compose into a valid config (a typo fails here, not mid-study).
        compose_cfg(overrides=["experiment=studies/cv_study", *variant.overrides])
    with pytest.raises(SystemExit, match="unknown study"):
        studies.variants_of(["nonsense"])


@pytest.mark.slow
def test_the_runner_trains_every_fold_and_the_analysis_recomputes_from_the_predictions(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    command = [
        sys.executable, str(STUDY / "run.py"), "--data", str(synthetic_root), "--out", str(out),
        "--study", "imbalance", "--only", "none", "--folds", "2",
        "--cache-dir", str(tmp_path / "cache"), "--", *EXTRA,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    jobs = sorted((out / "runs" / "imbalance" / "none").glob("[0-9]*"))
    assert len(jobs) == 2
    log = json.loads((out / "study.json").read_text())
    assert log["imbalance/none"]["exit_code"] == 0
    assert "data.imbalance=none" in log["imbalance/none"]["command"]
    assert (out / "comparison.md").is_file() and (out / "analysis.md").is_file()

    vals = [read_predictions(job / "predictions_val.csv") for job in jobs]
    tests = [read_predictions(job / "predictions_test.csv") for job in jobs]
    labels = np.concatenate([v.labels for v in vals])
    scores = np.concatenate([v.probabilities for v in vals])
    summary = json.loads((out / "analysis.json").read_text())["imbalance/none"]
    # The folds cover train+val exactly once.
    assert len(set(vals[0].files) & set(vals[1].files)) == 0
    assert summary["cv"]["cv/auroc"]["mean"] == pytest.approx(_pairwise_auroc(labels, scores))
    # Fold 0 is scored at the Youden threshold of fold 1's predictions, and the other way round.
    tp = fp = fn = tn = 0
    for scored, other in ((vals[0], vals[1]), (vals[1], vals[0])):
        threshold = choose_threshold(other.probabilities, other.labels, "youden")
        predicted = scored.probabilities >= threshold
        tp += np.sum(predicted & (scored.labels == 1))
        fp += np.sum(predicted & (scored.labels == 0))
        fn += np.sum(~predicted & (scored.labels == 1))
        tn += np.sum(~predicted & (scored.labels == 0))
    assert summary["cv"]["cv/recall"]["mean"] == pytest.approx(tp / (tp + fn))
    assert summary["cv"]["cv/specificity"]["mean"] == pytest.approx(tn / (tn + fp))
    # The held-out ensemble is the mean of the two fold models on the same films.
    by_file = [dict(zip(t.files, t.probabilities, strict=True)) for t in tests]
    labels_of = dict(zip(tests[0].files, tests[0].labels, strict=True))
    order = sorted(labels_of)
    mean = np.array([np.mean([scores[f] for scores in by_file]) for f in order])
    expected = _pairwise_auroc(np.array([labels_of[f] for f in order]), mean)
    assert summary["held_out"]["held_out/auroc"]["mean"] == pytest.approx(expected)
    assert summary["held_out"]["threshold"]["mean"] == pytest.approx(
        choose_threshold(scores, labels, "youden")
    )
    # Nothing chosen on held-out films: the threshold above came from validation alone.
    assert summary["operating_points"]["youden"]["threshold"]["n"] == 2

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert "imbalance/none: 2 jobs already completed" in again.stdout


def test_best_is_the_recipe_the_study_measured(compose_cfg) -> None:
    """experiment=best must be the variant the studies chose, setting for setting."""
    studies = load_script("cv_studies", "studies")
    (variant,) = [v for v in studies.STUDIES["recipe"].variants if v.name == "aug_half"]
    studied = compose_cfg(overrides=["experiment=studies/cv_study", *variant.overrides])
    best = compose_cfg(overrides=["experiment=best"])
    assert best.model == studied.model
    assert best.trainer.max_epochs == studied.trainer.max_epochs == 6
    # Only where the data splits, the loader workers and the accelerator differ.
    differ = {"split", "num_folds", "fold", "holdout_fraction", "holdout_seed", "num_workers"}
    for key, value in best.data.items():
        if key not in differ:
            assert studied.data[key] == value, f"data.{key}"
    assert best.threshold.criterion == "f1"  # the operating-point study's choice

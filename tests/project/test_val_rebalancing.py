"""experiments/val_rebalancing: the held-out set, the --debug study end to end, the analysis."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from helpers.experiment_scripts import load_script

from cxrnet.data.discovery import discover_folders
from cxrnet.data.duplicates import check_duplicates
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "val_rebalancing"
SWEEP_JOBS = {"official": 2, "stratified": 4, "patient": 2, "kfold": 4}  # 2 seeds, 2 folds


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    return load_script("val_rebalancing", "run")


@pytest.fixture(scope="module")
def analysis() -> ModuleType:
    return load_script("val_rebalancing", "analysis")


def _brute_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _brute_best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = np.sum(predicted & (labels == 1))
        fp = np.sum(predicted & (labels == 0))
        fn = np.sum(~predicted & (labels == 1))
        if tp:
            best = max(best, 2 * tp / (2 * tp + fp + fn))
    return float(best)


def _predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([row["label"] == "PNEUMONIA" for row in rows], dtype=int)
    return [row["file"] for row in rows], labels, np.array([float(r["probability"]) for r in rows])


def test_the_analysis_auroc_matches_pairwise_counting_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    assert auroc(scores, labels) == pytest.approx(_brute_auroc(labels, scores))
    assert math.isnan(auroc(np.arange(5.0), np.ones(5)))


def test_experiment_config_is_the_seed_recipe_at_64_px(compose_cfg) -> None:
    cfg = compose_cfg(overrides=["experiment=studies/val_rebalancing", "seed=7"])
    assert cfg.data.image_size == 64
    assert cfg.data.split_seed == 7  # one knob per repeat
    assert cfg.trainer.max_epochs == 6
    assert cfg.data.augment.hflip is True
    assert cfg.model.optimizer.lr == pytest.approx(1e-3)
    assert cfg.data.holdout_fraction == 0  # the held-out set comes from the manifest


@pytest.mark.real_data
def test_the_real_holdout_keeps_every_official_val_image(
    runner: ModuleType, real_224: Path, tmp_path: Path
) -> None:
    holdout = runner.make_holdout(real_224, tmp_path, 0.2, None)
    assert holdout.info["official_val_kept"] and len(holdout.info["official_val_kept"]) == 16
    assert holdout.info["official_val_held_out"] == []
    # The manifest's test rows are exactly what data.holdout_fraction carves with that seed,
    # whatever the split method.
    found = discover_folders(real_224).records
    duplicates = check_duplicates(found).all_groups
    config = SplitConfig("kfold", fold=3, holdout_fraction=0.2, split_seed=holdout.split_seed)
    carved = make_splits(found, config, duplicates=duplicates)["test"]
    with holdout.manifest.open(newline="") as handle:
        manifest_test = {row["file"] for row in csv.DictReader(handle) if row["split"] == "test"}
    assert manifest_test == {str(record.path.absolute()) for record in carved}


@pytest.mark.slow
def test_debug_study_runs_every_scheme_and_analyses_it(
    synthetic_root: Path, tmp_path: Path, analysis: ModuleType
) -> None:
    study = tmp_path / "study"
    done = subprocess.run(
        [
            sys.executable,
            str(STUDY / "run.py"),
            "--debug",
            "--data",
            str(synthetic_root),
            "--out",
            str(study),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # One sweep folder per split method, one job folder per seed (x fraction / fold).
    for sweep, jobs in SWEEP_JOBS.items():
        folders = sorted(p.name for p in (study / "runs" / sweep).iterdir() if p.is_dir())
        assert folders == [str(i) for i in range(jobs)]
        for job in folders:
            assert (
                json.loads((study / "runs" / sweep / job / "metrics.json").read_text())["status"]
                == "completed"
            )

    # The held-out set: the source's own test folder is ignored, official val is kept whole,
    # and every run scored the same held-out images.
    holdout = json.loads((study / "holdout.json").read_text())
    assert holdout["source_test_images_ignored"] > 0
    assert holdout["official_val_held_out"] == []
    official_val = sorted(p.name for p in (synthetic_root / "val").rglob("*.jpeg"))
    assert holdout["official_val_kept"] == official_val
    job_dirs = sorted((study / "runs").glob("*/[0-9]*"))
    assert len(job_dirs) == sum(SWEEP_JOBS.values())
    held_out = {tuple(sorted(_predictions(d / "predictions_test.csv")[0])) for d in job_dirs}
    assert len(held_out) == 1
    for job in (study / "runs" / "official").glob("[0-9]*"):
        files = _predictions(job / "predictions_val.csv")[0]
        assert sorted(Path(f).name for f in files) == official_val

    # cxrnet-compare: one row per configuration, each over the 2 seeds.
    with (study / "comparison.csv").open(newline="") as handle:
        compared = list(csv.DictReader(handle))
    configurations = sorted(
        (row["data.split"], row["data.val_fraction"], row["data.fold"]) for row in compared
    )
    assert configurations == sorted(
        [
            ("official", "0.2", "0"),  # official reads neither key: the config defaults
            ("stratified", "0.1", "0"),
            ("stratified", "0.2", "0"),
            ("patient", "0.2", "0"),
            ("kfold", "0.2", "0"),
            ("kfold", "0.2", "1"),
        ]
    )
    assert {row["n"] for row in compared} == {"2"}
    assert (study / "comparison.png").stat().st_size > 0

    # The analysis: every per-run value from its own metrics.json and predictions.
    result = json.loads((study / "analysis.json").read_text())
    assert result["held_out_sets_identical"] is True
    assert len(result["runs"]) == len(job_dirs)
    by_scheme: dict[str, list[dict]] = {}
    for run in result["runs"]:
        run_dir = study / run["run_dir"]
        metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
        _, labels, scores = _predictions(run_dir / "predictions_test.csv")
        assert run["val_auroc"] == pytest.approx(metrics["val/auroc"])
        assert run["test_auroc"] == pytest.approx(metrics["test/auroc"])
        assert run["gap"] == pytest.approx(metrics["val/auroc"] - metrics["test/auroc"])
        assert run["threshold"] == pytest.approx(metrics["val/threshold"])
        assert run["test_f1_at_threshold"] == pytest.approx(metrics["test/f1_at_threshold"])
        assert run["test_best_f1"] == pytest.approx(_brute_best_f1(labels, scores))
        assert run["test_best_f1"] >= run["test_f1_at_threshold"] - 1e-9
        assert run["test_auroc_recomputed"] == pytest.approx(_brute_auroc(labels, scores))
        assert run["test_youden_at_threshold"] == pytest.approx(
            metrics["test/recall_at_threshold"] + metrics["test/specificity_at_threshold"] - 1
        )
        assert run["test_best_youden"] >= run["test_youden_at_threshold"] - 1e-9
        # The F1 threshold comes from the validation predictions, never the held-out ones.
        _, val_labels, val_scores = _predictions(run_dir / "predictions_val.csv")
        assert run["threshold_f1"] == choose_threshold(val_scores, val_labels, "f1")
        assert run["test_f1_at_f1_threshold"] == pytest.approx(
            binary_metrics_at(scores, labels, run["threshold_f1"])["f1"]
        )
        by_scheme.setdefault(run["scheme"], []).append(run)
    assert sorted(by_scheme) == sorted(
        ["official", "stratified 10%", "stratified 20%", "patient 20%", "2-fold"]
    )
    for scheme, runs in by_scheme.items():
        label = f"{scheme} (every fold run)" if scheme == "2-fold" else scheme
        summary = result["schemes"][label]
        assert summary["n"] == len(runs) == (4 if scheme == "2-fold" else 2)
        for name in ("val_auroc", "test_auroc", "abs_gap", "test_best_f1"):
            values = [run[name] for run in runs]
            assert summary[name]["mean"] == pytest.approx(statistics.fmean(values))
            assert summary[name]["std"] == pytest.approx(statistics.stdev(values))

    # k-fold pooled: per seed, the out-of-fold validation predictions of both folds together.
    pooled = result["kfold_pooled_per_seed"]
    assert [p["seed"] for p in pooled] == [0, 1]
    for entry in pooled:
        runs = [r for r in by_scheme["2-fold"] if r["seed"] == entry["seed"]]
        parts = [_predictions(study / r["run_dir"] / "predictions_val.csv") for r in runs]
        files = [f for part in parts for f in part[0]]
        assert len(files) == len(set(files)) == entry["n_val"]
        labels = np.concatenate([part[1] for part in parts])
        scores = np.concatenate([part[2] for part in parts])
        assert entry["val_auroc"] == pytest.approx(_brute_auroc(labels, scores))
        assert entry["test_auroc"] == pytest.approx(statistics.fmean(r["test_auroc"] for r in runs))
    assert (study / "analysis.png").stat().st_size > 0
    assert "| official |" in (study / "analysis.md").read_text()

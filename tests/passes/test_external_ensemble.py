"""``cxrnet-eval ckpt_path=<ensemble.json> data.root=<external>`` (issue 18 item 4): a fold
ensemble scored on another site's films, which none of its members saw, as the mean of their
probabilities at the ensemble's operating point, with the site report; the target sensitivity
is the pooled out-of-fold one stored in the manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import run_folder, run_script
from helpers.stamped import stamped_checkpoint

from cxrnet.data.decode import DecodeParams, decode
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.inference.model import load_inference_model
from cxrnet.models.ensemble_manifest import EnsembleManifest, write_manifest

PREPROCESSING = DecodeParams(32, "squash", "none", "area")


def _ensemble(folder: Path) -> Path:
    members = []
    for seed in (0, 1):
        path = folder / f"fold_{seed}.ckpt"
        stamped_checkpoint(path, 0.5, {"sensitivity": 0.5}, seed=seed)
        members.append(path.name)
    manifest = EnsembleManifest(
        members=tuple(members),
        operating_point=OperatingPoint(0.45, "youden", None, "oof"),
        preprocessing=PREPROCESSING,
        folds=(0, 1),
        metrics={"oof/recall_at_threshold": 0.8, "oof/specificity_at_threshold": 0.7},
    )
    return write_manifest(folder / "ensemble.json", manifest)


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_an_ensemble_scores_an_external_site(synthetic_root: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    for cls in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synthetic_root / "test" / cls, site / cls)
    manifest = _ensemble(tmp_path)
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={manifest}", f"data.root={site}", "report.resamples=20"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = run_folder(done.stdout)
    metrics = json.loads((folder / "metrics.json").read_text())["metrics"]
    with (folder / "predictions_test.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # Every film's probability is the mean of the two members' on the same decoded pixels.
    members = [load_inference_model(tmp_path / f"fold_{seed}.ckpt") for seed in (0, 1)]
    images = torch.stack(
        [torch.from_numpy(decode(row["file"], PREPROCESSING)).float().div(255) for row in rows]
    ).unsqueeze(1)
    with torch.inference_mode():
        expected = np.mean([m.probabilities(images).numpy() for m in members], axis=0)
    written = np.array([float(row["probability"]) for row in rows])
    np.testing.assert_allclose(written, expected, atol=2e-6)
    assert metrics["site/threshold_stored"] == 0.45 == metrics["val/threshold"]
    assert metrics["site/target_sensitivity"] == 0.8
    assert "pooled out-of-fold" in (folder / "report.md").read_text()


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_an_ensemble_without_other_data_is_still_refused(tmp_path: Path) -> None:
    done = run_script("cxrnet-eval", [f"ckpt_path={_ensemble(tmp_path)}"], tmp_path)
    assert done.returncode == 2
    assert "is a fold ensemble" in done.stderr and "data.root=" in done.stderr


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_an_ensemble_keeps_its_operating_point(synthetic_root: Path, tmp_path: Path) -> None:
    done = run_script(
        "cxrnet-eval",
        [
            f"ckpt_path={_ensemble(tmp_path)}",
            f"data.root={synthetic_root / 'test'}",
            "threshold.rechoose=true",
        ],
        tmp_path,
    )
    assert done.returncode == 2 and "pooled out-of-fold" in done.stderr

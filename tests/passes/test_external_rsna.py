"""External validation on real films from another hospital (``../shared/data/rsna_adult``, issue
18 items 4 and 5): a sample of its manifest scored by ``cxrnet-eval`` through the console script,
OTHER_ABNORMAL films as their own group, and the pointing game against the readers' opacity
boxes. The checkpoint is a tiny one trained for an epoch on synthetic films (the run's numbers
are checked against the predictions it writes, not against a model's quality). Skips where
../shared/data is absent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.console import QUICK, run_folder, run_script, run_train
from helpers.rsna import rsna_sample

from cxrnet.data.manifest import read_manifest
from cxrnet.models.checkpoint import load_checkpoint, validation_of

# Training a checkpoint, then scoring real 1024 px films, through two console scripts.
pytestmark = pytest.mark.slow

SAMPLE = {"NORMAL": 12, "PNEUMONIA": 12, "OTHER_ABNORMAL": 8}
FAST = [
    *QUICK,
    "model.net.widths=[4,4,8,8]",
    "model.net.hidden=8",
    "trainer.max_epochs=1",
    "seed=1",
]


@pytest.fixture(scope="module")
def rsna_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    where = tmp_path_factory.mktemp("rsna")
    manifest = rsna_sample(where / "labels.csv", SAMPLE)
    trained = run_train(
        [*FAST, f"data.root={synthetic_root}", f"paths.log_dir={where / 'logs'}"], where
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((run_folder(trained.stdout) / "metrics.json").read_text())
    ckpt = record["paths"]["best_checkpoint"]
    done = run_script(
        "cxrnet-eval",
        [
            f"ckpt_path={ckpt}",
            f"data.root={manifest}",
            "report.resamples=50",
            "report.subgroups=[view]",
            f"paths.log_dir={where}",
        ],
        where,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = run_folder(done.stdout)
    return {
        "train": record["metrics"],
        "validation": validation_of(load_checkpoint(ckpt)),
        "manifest": manifest,
        "folder": folder,
        "metrics": json.loads((folder / "metrics.json").read_text())["metrics"],
        "report": (folder / "report.md").read_text(),
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_rsna_adult_is_scored_as_an_external_site(rsna_run: dict) -> None:
    metrics, folder = rsna_run["metrics"], rsna_run["folder"]
    tested = _rows(folder / "predictions_test.csv")
    assert len(tested) == SAMPLE["NORMAL"] + SAMPLE["PNEUMONIA"]
    others = _rows(folder / "predictions_other_classes.csv")
    assert len(others) == SAMPLE["OTHER_ABNORMAL"]
    assert {row["class"] for row in others} == {"OTHER_ABNORMAL"}
    assert {row["view"] for row in others} <= {"AP", "PA"}  # the manifest's columns follow
    assert not {row["file"] for row in tested} & {row["file"] for row in others}
    assert metrics["site/other/OTHER_ABNORMAL/n"] == SAMPLE["OTHER_ABNORMAL"]
    threshold = metrics["site/threshold_stored"]
    flagged = np.mean([float(row["probability"]) >= threshold for row in others])
    assert metrics["site/other/OTHER_ABNORMAL/flagged_stored"] == pytest.approx(flagged)
    assert metrics["site/stored/sensitivity"] == metrics["test/recall_at_threshold"]
    # The target is the validation sensitivity training stamped into the checkpoint.
    assert rsna_run["validation"]["sensitivity"] == rsna_run["train"]["val/recall_at_threshold"]
    assert metrics["site/target_sensitivity"] == rsna_run["validation"]["sensitivity"]
    assert metrics["site/threshold_stored"] == rsna_run["train"]["val/threshold"]
    assert "## This site (external validation)" in rsna_run["report"]
    assert metrics["test/subgroup/view=AP/n"] + metrics["test/subgroup/view=PA/n"] == len(tested)
    other_by_view = [
        metrics.get(f"site/other/OTHER_ABNORMAL/subgroup/view={view}/n", 0.0)
        for view in ("AP", "PA")
    ]
    assert sum(other_by_view) == SAMPLE["OTHER_ABNORMAL"]
    for view in ("AP", "PA"):
        assert f"site/recalibrated/subgroup/view={view}/recall_at_threshold" in metrics


def _chance_by_raster(boxes: str) -> float:
    """The fraction of a 1024 px film inside the union of its boxes, counted pixel by pixel
    (the boxes are whole pixels): independent of the exact union the code computes."""
    mask = np.zeros((1024, 1024), dtype=bool)
    for box in boxes.split(";"):
        x, y, w, h = (int(float(v)) for v in box.split())
        mask[y : y + h, x : x + w] = True
    return float(mask.mean())


def test_the_pointing_game_on_rsna_opacity_boxes(rsna_run: dict) -> None:
    records = read_manifest(rsna_run["manifest"], "test", [])["test"]
    metrics, folder = rsna_run["metrics"], rsna_run["folder"]
    played = _rows(folder / "pointing_game.csv")
    assert metrics["site/pointing/n"] == len(played) == SAMPLE["PNEUMONIA"]
    hits = [int(row["hit"]) for row in played]
    assert metrics["site/pointing/hit_rate"] == pytest.approx(np.mean(hits))
    boxes = {str(r.path): r.metadata["boxes"] for r in records if r.label == 1}
    chance = np.mean([_chance_by_raster(boxes[row["file"]]) for row in played])
    assert metrics["site/pointing/chance_rate"] == pytest.approx(chance, abs=1e-9)
    peaks = [(float(row["peak_x"]), float(row["peak_y"])) for row in played if row["peak_x"]]
    assert peaks, "no film had any Grad-CAM evidence"
    for x, y in peaks:  # on the 1024 px film, where the boxes were drawn
        assert 0 <= x <= 1024 and 0 <= y <= 1024
    assert "### Pointing game" in rsna_run["report"]
    # Per view too (report.subgroups=[view]): the game's films split between AP and PA.
    by_view = {v: metrics.get(f"site/pointing/subgroup/view={v}/n", 0.0) for v in ("AP", "PA")}
    assert sum(by_view.values()) == len(played)
    views = {str(r.path): r.metadata["view"] for r in records}
    for view, n in by_view.items():
        assert n == sum(views[row["file"]] == view for row in played)

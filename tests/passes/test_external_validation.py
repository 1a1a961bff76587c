"""External validation (issue 18 item 4): ``cxrnet-eval`` on another site's test-only folder or
manifest reports the operating point at the stored threshold and at the threshold that reaches
the stored sensitivity there, the calibration there, and films of other classes
(``OTHER_ABNORMAL``) as their own group, never in AUROC or sensitivity."""

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

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.discovery import discover_folders
from cxrnet.data.manifest import read_manifest
from cxrnet.evaluation.external import (
    OtherFilms,
    render_site_section,
    site_report,
    target_sensitivity,
    threshold_for_sensitivity,
)
from cxrnet.evaluation.report import ReportSettings, SplitPredictions
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.models.checkpoint import validation_of
from cxrnet.user_errors import DataError

SETTINGS = ReportSettings(resamples=50)


# The threshold that reaches the stored sensitivity, by hand.


def _constructed() -> SplitPredictions:
    # Pneumonia 0.9, 0.8, 0.6, 0.3; normal 0.7, 0.4, 0.2, 0.1.
    probabilities = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    files = tuple(f"f{i}.png" for i in range(8))
    return SplitPredictions(probabilities, labels, files, ("unknown",) * 4 + ("normal",) * 4, files)


def test_the_threshold_reaching_the_stored_sensitivity_computed_by_hand() -> None:
    preds = _constructed()
    # 0.75 needs 3 of the 4 pneumonia films called: the highest such threshold is the third
    # highest pneumonia probability, 0.6.
    assert threshold_for_sensitivity(preds.probabilities, preds.labels, 0.75) == 0.6
    assert threshold_for_sensitivity(preds.probabilities, preds.labels, 1.0) == 0.3
    assert threshold_for_sensitivity(preds.probabilities, preds.labels, 0.5) == 0.8
    site = site_report(
        preds,
        OperatingPoint(0.85, "youden"),
        {"sensitivity": 0.75},
        SETTINGS,
        ece=0.1,
        others={
            "OTHER_ABNORMAL": OtherFilms(np.array([0.9, 0.65, 0.5, 0.1]), ("a", "b", "c", "d"))
        },
    )
    # At 0.85: 1 of 4 pneumonia films called, no normal one; 1 of 8 flagged.
    assert site.stored.values == {
        "sensitivity": 0.25,
        "specificity": 1.0,
        "ppv": 1.0,
        "flagged": 0.125,
    }
    # At 0.6: pneumonia 0.9, 0.8, 0.6 and normal 0.7 called: 3/4, 3/4, 3/4 and 4 of 8.
    assert site.recalibrated is not None and site.recalibrated.threshold == 0.6
    assert site.recalibrated.values == {
        "sensitivity": 0.75,
        "specificity": 0.75,
        "ppv": 0.75,
        "flagged": 0.5,
    }
    other = site.others[0]
    assert (other.name, other.n) == ("OTHER_ABNORMAL", 4)
    assert other.flagged == {"stored": 0.25, "recalibrated": 0.5}  # >= 0.85: 1; >= 0.6: 2
    low, high = other.intervals["stored"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0
    metrics = site.metrics()
    assert metrics["site/threshold_recalibrated"] == 0.6
    assert metrics["site/recalibrated/specificity"] == 0.75
    assert metrics["site/other/OTHER_ABNORMAL/flagged_stored"] == 0.25
    assert metrics["site/prevalence"] == 0.5


def test_every_site_number_is_given_per_view_too() -> None:
    """With report.subgroups=[view]: the recalibrated operating point and the other class's
    flagged fractions per view, by hand (the stored threshold's are the subgroup tables')."""
    base = _constructed()
    views = ("AP", "AP", "PA", "PA", "AP", "PA", "PA", "PA")
    preds = SplitPredictions(
        base.probabilities, base.labels, base.files, base.subtypes, base.patients, {"view": views}
    )
    others = OtherFilms(np.array([0.9, 0.65, 0.5, 0.1]), ("a", "b", "c", "d"))
    others = OtherFilms(others.probabilities, others.patients, {"view": ("AP", "AP", "PA", "PA")})
    settings = ReportSettings(resamples=50, subgroups=("view",))
    site = site_report(
        preds, OperatingPoint(0.85, "youden"), {"sensitivity": 0.75}, settings, 0.1, {"X": others}
    )
    ap, pa = site.recalibrated_groups["view"]
    # At 0.6, AP: pneumonia 0.9 and 0.8 called, normal 0.7 called; PA: 0.6 of 0.6/0.3 called,
    # none of 0.4/0.2/0.1.
    assert (ap.category, ap.n, ap.sensitivity.value, ap.specificity.value) == ("AP", 3, 1.0, 0.0)
    assert (pa.category, pa.n, pa.sensitivity.value, pa.specificity.value) == ("PA", 5, 0.5, 1.0)
    other_ap, other_pa = site.other_groups["X"]["view"]
    assert other_ap.flagged == {"stored": 0.5, "recalibrated": 1.0}  # 0.9, 0.65
    assert other_pa.flagged == {"stored": 0.0, "recalibrated": 0.0}  # 0.5, 0.1
    metrics = site.metrics()
    assert metrics["site/recalibrated/subgroup/view=PA/recall_at_threshold"] == 0.5
    assert metrics["site/other/X/subgroup/view=AP/flagged_recalibrated"] == 1.0
    assert metrics["site/other/X/subgroup/view=AP/n"] == 2
    assert "| view=PA | 5 | 2 | 0.500" in render_site_section(site, 0.95)


def test_old_checkpoints_fall_back_to_the_floor_or_say_why_there_is_no_target() -> None:
    floor = target_sensitivity({}, OperatingPoint(0.3, "sensitivity", floor=0.9))
    assert floor.value == 0.9 and "floor" in floor.source
    none = target_sensitivity({}, OperatingPoint(0.3, "youden"))
    assert none.value is None and "predates" in none.source
    site = site_report(_constructed(), OperatingPoint(0.85, "youden"), {}, SETTINGS, 0.1)
    assert site.recalibrated is None and "site/threshold_recalibrated" not in site.metrics()


# Other classes in the data.


def _site_folder(synthetic_root: Path, where: Path, n_other: int = 6) -> Path:
    site = where / "site"
    for cls in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(synthetic_root / "test" / cls, site / cls)
    (site / "OTHER_ABNORMAL").mkdir()
    for index, film in enumerate(sorted((synthetic_root / "train" / "NORMAL").iterdir())):
        if index == n_other:
            break
        shutil.copy2(film, site / "OTHER_ABNORMAL" / f"other_{index}{film.suffix}")
    return site


def test_a_test_folder_keeps_other_class_films_apart_and_training_ignores_them(
    synthetic_root: Path, tmp_path: Path
) -> None:
    site = _site_folder(synthetic_root, tmp_path)
    scored = ChestXRayDataModule(site, image_size=32, unsplit="test", num_workers=0)
    scored.setup("test")
    assert [film.class_name for film in scored.others] == ["OTHER_ABNORMAL"] * 6
    assert scored.other_dataset is not None and len(scored.other_dataset) == 6
    tested = {str(record.path) for record in scored.split_records["test"]}
    assert not tested & {str(film.path) for film in scored.others}
    # Training data lists the folder as ignored, with the reason, as before.
    train_root = tmp_path / "train_data"
    shutil.copytree(synthetic_root, train_root)
    shutil.copytree(site / "OTHER_ABNORMAL", train_root / "train" / "OTHER_ABNORMAL")
    training = ChestXRayDataModule(train_root, image_size=32, num_workers=0)
    training.setup("fit")
    assert not training.others
    assert any(path.name == "OTHER_ABNORMAL" for path, _ in training.ignored)


def test_only_the_scored_splits_other_class_films_are_kept(
    synthetic_root: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    film = next((root / "train" / "NORMAL").iterdir())
    for split in ("train", "test"):
        (root / split / "OTHER_ABNORMAL").mkdir()
        shutil.copy2(film, root / split / "OTHER_ABNORMAL" / f"{split}_other{film.suffix}")
    found = discover_folders(root, "test")
    assert [f.path.name for f in found.others] == [f"test_other{film.suffix}"]
    assert root / "train" / "OTHER_ABNORMAL" in [path for path, _ in found.ignored]


def _write_manifest(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "patient_id", "view"])
        writer.writerows(rows)
    return path


def test_a_manifest_with_another_label_is_a_test_set_for_eval_and_an_error_for_training(
    synthetic_root: Path, tmp_path: Path
) -> None:
    normal = sorted((synthetic_root / "test" / "NORMAL").iterdir())[0]
    pneumonia = sorted((synthetic_root / "test" / "PNEUMONIA").iterdir())[0]
    other = sorted((synthetic_root / "train" / "NORMAL").iterdir())[0]
    manifest = _write_manifest(
        tmp_path / "site.csv",
        [
            [str(normal), "NORMAL", "p1", "PA"],
            [str(pneumonia), "PNEUMONIA", "p2", "AP"],
            [str(other), "OTHER_ABNORMAL", "p3", "AP"],
        ],
    )
    others: list = []
    records = read_manifest(manifest, "test", others)
    assert [len(records["test"]), len(others)] == [2, 1]
    assert (others[0].class_name, others[0].patient, others[0].metadata) == (
        "OTHER_ABNORMAL",
        "p3",
        {"view": "AP"},
    )
    with pytest.raises(DataError, match=r"line 4: label 'OTHER_ABNORMAL' .*leave such rows out"):
        read_manifest(manifest, "train")


# Through the console script.


@pytest.fixture(scope="module")
def site_run(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    where = tmp_path_factory.mktemp("external")
    site = _site_folder(synthetic_root, where)
    validation = {"sensitivity": 0.75, "specificity": 0.8, "n_normal": 12.0, "n_pneumonia": 12.0}
    ckpt = stamped_checkpoint(where / "model.ckpt", 0.5, validation)
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={ckpt}", f"data.root={site}", "report.resamples=50", f"paths.log_dir={where}"],
        where,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = run_folder(done.stdout)
    return {
        "folder": folder,
        "stdout": done.stdout,
        "metrics": json.loads((folder / "metrics.json").read_text())["metrics"],
        "report": (folder / "report.md").read_text(),
        "ckpt": ckpt,
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cxrnet_eval_on_a_test_only_folder_reports_the_site(site_run: dict) -> None:
    metrics, report, folder = site_run["metrics"], site_run["report"], site_run["folder"]
    assert validation_of(torch.load(site_run["ckpt"], weights_only=True))["sensitivity"] == 0.75
    tested = _rows(folder / "predictions_test.csv")
    assert {row["label"] for row in tested} == {"NORMAL", "PNEUMONIA"}
    assert not any("other_" in row["file"] for row in tested)  # never in AUROC or sensitivity
    # The stored threshold's numbers are the report's own.
    assert metrics["site/threshold_stored"] == 0.5
    assert metrics["site/stored/sensitivity"] == metrics["test/recall_at_threshold"]
    assert metrics["site/stored/specificity"] == metrics["test/specificity_at_threshold"]
    assert metrics["site/ece"] == metrics["test/ece"]
    # The recalibrated threshold, recomputed from the written predictions.
    probs = np.array([float(row["probability"]) for row in tested])
    positive = np.array([row["label"] == "PNEUMONIA" for row in tested])
    kept = np.sort(probs[positive])[::-1][int(np.ceil(0.75 * positive.sum())) - 1]
    assert metrics["site/target_sensitivity"] == 0.75
    assert metrics["site/threshold_recalibrated"] == pytest.approx(kept, abs=1e-6)
    assert metrics["site/recalibrated/sensitivity"] >= 0.75
    assert metrics["site/recalibrated/flagged"] == pytest.approx(np.mean(probs >= kept), abs=1e-6)
    # Films of other classes: their own group, every film's call written out.
    others = _rows(folder / "predictions_other_classes.csv")
    assert {row["class"] for row in others} == {"OTHER_ABNORMAL"} and len(others) == 6
    flagged = np.mean([float(row["probability"]) >= 0.5 for row in others])
    assert metrics["site/other/OTHER_ABNORMAL/n"] == 6
    assert metrics["site/other/OTHER_ABNORMAL/flagged_stored"] == pytest.approx(flagged)
    for heading in ("## This site (external validation)", "### Calibration on this site"):
        assert heading in report
    assert "| OTHER_ABNORMAL | 6 |" in report
    assert "reaching the stored sensitivity on this site" in report
    assert "site/threshold_recalibrated:" in site_run["stdout"]

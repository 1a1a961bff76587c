"""The fold ensemble of ``experiment=best_cv``: a k-fold sweep through the console script, its
manifest, threshold and report, and the ensemble in cxrnet-predict and cxrnet-export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import QUICK, run_script, run_train

from cxrnet.evaluation.thresholds import ThresholdRule
from cxrnet.inference.ensemble import load_ensemble
from cxrnet.inference.inputs import list_inputs
from cxrnet.inference.predict import iter_predictions
from cxrnet.inference.scorers import FlipAveraged, load_scorer
from cxrnet.models.ensemble_manifest import read_manifest
from cxrnet.passes.fold_ensemble import build_fold_ensemble


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _probabilities(path: Path) -> dict[str, float]:
    return {row["file"]: float(row["probability"]) for row in _rows(path)}


def _labels(path: Path) -> dict[str, int]:
    return {row["file"]: int(row["label"] == "PNEUMONIA") for row in _rows(path)}


def _best_youden(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Youden's J maximised by brute force over every observed score and 0.5, ties to 0.5:
    the criterion written out again here, independently of cxrnet.evaluation.thresholds."""
    best, best_j = 0.5, -np.inf
    for t in sorted({*probabilities.tolist(), 0.5}):
        called = probabilities >= t
        sensitivity = called[labels == 1].mean()
        specificity = (~called[labels == 0]).mean()
        j = sensitivity + specificity - 1
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_j = t, j
    return best


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """``cxrnet-train -m experiment=best_cv`` with 2 folds on train+val only (no test folder,
    like ../shared/data), so the recipe's default patient-grouped holdout is the test set."""
    root = tmp_path_factory.mktemp("best_cv")
    data = root / "data"
    for split in ("train", "val"):
        shutil.copytree(synthetic_root / split, data / split)
    args = ["-m", "experiment=best_cv", *QUICK, f"data.root={data}", "data.num_folds=2"]
    args += ["report.resamples=50", f"paths.log_dir={root / 'logs'}"]
    # The machinery, not best's own criterion: the tests recompute Youden's threshold by hand.
    args += ["threshold.criterion=youden"]
    done = run_train(args, root)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (root / "logs" / "debug" / "multiruns").iterdir()
    return {"root": root, "data": data, "sweep": sweep_dir, "stdout": done.stdout}


@pytest.mark.slow
def test_best_cv_trains_every_fold_and_writes_the_manifest_and_report(sweep) -> None:
    sweep_dir = sweep["sweep"]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != "ensemble")
    assert jobs == ["0", "1"], "data.num_folds=2 sweeps two folds"
    manifest_path = sweep_dir / "ensemble" / "ensemble.json"
    manifest = read_manifest(manifest_path)
    assert manifest.folds == (0, 1)
    assert manifest.combination == "mean_probability"
    assert manifest.operating_point.criterion == "youden"
    assert manifest.operating_point.chosen_on == "pooled out-of-fold validation"
    assert manifest.recipe["experiment"] == "best_cv"
    assert "experiment=best_cv" in manifest.recipe["overrides"]
    for member, fold in zip(manifest.members, (0, 1), strict=True):
        assert not Path(member).is_absolute(), "members are relative to the manifest"
        assert (manifest_path.parent / member).resolve().parent.parent == sweep_dir / str(fold)
    for fold in (0, 1):
        record = json.loads((sweep_dir / str(fold) / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert "data.fold=" + str(fold) in record["overrides"]
    report = (sweep_dir / "ensemble" / "report.md").read_text()
    assert "| metric | oof | test |" in report and "bootstrap interval" in report
    assert "Cross-validated (cross-fitted thresholds" in report
    for split in ("oof", "test"):
        for key in ("auroc", "f1_at_threshold", "recall_at_threshold", "specificity_at_threshold"):
            value = manifest.metrics[f"{split}/{key}"]
            assert manifest.metrics[f"{split}/{key}_ci_low"] <= value
            assert value <= manifest.metrics[f"{split}/{key}_ci_high"]
    assert "fold ensemble of 2 models" in sweep["stdout"]


@pytest.mark.slow
def test_the_threshold_is_the_criterion_on_the_pooled_out_of_fold_predictions(sweep) -> None:
    sweep_dir = sweep["sweep"]
    probabilities, labels = {}, {}
    for fold in (0, 1):
        path = sweep_dir / str(fold) / "predictions_val.csv"
        assert not set(_probabilities(path)) & set(probabilities), "folds never overlap"
        probabilities |= _probabilities(path)
        labels |= _labels(path)
    # Every train+val film that is not held out, scored once.
    held_out = set(_probabilities(sweep_dir / "0" / "predictions_test.csv"))
    films = {str(p) for p in sweep["data"].rglob("*.jpeg")}
    assert set(probabilities) | held_out == films and not set(probabilities) & held_out
    files = sorted(probabilities)
    expected = _best_youden(
        np.array([probabilities[f] for f in files]), np.array([labels[f] for f in files])
    )
    manifest = read_manifest(sweep_dir / "ensemble" / "ensemble.json")
    assert manifest.operating_point.threshold == pytest.approx(expected, abs=1e-9)

    # Cross-validated calls: each fold at the threshold chosen on the other fold.
    counts = np.zeros(4)
    for fold, other in ((0, 1), (1, 0)):
        own = _probabilities(sweep_dir / str(fold) / "predictions_val.csv")
        theirs = _probabilities(sweep_dir / str(other) / "predictions_val.csv")
        t = _best_youden(np.array(list(theirs.values())), np.array([labels[f] for f in theirs]))
        called = np.array([own[f] >= t for f in own])
        positive = np.array([labels[f] == 1 for f in own])
        counts += [
            np.sum(called & positive),
            np.sum(called & ~positive),
            np.sum(~called & positive),
            np.sum(~called & ~positive),
        ]
    tp, fp, fn, tn = counts
    assert manifest.metrics["cv/recall"] == pytest.approx(tp / (tp + fn))
    assert manifest.metrics["cv/specificity"] == pytest.approx(tn / (tn + fp))
    assert manifest.metrics["cv/f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert manifest.metrics["cv/auroc"] == pytest.approx(manifest.metrics["oof/auroc"])
    for key in ("auroc", "f1", "recall", "specificity"):
        low, high = manifest.metrics[f"cv/{key}_ci_low"], manifest.metrics[f"cv/{key}_ci_high"]
        assert low <= manifest.metrics[f"cv/{key}"] <= high

    # Another criterion from the same files, through the library: the floor is honoured.
    ensemble = build_fold_ensemble(sweep_dir, ThresholdRule("sensitivity", min_sensitivity=0.9))
    oof = ensemble.report.splits["oof"].predictions
    t = ensemble.report.operating_point.threshold
    assert np.mean(oof.probabilities[oof.labels == 1] >= t) >= 0.9
    assert t == max(
        p for p in oof.probabilities if np.mean(oof.probabilities[oof.labels == 1] >= p) >= 0.9
    )


@pytest.mark.slow
def test_held_out_predictions_are_the_mean_of_the_members(sweep) -> None:
    sweep_dir = sweep["sweep"]
    members = [_probabilities(sweep_dir / str(fold) / "predictions_test.csv") for fold in (0, 1)]
    ensemble = _probabilities(sweep_dir / "ensemble" / "predictions_test.csv")
    assert set(ensemble) == set(members[0]) == set(members[1])
    for film, probability in ensemble.items():
        assert probability == pytest.approx((members[0][film] + members[1][film]) / 2, abs=2e-6)


@pytest.mark.slow
def test_predict_with_the_manifest_averages_the_members(sweep) -> None:
    manifest_path = sweep["sweep"] / "ensemble" / "ensemble.json"
    films = sweep["data"] / "val"
    output = sweep["root"] / "ensemble_predictions.csv"
    args = [f"ckpt_path={manifest_path}", f"input={films}", f"output={output}", "progress=false"]
    args.append(f"paths.log_dir={sweep['root'] / 'predict'}")
    done = run_script("cxrnet-predict", args, sweep["root"])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(output)
    paths = list_inputs(films)
    assert [row["path"] for row in rows] == [str(p) for p in paths], "one row per image"

    manifest = read_manifest(manifest_path)
    member_scores = []
    for member in manifest.members:
        scorer = load_scorer(manifest_path.parent / member, "cpu")
        member_scores.append(
            [r.probability for batch in iter_predictions(paths, scorer) for r in batch]
        )
    expected = np.mean(np.array(member_scores), axis=0)
    got = np.array([float(row["probability"]) for row in rows])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    threshold = manifest.operating_point.threshold
    for row, p in zip(rows, got, strict=True):
        assert float(row["threshold"]) == pytest.approx(threshold, abs=1e-6)
        assert row["prediction"] == ("PNEUMONIA" if p >= threshold else "NORMAL")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_of_the_manifest_round_trips(sweep, fmt: str) -> None:
    manifest_path = sweep["sweep"] / "ensemble" / "ensemble.json"
    output = sweep["root"] / ("ensemble.onnx" if fmt == "onnx" else "ensemble.pt")
    args = [f"ckpt_path={manifest_path}", f"format={fmt}", f"output={output}"]
    done = run_script(
        "cxrnet-export", [*args, f"paths.log_dir={sweep['root'] / 'export'}"], sweep["root"]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ensemble = load_scorer(manifest_path, "cpu")
    images = np.random.default_rng(0).random((5, 1, 32, 32), dtype=np.float32)
    expected = ensemble(images)
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        exported = load_scorer(output)
        assert exported.operating_point == ensemble.operating_point
        assert exported.preprocessing == ensemble.preprocessing
        got = exported(images)
    else:
        extra = {"cxrnet.json": ""}
        module = torch.jit.load(str(output), _extra_files=extra)
        meta = json.loads(extra["cxrnet.json"])
        assert meta["operating_point"] == ensemble.operating_point.as_dict()
        got = module(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    members = load_ensemble(manifest_path).members
    single = torch.sigmoid(members[0].net(torch.from_numpy(images)).squeeze(-1)).detach().numpy()
    assert not np.allclose(got, single, atol=1e-4), "the export holds every member, not one"


def _copy_sweep(sweep: dict, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(sweep["sweep"], tmp_path / "sweep"))
    shutil.rmtree(copy / "ensemble")
    for record_path in copy.glob("*/metrics.json"):
        # Copies keep working: each job's checkpoint path follows it to the copy.
        record = json.loads(record_path.read_text())
        old = Path(record["paths"]["best_checkpoint"])
        record["paths"]["best_checkpoint"] = str(
            record_path.parent / old.relative_to(old.parents[1])
        )
        record_path.write_text(json.dumps(record))
    return copy


@pytest.mark.slow
def test_cxrnet_ensemble_rebuilds_a_copied_sweep(sweep, tmp_path: Path) -> None:
    copy = _copy_sweep(sweep, tmp_path)
    done = run_script("cxrnet-ensemble", [str(copy)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = read_manifest(copy / "ensemble" / "ensemble.json")
    original = read_manifest(sweep["sweep"] / "ensemble" / "ensemble.json")
    assert rebuilt.operating_point == original.operating_point
    assert rebuilt.metrics == original.metrics


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["failed", "missing", "no_checkpoint"])
def test_a_failed_or_missing_fold_is_a_clear_error(sweep, tmp_path: Path, damage: str) -> None:
    copy = _copy_sweep(sweep, tmp_path)
    if damage == "failed":
        record = json.loads((copy / "1" / "metrics.json").read_text())
        record |= {"status": "failed", "error": "CUDA out of memory"}
        (copy / "1" / "metrics.json").write_text(json.dumps(record))
        expected = "fold 1 failed (CUDA out of memory)"
    elif damage == "missing":
        shutil.rmtree(copy / "1")
        expected = "fold 1 of 2 missing"
    else:
        for ckpt in (copy / "1" / "checkpoints").glob("*.ckpt"):
            ckpt.unlink()
        expected = "fold 1: its best checkpoint"
    done = run_script("cxrnet-ensemble", [str(copy)], tmp_path)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "rerun" in done.stderr or "missing" in done.stderr
    assert not (copy / "ensemble" / "ensemble.json").exists(), "never a smaller ensemble"


@pytest.mark.slow
def test_a_sweep_whose_folds_fail_writes_no_ensemble_and_exits_non_zero(
    synthetic_root: Path, tmp_path: Path
) -> None:
    args = ["-m", "experiment=best_cv", *QUICK, f"data.root={synthetic_root}"]
    args += ["data.holdout_fraction=0", "data.num_folds=2", "model.optimizer.lr=-1"]
    done = run_train([*args, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert done.returncode != 0
    # Every fold is refused before training (a failed record each), naming the setting.
    refused = "model.optimizer.lr=-1 is not a valid value"
    assert refused in done.stderr and "'data.fold=0'" in done.stderr
    (sweep_dir,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    assert not (sweep_dir / "ensemble").exists()
    done = run_script("cxrnet-ensemble", [str(sweep_dir)], tmp_path)
    assert (
        done.returncode == 2 and "fold 0 failed" in done.stderr and "fold 1 failed" in done.stderr
    )


@pytest.mark.slow
def test_eval_and_predict_flip_averaging_agree(sweep, tmp_path: Path) -> None:
    """cxrnet-eval tta=true scores the held-out films as cxrnet-predict tta=true does."""
    job = sweep["sweep"] / "0"
    ckpt = Path(json.loads((job / "metrics.json").read_text())["paths"]["best_checkpoint"])
    args = [f"ckpt_path={ckpt}", "tta=true", "stages=[test]", "report.resamples=20"]
    done = run_script("cxrnet-eval", [*args, f"paths.log_dir={tmp_path}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "eval" / "runs").iterdir()
    flipped = _probabilities(run_dir / "predictions_test.csv")
    assert "mirror image" in (run_dir / "report.md").read_text()
    files = sorted(flipped)
    scorer = load_scorer(ckpt, "cpu", tta=True)
    rows = [r for batch in iter_predictions([Path(f) for f in files], scorer) for r in batch]
    expected = np.array([row.probability for row in rows])
    np.testing.assert_allclose([flipped[f] for f in files], expected, atol=2e-6)
    plain = _probabilities(job / "predictions_test.csv")
    assert not np.allclose([plain[f] for f in files], expected, atol=1e-4), "flips change scores"


def test_flip_averaging_is_the_mean_of_the_film_and_its_mirror() -> None:
    class LeftHeavy:
        """A scorer that looks only at the left half of the film."""

        preprocessing = None
        operating_point = None
        backend = "test"

        def __call__(self, images: np.ndarray) -> np.ndarray:
            return images[..., : images.shape[-1] // 2].mean(axis=(1, 2, 3)).astype(np.float32)

    images = np.zeros((2, 1, 4, 4), dtype=np.float32)
    images[0, ..., :2] = 1.0  # bright left half
    images[1, ..., 2:] = 1.0  # bright right half
    assert LeftHeavy()(images).tolist() == [1.0, 0.0]
    assert FlipAveraged(LeftHeavy())(images).tolist() == [0.5, 0.5]


def test_a_path_that_is_not_a_manifest_is_refused_by_name(tmp_path: Path) -> None:
    bogus = tmp_path / "ensemble.json"
    bogus.write_text(json.dumps({"members": []}))
    with pytest.raises(ValueError, match=f"ensemble manifest {bogus} is unreadable"):
        read_manifest(bogus)
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "absent.json")


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_cxrnet_eval_points_an_ensemble_to_its_report(tmp_path: Path) -> None:
    manifest = tmp_path / "ensemble.json"
    manifest.write_text("{}")
    done = run_script(
        "cxrnet-eval", [f"ckpt_path={manifest}", f"paths.log_dir={tmp_path}"], tmp_path
    )
    assert done.returncode == 2
    assert f"{manifest} is a fold ensemble" in done.stderr and "cxrnet-predict" in done.stderr

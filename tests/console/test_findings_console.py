"""data.task=findings through the console scripts (issue 28): train, predict, export, eval on a
test-only site, and compare, on a synthetic multi-label set whose labels the test wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import QUICK, run_folder, run_script, run_train
from helpers.findings_data import FINDINGS, findings_manifest
from helpers.ties import tie_slack

from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.thresholds import ThresholdRule, choose_operating_point
from cxrnet.inference.scorers import findings_of, load_scorer
from cxrnet.models.checkpoint import finding_points_of, load_checkpoint

LEARNT = (*FINDINGS, "other_finding")  # OTHER_ABNORMAL films add "some other finding"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _labelled(rows: list[dict[str, str]], name: str) -> tuple[np.ndarray, np.ndarray]:
    kept = [row for row in rows if row[f"label_{name}"] != ""]
    p = np.array([float(row[f"p_{name}"]) for row in kept])
    return p, np.array([int(row[f"label_{name}"]) for row in kept])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("findings")
    manifest = findings_manifest(folder)
    done = run_train(
        [
            "debug=fast",
            f"data.root={manifest}",
            "data.task=findings",
            "trainer.max_epochs=3",
            "logger=csv",
            "report.resamples=200",
            f"paths.log_dir={folder / 'logs'}",
        ],
        folder,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = run_folder(done.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "folder": folder,
        "manifest": manifest,
        "run": run,
        "metrics": metrics["metrics"],
        "ckpt": Path(metrics["paths"]["best_checkpoint"]),
    }


@pytest.mark.slow  # a training run (about 20 s on 2 busy cores)
def test_train_reports_each_finding_on_its_labelled_films_with_val_chosen_thresholds(
    trained: dict,
) -> None:
    run, metrics = trained["run"], trained["metrics"]
    assert "## Findings" in (run / "report.md").read_text()
    stored = finding_points_of(load_checkpoint(trained["ckpt"]))
    assert stored is not None and set(stored) == set(LEARNT)
    val, test = _rows(run / "findings_val.csv"), _rows(run / "findings_test.csv")
    for name in LEARNT:
        # The threshold: chosen on the val films that label the finding, by the run's rule.
        p, y = _labelled(val, name)
        if name != "pneumonia":  # pneumonia's is the run's operating point (same films here)
            chosen = choose_operating_point(p, y, ThresholdRule("youden"))
            assert stored[name].threshold == pytest.approx(chosen.threshold, abs=1e-6)
        # The test AUROC: the films that label it alone (the CSV rounds to 6 decimals).
        p, y = _labelled(test, name)
        expected = auroc(p, y)
        assert metrics[f"test/finding/{name}/auroc"] == pytest.approx(
            expected, abs=(tie_slack(p, y) + 1e-6)
        )
    # Unlabelled effusion (blank findings on every fifth pneumonia film) is no negative.
    manifest = {row["path"]: row for row in _rows(trained["manifest"])}
    for row in test:
        blank = manifest[row["file"]]["findings"] == ""
        assert (row["label_effusion"] == "") == blank
    assert metrics["test/finding_mean/findings"] == 3


@pytest.mark.slow  # the training fixture, then three console runs
def test_predict_and_export_give_every_findings_probability_and_call(
    trained: dict, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    films = [row["file"] for row in _rows(trained["run"] / "findings_test.csv")]
    listing = tmp_path / "films.csv"
    listing.write_text("path\n" + "\n".join(films) + "\n")
    onnx_file = tmp_path / "model.onnx"
    done = run_script(
        "cxrnet-export", [f"ckpt_path={trained['ckpt']}", f"output={onnx_file}"], tmp_path
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    outputs = {}
    for name, model in (("ckpt", trained["ckpt"]), ("onnx", onnx_file)):
        out = tmp_path / f"{name}.csv"
        done = run_script(
            "cxrnet-predict",
            [f"ckpt_path={model}", f"input={listing}", f"output={out}", "progress=false"],
            tmp_path,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        outputs[name] = _rows(out)
    stored = finding_points_of(load_checkpoint(trained["ckpt"]))
    assert stored is not None
    for row in outputs["ckpt"]:
        calls = []
        for finding in LEARNT:
            p = float(row[f"p_{finding}"])
            calls.append(p >= stored[finding].threshold)
            assert row[f"call_{finding}"] == str(int(calls[-1]))
        assert row["any_finding"] == str(int(any(calls)))
        assert row["probability"] == row["p_pneumonia"]  # the triage column
    for finding in LEARNT:
        a = np.array([float(row[f"p_{finding}"]) for row in outputs["ckpt"]])
        b = np.array([float(row[f"p_{finding}"]) for row in outputs["onnx"]])
        assert np.max(np.abs(a - b)) <= 1e-5, finding
    # The exported file names its findings and their thresholds.
    onnx = findings_of(load_scorer(onnx_file))
    assert onnx.names == findings_of(load_scorer(trained["ckpt"], "cpu")).names
    assert {name: point.threshold for name, point in onnx.points.items()} == pytest.approx(
        {name: point.threshold for name, point in stored.items()}
    )
    # Unrounded: the ONNX graph and the TorchScript file equal the checkpoint's network per
    # finding to 1e-5.
    images = np.random.default_rng(0).random((6, 1, 32, 32), dtype=np.float32)
    from_onnx = load_scorer(onnx_file)(images)
    from_ckpt = load_scorer(trained["ckpt"], "cpu")(images)
    assert from_onnx.shape == (6, len(LEARNT))
    np.testing.assert_allclose(from_onnx, from_ckpt, atol=1e-5)
    scripted_file = tmp_path / "model.pt"
    done = run_script(
        "cxrnet-export",
        [f"ckpt_path={trained['ckpt']}", f"output={scripted_file}", "format=torchscript"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    extra = {"cxrnet.json": ""}
    scripted = torch.jit.load(str(scripted_file), _extra_files=extra)
    assert json.loads(extra["cxrnet.json"])["findings"] == list(LEARNT)
    with torch.no_grad():
        from_script = scripted(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(from_script, from_ckpt, atol=1e-5)


@pytest.mark.slow  # the training fixture, then cxrnet-eval and cxrnet-compare
def test_eval_on_a_test_only_site_and_compare_read_the_findings(
    trained: dict, tmp_path: Path
) -> None:
    rows = [row for row in _rows(trained["manifest"]) if row["split"] == "test"]
    site = tmp_path / "site.csv"
    with site.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "findings"])  # no split: a test-only site
        writer.writerows([row["path"], row["label"], row["findings"]] for row in rows)
    folder = tmp_path / "eval"
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={trained['ckpt']}", f"data.root={site}", f"hydra.run.dir={folder}"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    scored = json.loads((folder / "metrics.json").read_text())["metrics"]
    for name in LEARNT:  # the same films as training's test split, at the stored thresholds
        key = f"test/finding/{name}/auroc"
        assert scored[key] == pytest.approx(trained["metrics"][key], abs=1e-9)
        key = f"test/finding/{name}/threshold"
        assert scored[key] == pytest.approx(trained["metrics"][key], abs=1e-12)
    assert "## Findings" in (folder / "report.md").read_text()

    done = run_script(
        "cxrnet-compare",
        [str(trained["run"]), "--show", "test/finding_mean/auroc", "test/finding/effusion/auroc"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"{trained['metrics']['test/finding/effusion/auroc']:.3f}" in done.stdout


@pytest.mark.slow  # two DDP processes on the CPU (about 40 s on 2 busy cores)
def test_per_finding_metrics_under_ddp_cover_every_processs_films(tmp_path: Path) -> None:
    # 32 val films over 2 processes: each scores 16, none padded with repeats, so the gathered
    # per-finding numbers must equal those of every val film's prediction, on the films that
    # label each finding.
    manifest = findings_manifest(tmp_path / "data")
    done = run_train(
        [
            *QUICK,
            f"data.root={manifest}",
            "data.task=findings",
            "trainer=ddp_cpu",
            "trainer.devices=2",
            "trainer.max_epochs=1",
            "data.batch_size=8",
            "monitor=val/auroc/pneumonia",  # one finding's AUROC chooses the checkpoint
            "logger=csv",
            "report.resamples=50",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    run = run_folder(done.stdout)
    record = json.loads((run / "metrics.json").read_text())
    assert record["extra"]["world_size"] == 2
    assert "val/auroc/pneumonia_best" in record["metrics"]
    (metrics_csv,) = run.glob("csv/**/metrics.csv")
    logged: dict[str, float] = {}
    for row in _rows(metrics_csv):
        logged |= {key: float(value) for key, value in row.items() if value not in ("", None)}
    val = _rows(run / "findings_val.csv")
    assert len(val) == 32
    for name in LEARNT:
        p, y = _labelled(val, name)
        # The CSV rounds to 6 decimals (ties), the logged value to float32.
        slack = tie_slack(p, y) + 1e-6 + 1e-4
        assert logged[f"val/auroc/{name}"] == pytest.approx(auroc(p, y), abs=slack), name


@pytest.mark.slow  # a 2-fold sweep, then cxrnet-predict, cxrnet-export and cxrnet-eval on it
def test_a_fold_ensemble_of_findings_models_thresholds_predicts_exports_and_scores_a_site(
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    manifest = findings_manifest(tmp_path / "data")
    rows = _rows(manifest)
    development = tmp_path / "development.csv"  # train+val only: best_cv carves its holdout
    with development.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "findings"])
        writer.writeheader()
        writer.writerows(
            {key: row[key] for key in ("path", "label", "findings")}
            for row in rows
            if row["split"] != "test"
        )
    args = ["-m", "experiment=best_cv", *QUICK, f"data.root={development}", "data.num_folds=2"]
    args += ["data.task=findings", "report.resamples=50", "threshold.criterion=youden"]
    done = run_train([*args, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    (sweep,) = (tmp_path / "logs" / "debug" / "multiruns").iterdir()
    ensemble = sweep / "ensemble" / "ensemble.json"
    written = json.loads(ensemble.read_text())
    assert written["findings"] == list(LEARNT)  # in output order
    stored = written["finding_operating_points"]
    # Each finding's threshold: chosen on the folds' pooled out-of-fold predictions.
    pooled = [row for fold in ("0", "1") for row in _rows(sweep / fold / "findings_val.csv")]
    for name in ("effusion", "other_finding"):
        p, y = _labelled(pooled, name)
        chosen = choose_operating_point(p, y, ThresholdRule("youden"))
        assert stored[name]["threshold"] == pytest.approx(chosen.threshold, abs=1e-6)

    films = [row["path"] for row in rows if row["split"] == "test"]
    listing = tmp_path / "films.csv"
    listing.write_text("path\n" + "\n".join(films) + "\n")
    out = tmp_path / "ensemble.csv"
    done = run_script(
        "cxrnet-predict",
        [f"ckpt_path={ensemble}", f"input={listing}", f"output={out}", "progress=false"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    predicted = _rows(out)
    paths = json.loads(ensemble.read_text())["members"]
    members = [load_scorer(ensemble.parent / path, "cpu") for path in paths]
    assert len(members) == 2
    ensemble_scorer = load_scorer(ensemble, "cpu")
    images = np.random.default_rng(1).random((5, 1, 32, 32), dtype=np.float32)
    mean = np.mean([member(images) for member in members], axis=0)
    np.testing.assert_allclose(ensemble_scorer(images), mean, atol=1e-6)
    for row in predicted:
        for name in LEARNT:
            call = float(row[f"p_{name}"]) >= stored[name]["threshold"]
            assert row[f"call_{name}"] == str(int(call))

    onnx_file = tmp_path / "ensemble.onnx"
    done = run_script("cxrnet-export", [f"ckpt_path={ensemble}", f"output={onnx_file}"], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    np.testing.assert_allclose(load_scorer(onnx_file)(images), mean, atol=1e-5)

    site = tmp_path / "site.csv"
    with site.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "findings"])
        writer.writerows(
            [r["path"], r["label"], r["findings"]] for r in rows if r["split"] == "test"
        )
    folder = tmp_path / "eval"
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={ensemble}", f"data.root={site}", f"hydra.run.dir={folder}"],
        tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    scored = json.loads((folder / "metrics.json").read_text())["metrics"]
    test = _rows(folder / "findings_test.csv")
    for name in LEARNT:
        assert scored[f"test/finding/{name}/threshold"] == pytest.approx(
            stored[name]["threshold"], abs=1e-12
        )
        p, y = _labelled(test, name)
        slack = tie_slack(p, y) + 1e-6
        assert scored[f"test/finding/{name}/auroc"] == pytest.approx(auroc(p, y), abs=slack)

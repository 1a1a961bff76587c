"""From checkpoint to decision, as a user runs it: cxrnet-train, then cxrnet-eval, cxrnet-predict
and cxrnet-export as console scripts on the stored operating point and preprocessing."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.console import run_script
from helpers.real_films import REAL_224

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.evaluation.thresholds import choose_threshold
from cxrnet.inference.inputs import list_inputs
from cxrnet.inference.predict import predict_files
from cxrnet.inference.scorers import load_scorer
from cxrnet.models.checkpoint import INFERENCE_KEY, load_checkpoint
from cxrnet.plain_data import plain_data


def _run(name: str, args: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    return run_script(name, args, cwd, env={"CXRNET_CACHE_DIR": str(cache)})


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """One cxrnet-train run on the tiny synthetic set: its run folder and best checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    done = _run(
        "cxrnet-train",
        [
            "debug=fast",
            f"data.root={synthetic_root}",
            "trainer.max_epochs=4",
            "trainer.limit_train_batches=null",
            "trainer.limit_val_batches=null",
            "data.batch_size=8",
            "model.optimizer.lr=3e-3",
            "report.resamples=200",
            f"paths.log_dir={root / 'logs'}",
        ],
        root,
        root / "cache",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = (root / "logs").glob("*/runs/*/metrics.json")
    record = json.loads(metrics_file.read_text())
    return {
        "root": root,
        "run_dir": metrics_file.parent,
        "metrics": record["metrics"],
        "ckpt": Path(record["paths"]["best_checkpoint"]),
    }


def test_training_stores_the_operating_point_and_preprocessing_as_plain_data(trained) -> None:
    checkpoint = load_checkpoint(trained["ckpt"])  # weights_only=True
    stored = checkpoint[INFERENCE_KEY]
    assert plain_data(stored) == stored
    assert stored["operating_point"]["threshold"] == trained["metrics"]["val/threshold"]
    assert stored["operating_point"]["criterion"] == "youden"
    assert stored["preprocessing"] == {
        "image_size": 32,
        "resize": "squash",
        "equalize": "none",
        "interpolation": "area",
    }
    run_dir = trained["run_dir"]
    card = (run_dir / "report.md").read_text()
    assert "## Decision threshold" in card and "patient-bootstrap percentile interval" in card
    for link in card.split("[heatmap](")[1:]:
        assert (run_dir / link.split(")")[0]).is_file()
    for split in ("val", "test"):
        assert (run_dir / "figures" / f"{split}.png").stat().st_size > 10_000
        low = trained["metrics"][f"{split}/auroc_ci_low"]
        high = trained["metrics"][f"{split}/auroc_ci_high"]
        assert low <= trained["metrics"][f"{split}/auroc"] <= high


@pytest.mark.slow
def test_cxrnet_eval_uses_the_stored_threshold_or_rechooses_it(trained) -> None:
    root = trained["root"]
    args = [f"ckpt_path={trained['ckpt']}", "stages=[val,test]", "report.resamples=100"]
    done = _run("cxrnet-eval", [*args, f"paths.log_dir={root / 'eval'}"], root, root / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (root / "eval").glob("eval/runs/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    for key in ("val/threshold", "test/f1_at_threshold", "test/auroc", "val/auroc"):
        assert metrics[key] == pytest.approx(trained["metrics"][key], abs=1e-6), key
    assert (run_dir / "report.md").is_file() and (run_dir / "figures" / "test.png").is_file()
    assert "report: " in done.stdout

    rechoose = [*args, "threshold.rechoose=true", "threshold.criterion=sensitivity"]
    rechoose += ["threshold.min_sensitivity=1.0", f"paths.log_dir={root / 'eval2'}"]
    done = _run("cxrnet-eval", rechoose, root, root / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (root / "eval2").glob("eval/runs/*")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    rows = _read_csv(run_dir / "predictions_val.csv")
    probs = np.array([float(r["probability"]) for r in rows])
    labels = np.array([r["label"] == "PNEUMONIA" for r in rows], dtype=int)
    expected = choose_threshold(probs, labels, "sensitivity", min_sensitivity=1.0)
    assert metrics["val/threshold"] == pytest.approx(expected, abs=1e-6)
    assert metrics["val/recall_at_threshold"] == 1.0


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_cxrnet_eval_with_a_data_config_and_no_root_uses_synthetic_data(trained) -> None:
    """Issue 10 item 8: no TypeError; other data is decoded at the checkpoint's 32 px."""
    root = trained["root"]
    args = [
        f"ckpt_path={trained['ckpt']}",
        "data=chest_xray",
        "synthetic.n_train=24",
        "synthetic.n_val=12",
        "synthetic.n_test=12",
        "synthetic.min_size=48",
        "synthetic.max_size=64",
        "report.resamples=50",
        f"paths.log_dir={root / 'eval3'}",
    ]
    done = _run("cxrnet-eval", args, root, root / "cache3")
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((root / "cache3" / "synthetic").glob("synthetic-*"))
    assert "test/auroc: " in done.stdout


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_cxrnet_eval_refuses_an_image_size_the_network_cannot_take(trained, synthetic_root):
    root = trained["root"]
    args = [
        f"ckpt_path={trained['ckpt']}",
        "data=chest_xray",
        f"data.root={synthetic_root}",
        "data.image_size=64",
        f"paths.log_dir={root / 'eval4'}",
    ]
    done = _run("cxrnet-eval", args, root, root / "cache4")
    assert done.returncode == 2, "a usage error"
    assert "was built for image_size 32, so data.image_size=64 cannot work" in done.stderr
    assert not (root / "cache4" / "images").exists(), "refused before decoding anything"


def _folder_with_a_corrupt_film(synthetic_root: Path, folder: Path) -> list[Path]:
    films = sorted((synthetic_root / "test").rglob("*.jpeg"))[:5]
    folder.mkdir()
    for film in films:
        shutil.copy(film, folder / film.name)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return sorted(folder.glob("*.jpeg"))


def test_cxrnet_predict_on_a_folder_with_a_corrupt_file(trained, synthetic_root) -> None:
    root = trained["root"]
    files = _folder_with_a_corrupt_film(synthetic_root, root / "films")
    output = root / "predictions.csv"
    args = [f"ckpt_path={trained['ckpt']}", "input=films", "output=predictions.csv"]
    args += ["explain=true", f"paths.log_dir={root / 'pred'}"]
    done = _run("cxrnet-predict", args, root, root / "c")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "1 files could not be read" in done.stderr
    assert "images/s" in done.stdout
    rows = _read_csv(output)
    assert list(rows[0]) == ["path", "probability", "prediction", "threshold", "error", "seen"]
    assert {row["seen"] for row in rows} == {""}, "test films: none of them seen by the model"
    assert [row["path"] for row in rows] == [str(f) for f in files], "sorted, every file"
    heatmaps = sorted((root / "predictions_heatmaps").glob("*.png"))
    assert len(heatmaps) == len(files) - 1, "one Grad-CAM overlay per scored film"
    (broken,) = [row for row in rows if row["error"]]
    assert broken["path"].endswith("broken.jpeg") and broken["probability"] == ""
    threshold = trained["metrics"]["val/threshold"]
    for row in rows:
        assert float(row["threshold"]) == pytest.approx(threshold, abs=1e-6)
        if not row["error"]:
            called = "PNEUMONIA" if float(row["probability"]) >= threshold else "NORMAL"
            assert row["prediction"] == called


def test_predict_reads_a_text_list_and_matches_the_training_cache(
    trained, synthetic_root, tmp_path
) -> None:
    scorer = load_scorer(trained["ckpt"], "cpu")
    datamodule = ChestXRayDataModule(
        synthetic_root, image_size=32, cache_dir=tmp_path / "cache", num_workers=0
    )
    datamodule.setup("test")
    records = datamodule.split_records["test"][:6]
    listing = tmp_path / "films.txt"
    missing = tmp_path / "gone.jpeg"
    listing.write_text("\n".join([*(str(r.path) for r in records), str(missing)]) + "\n")
    paths = list_inputs(listing)
    summary = predict_files(paths, scorer, tmp_path / "out.csv", batch_size=4, progress=False)
    assert [row.path for row in summary.rows] == [*(str(r.path) for r in records), str(missing)]
    assert summary.failed == 1 and summary.rows[-1].error
    # The same film through the training data path (decode-once cache, dataset scaling).
    cached = torch.stack([datamodule.datasets["test"][i][0] for i in range(6)])
    from_cache = scorer(cached.numpy())
    from_files = np.array([row.probability for row in summary.rows[:6]])
    np.testing.assert_allclose(from_files, from_cache, atol=1e-6)


@pytest.mark.slow
def test_export_parity_and_predict_through_onnx_runtime(trained, synthetic_root, tmp_path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    root = trained["root"]
    onnx_file = tmp_path / "model.onnx"
    args = [f"ckpt_path={trained['ckpt']}", f"output={onnx_file}", "format=onnx"]
    done = _run("cxrnet-export", [*args, f"paths.log_dir={tmp_path / 'x'}"], root, root / "c")
    assert done.returncode == 0, done.stderr[-3000:]
    torchscript = tmp_path / "model.pt"
    args = [f"ckpt_path={trained['ckpt']}", f"output={torchscript}", "format=torchscript"]
    done = _run("cxrnet-export", [*args, f"paths.log_dir={tmp_path / 'y'}"], root, root / "c")
    assert done.returncode == 0, done.stderr[-3000:]

    torch_scorer = load_scorer(trained["ckpt"], "cpu")
    onnx_scorer = load_scorer(onnx_file)
    assert onnx_scorer.operating_point == torch_scorer.operating_point
    assert onnx_scorer.preprocessing == torch_scorer.preprocessing
    extra = {"cxrnet.json": ""}
    scripted = torch.jit.load(str(torchscript), _extra_files=extra)
    assert json.loads(extra["cxrnet.json"])["operating_point"]["threshold"] == pytest.approx(
        trained["metrics"]["val/threshold"]
    )
    # Parity on real films where the workspace has them, else on the synthetic test films.
    real = REAL_224 / "train"
    source = real if real.is_dir() else synthetic_root / "test"
    films = sorted(source.rglob("*.jpeg"))[:: max(1, len(list(source.rglob("*.jpeg"))) // 64)]
    out_torch = predict_files(films, torch_scorer, tmp_path / "t.csv", progress=False)
    out_onnx = predict_files(films, onnx_scorer, tmp_path / "o.csv", progress=False)
    p_torch = np.array([row.probability for row in out_torch.rows])
    p_onnx = np.array([row.probability for row in out_onnx.rows])
    assert len(p_torch) >= 16
    assert np.max(np.abs(p_torch - p_onnx)) <= 1e-5
    from cxrnet.data.decode import decode
    from cxrnet.inference.predict import to_input

    batch = np.stack([to_input(decode(f, torch_scorer.preprocessing)) for f in films[:8]])
    with torch.inference_mode():
        p_script = scripted(torch.from_numpy(batch)).numpy()
    assert np.max(np.abs(p_script - p_torch[:8])) <= 1e-5

    # cxrnet-predict takes the exported file, no checkpoint needed.
    folder = tmp_path / "films"
    folder.mkdir()
    for film in films[:4]:
        shutil.copy(film, folder / film.name)
    args = [f"ckpt_path={onnx_file}", f"input={folder}", f"output={tmp_path / 'p.csv'}"]
    done = _run("cxrnet-predict", [*args, f"paths.log_dir={tmp_path / 'z'}"], root, root / "c")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _read_csv(tmp_path / "p.csv")
    assert len(rows) == 4 and not any(row["error"] for row in rows)


@pytest.mark.parametrize(
    "threshold",
    [
        7.5,
        pytest.param(float("nan"), marks=pytest.mark.slow),
        pytest.param(-0.1, marks=pytest.mark.slow),
    ],
)
def test_a_stored_threshold_that_is_no_probability_is_refused_naming_the_file(
    trained, synthetic_root, tmp_path, threshold
) -> None:
    # Before: 7.5 called every film NORMAL and exited 0.
    checkpoint = load_checkpoint(trained["ckpt"])
    checkpoint[INFERENCE_KEY]["operating_point"]["threshold"] = threshold
    bad = tmp_path / "bad-threshold.ckpt"
    torch.save(checkpoint, bad)
    film = next((synthetic_root / "test" / "NORMAL").iterdir())
    output = tmp_path / "predictions.csv"
    for name, args in (
        ("cxrnet-predict", [f"ckpt_path={bad}", f"input={film}", f"output={output}"]),
        ("cxrnet-export", [f"ckpt_path={bad}", f"output={tmp_path / 'model.onnx'}"]),
    ):
        done = _run(name, args, tmp_path, tmp_path / "cache")
        assert done.returncode == 2, (name, done.stderr[-2000:])
        assert f"error: checkpoint {bad}" in done.stderr
        assert "must be a probability in [0, 1]" in done.stderr
        assert "Traceback" not in done.stderr
    assert not output.exists() and not (tmp_path / "model.onnx").exists()


def test_issue_31_row_12_an_empty_dcm_and_a_jpeg_named_dcm_get_their_true_reason(
    trained, synthetic_root, tmp_path
) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    good = sorted((synthetic_root / "test").rglob("*.jpeg"))[0]
    shutil.copy(good, folder / "good.jpeg")
    (folder / "empty.dcm").write_bytes(b"")
    shutil.copy(good, folder / "renamed.dcm")  # a JPEG under a DICOM name
    output = tmp_path / "predictions.csv"
    args = [f"ckpt_path={trained['ckpt']}", f"input={folder}", f"output={output}"]
    done = _run("cxrnet-predict", [*args, f"paths.log_dir={tmp_path}"], tmp_path, tmp_path / "c")
    assert done.returncode == 3, done.stderr[-3000:]
    errors = {Path(row["path"]).name: row["error"] for row in _read_csv(output)}
    assert errors["good.jpeg"] == ""
    assert "empty file (0 bytes): not a DICOM film" in errors["empty.dcm"]
    assert "not a DICOM file: a JPEG image named .dcm; rename it .jpeg" in errors["renamed.dcm"]
    assert "PixelData" not in errors["empty.dcm"] + errors["renamed.dcm"]

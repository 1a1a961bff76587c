"""End to end: cxrnet-train on synthetic data, then cxrnet-eval on its checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers.compose import compose_in
from helpers.console import QUICK, run_train

from cxrnet.passes.checkpoint_eval import evaluate_checkpoint
from cxrnet.training.run import run


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run that the tests below only read."""
    cfg = compose_in(
        tmp_path_factory.mktemp("trained"),
        "train",
        [
            *QUICK,
            f"data.root={synthetic_root}",
            "trainer.max_epochs=5",
            "data.batch_size=8",
            "model.optimizer.lr=3e-3",
        ],
    )
    return cfg, run(cfg)


def test_training_beats_chance_and_writes_its_run_folder(trained) -> None:
    _, result = trained
    run_dir = Path(result.run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["metrics"]["val/auroc"] > 0.6
    assert metrics["metrics"]["test/auroc"] > 0.6
    for stage in ("val", "test"):
        for name in ("accuracy", "precision", "recall", "specificity", "f1", "auroc", "loss"):
            assert f"{stage}/{name}" in metrics["metrics"]
    assert Path(metrics["paths"]["best_checkpoint"]).is_file()
    assert Path(metrics["paths"]["best_checkpoint"]).parent == run_dir / "checkpoints"
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["data"]["image_size"] == 32
    assert "${" not in (run_dir / "config.yaml").read_text()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    # The precision it trained in is recorded, an explicit one as given (auto: test_hardware).
    assert metrics["extra"]["precision"] == resolved["trainer"]["precision"] == "32-true"


def test_threshold_is_chosen_on_validation_and_applied_to_test(trained) -> None:
    import csv

    import numpy as np

    from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold

    _, result = trained
    run_dir = Path(result.run_dir)
    tables = {}
    for split in ("val", "test"):
        with (run_dir / f"predictions_{split}.csv").open() as handle:
            tables[split] = list(csv.DictReader(handle))
    labels = {s: np.array([r["label"] == "PNEUMONIA" for r in t], int) for s, t in tables.items()}
    probs = {s: np.array([float(r["probability"]) for r in t]) for s, t in tables.items()}
    threshold = result.metrics["val/threshold"]
    assert threshold == pytest.approx(choose_threshold(probs["val"], labels["val"]), abs=1e-6)
    expected = binary_metrics_at(probs["test"], labels["test"], threshold)
    assert result.metrics["test/f1_at_threshold"] == pytest.approx(expected["f1"], abs=1e-6)
    viral = np.array([r["subtype"] == "virus" for r in tables["test"]])
    caught = np.mean(probs["test"][viral] >= threshold)
    assert result.metrics["test/recall_virus_at_threshold"] == pytest.approx(caught)


def test_subtype_task_trains_a_three_class_head(compose_cfg, synthetic_root: Path) -> None:
    overrides = [*QUICK, f"data.root={synthetic_root}", "data.task=subtype", "trainer.max_epochs=1"]
    cfg = compose_cfg("train", overrides)
    result = run(cfg)
    metrics = result.metrics
    for name in ("recall_normal", "recall_bacteria", "recall_virus", "auroc", "f1"):
        assert 0.0 <= metrics[f"test/{name}"] <= 1.0
    assert "val/threshold" not in metrics  # a threshold is a binary notion


def test_eval_reproduces_the_test_metrics_from_the_checkpoint(trained, compose_cfg) -> None:
    _, result = trained
    cfg = compose_cfg("eval", [f"ckpt_path={result.paths['best_checkpoint']}", "stages=[val,test]"])
    evaluated = evaluate_checkpoint(cfg)
    keys = ("test/auroc", "test/f1", "test/accuracy", "test/loss", "val/auroc", "val/threshold")
    for key in (*keys, "test/f1_at_threshold", "test/recall_virus_at_threshold"):
        assert evaluated[key] == pytest.approx(result.metrics[key], abs=1e-6), key


def test_a_failing_run_writes_a_failed_metrics_file(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("train", [*QUICK, f"data.root={tmp_path / 'missing'}"])
    with pytest.raises(ValueError, match="no such folder"):
        run(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "no such folder" in metrics["error"]


def test_no_test_folder_trains_and_skips_testing(compose_cfg, synthetic_copy: Path) -> None:
    import shutil

    shutil.rmtree(synthetic_copy / "test")
    cfg = compose_cfg("train", [*QUICK, f"data.root={synthetic_copy}", "trainer.max_epochs=1"])
    result = run(cfg)
    assert "val/auroc" in result.metrics
    assert not any(key.startswith("test/") for key in result.metrics)


def test_console_script_runs_from_any_directory_on_generated_synthetic_data(tmp_path: Path):
    """The installed `cxrnet-train`, no data root: generates synthetic data into the cache."""
    done = run_train(["debug=fast", f"paths.log_dir={tmp_path / 'logs'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("metric "))
    assert header.split()[1:] == ["val", "test"]
    assert any(line.split()[0] == "auroc" for line in done.stdout.splitlines() if line.strip())
    assert "run folder: " in done.stdout
    run_dir = Path(done.stdout.split("run folder: ")[1].split()[0])
    # It ends with where its files are and what to run next, and nothing after that.
    best = json.loads((run_dir / "metrics.json").read_text())["paths"]["best_checkpoint"]
    assert done.stdout.rstrip().splitlines()[-5:] == [
        f"run folder: {run_dir}",
        f"report: {run_dir / 'report.md'}",
        f"best checkpoint: {best}",
        f"next: cxrnet-eval ckpt_path={best} data.root=<another site's films>   "
        "(external validation)",
        f"      cxrnet-predict ckpt_path={best} input=<films>   (a probability and a call per "
        "film)",
    ]
    assert (run_dir / "metrics.json").is_file()
    assert list((tmp_path / "cache" / "synthetic").glob("synthetic-*"))
    # The quick start's card says what its films are, and no real dataset's limits.
    card = (run_dir / "report.md").read_text()
    title, _, banner = card.splitlines()[:3]
    assert title == "# Model card: pneumonia vs normal on SYNTHETIC films (not patients)"
    assert banner.startswith("**Synthetic films, not patients.**")
    assert "Guangzhou" not in card and "Kermany" not in card


def test_metrics_file_is_valid_json_even_with_nan(tmp_path: Path) -> None:
    from cxrnet.publish import write_json_atomic as write_metrics

    write_metrics(tmp_path / "metrics.json", {"metrics": {"val/auroc": float("nan"), "x": 1.0}})
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == {
        "val/auroc": None,
        "x": 1.0,
    }
    assert not (tmp_path / "metrics.json.tmp").exists()


def test_data_root_may_list_several_sources(compose_cfg, synthetic_root: Path, tmp_path: Path):
    """A folder and a CSV manifest combined, as the README promises for data.root."""
    extra = tmp_path / "extra.csv"
    image = sorted((synthetic_root / "train" / "NORMAL").iterdir())[0]
    copy = tmp_path / "IM-9000-0001.jpeg"
    copy.write_bytes(image.read_bytes() + b"\0")  # same picture, not byte-identical
    extra.write_text(f"path,label,split\n{copy},NORMAL,train\n")
    cfg = compose_cfg(
        "train", [*QUICK, f"data.root=[{synthetic_root},{extra}]", "trainer.max_epochs=1"]
    )
    result = run(cfg)
    assert result.paths["data_root"] == [str(synthetic_root), str(extra)]
    split = (Path(result.run_dir) / "split.csv").read_text()
    assert str(copy) in split


def test_a_training_run_predicts_each_split_once(
    compose_cfg, synthetic_root: Path, monkeypatch
) -> None:
    """After fit: one prediction pass per split feeds metrics, CSVs, figures and loggers."""
    import lightning as L

    import cxrnet.passes.evaluation_pass as evaluation_pass

    predicted: list[tuple[str, int]] = []
    real_predict_split = evaluation_pass.predict_split

    def spy(module, loader, records, **kwargs):
        split = next(s for s, recs in datamodules[0].split_records.items() if recs is records)
        predicted.append((split, len(records)))
        return real_predict_split(module, loader, records, **kwargs)

    datamodules = []
    real_pass = evaluation_pass.run_evaluation_pass

    def remember(model, datamodule, *args, **kwargs):
        datamodules.append(datamodule)
        return real_pass(model, datamodule, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("a second pass over the data after training")

    monkeypatch.setattr(evaluation_pass, "predict_split", spy)
    monkeypatch.setattr("cxrnet.training.run.run_evaluation_pass", remember)
    monkeypatch.setattr(L.Trainer, "validate", refuse)
    monkeypatch.setattr(L.Trainer, "test", refuse)
    cfg = compose_cfg(
        "train",
        [*QUICK, f"data.root={synthetic_root}", "trainer.max_epochs=1", "logger=[csv,tensorboard]"],
    )
    result = run(cfg)
    sizes = {split: len(recs) for split, recs in datamodules[0].split_records.items()}
    assert predicted == [("val", sizes["val"]), ("test", sizes["test"])]
    run_dir = Path(result.run_dir)
    for split in ("val", "test"):
        rows = (run_dir / f"predictions_{split}.csv").read_text().splitlines()
        assert len(rows) == sizes[split] + 1
        assert (run_dir / "figures" / f"{split}.png").is_file()
    logged = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "report/val/threshold" in logged and "report/test/auroc_ci_high" in logged
    assert result.metrics["val/threshold"] == pytest.approx(
        float(json.loads((run_dir / "metrics.json").read_text())["metrics"]["val/threshold"])
    )


def test_early_stopping_from_the_config_ends_training(compose_cfg, synthetic_root: Path) -> None:
    # No AUROC can improve by a whole 1.0, so the run stops once patience (1 epoch) runs out.
    cfg = compose_cfg(
        "train",
        [
            *QUICK,
            f"data.root={synthetic_root}",
            "callbacks=early_stopping",
            "+callbacks.early_stopping.min_delta=1.0",
            "callbacks.early_stopping.patience=1",
            "trainer.max_epochs=6",
        ],
    )
    run_dir = Path(run(cfg).run_dir)
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle) if row.get("train/loss")}
    assert sorted(epochs, key=int) == ["0", "1"]  # trained 2 of the 6 epochs allowed


@pytest.mark.slow
def test_a_sweep_names_its_folder_and_the_compare_command(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        [
            "-m",
            "debug=fast",
            f"data.root={synthetic_root}",
            "seed=1,2",
            f"paths.log_dir={tmp_path}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = tmp_path.glob("*/multiruns/*")
    lines = done.stdout.rstrip().splitlines()
    assert lines[0] == f"sweep folder: {sweep}"
    assert lines[-2:] == [
        f"sweep folder: {sweep}",
        f"next: cxrnet-compare {sweep}   (its runs side by side)",
    ]
    # Each job ended with its own report.
    assert [line for line in lines if line.startswith("report: ")] == [
        f"report: {sweep / job / 'report.md'}" for job in "01"
    ]

"""Runs that did not produce a result say so: divergence, empty runs, contradictory settings,
and user errors caught before any data work, each as a user meets them in the shell."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrnet.evaluation.metrics import monitor_mode_for
from cxrnet.models.module import ClassifierModule
from cxrnet.runs import read_record
from cxrnet.runs.results import collect_runs
from cxrnet.training.run import run
from cxrnet.user_errors import ConfigError

FAST = ["debug=fast", "model.net.widths=[8,8,16,16]", "model.net.hidden=16"]
NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}


def _train(tmp_path: Path, *overrides: str, env: dict[str, str] | None = None):
    script = Path(sys.executable).with_name("cxrnet-train")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cxrnet.cli.train"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, *overrides, f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=tmp_path,
        env=os.environ
        | {"CXRNET_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
        | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.monotonic() - started


def _only_record(tmp_path: Path):
    (run_dir,) = (tmp_path / "logs").glob("*/runs/*")
    return read_record(run_dir)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ----------------------------------------------------------------------------- divergence


@pytest.mark.slow
def test_a_diverging_run_fails_naming_epoch_step_and_learning_rate(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Row: ``model.optimizer.lr=1e8`` used to exit 0 with status=completed and val/auroc 0.93."""
    done, _ = _train(tmp_path, *FAST, f"data.root={synthetic_root}", "model.optimizer.lr=1e8")
    assert done.returncode == 1, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr)
    assert "training diverged" in line and "epoch 0, step" in line
    assert "learning rate 100000000.0" in line
    assert "Traceback" not in done.stderr
    record = _only_record(tmp_path)
    assert record.status.value == "failed" and "diverged" in record.error
    assert record.metrics == {} and not record.paths.get("best_checkpoint")
    # cxrnet-compare lists it as failed, without a score to rank it by.
    (listed,) = collect_runs([tmp_path / "logs"])
    assert listed.status == "failed" and not listed.metrics


def test_with_the_divergence_callback_off_nan_predictions_still_fail_the_run(
    compose_cfg, synthetic_root: Path
) -> None:
    cfg = compose_cfg(
        "train",
        [
            *FAST,
            f"data.root={synthetic_root}",
            "model.optimizer.lr=1e8",
            "~callbacks.fail_on_non_finite",
        ],
    )
    with pytest.raises(FloatingPointError, match=r"val/auroc of the best checkpoint .* is nan"):
        run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.status.value == "failed" and record.metrics == {}


def test_nan_predictions_never_produce_a_metric() -> None:
    """torchmetrics sorts NaNs and reports a plausible AUROC; the module reports NaN instead."""
    module = ClassifierModule(net=NET, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    labels = torch.tensor([0, 1, 0, 1])
    module.metrics["val_"].update(torch.tensor([0.1, 0.9, 0.2, 0.8]), labels)
    module.losses["val_"].update(torch.tensor(0.3))
    module.non_finite["val_"].update(torch.tensor(1))
    values = module.compute_epoch_metrics("val")
    assert values["val/auroc"] != values["val/auroc"]  # NaN, not the 1.0 of the finite rows
    assert all(v != v for v in values.values())
    # The next epoch starts clean.
    module._step((torch.rand(4, 1, 32, 32), labels), "val")
    assert all(v == v for v in module.compute_epoch_metrics("val").values())


# ---------------------------------------------------------------------- runs without result


def test_max_epochs_zero_is_a_usage_error_before_any_data_work(tmp_path: Path) -> None:
    """Row: ``trainer.max_epochs=0`` used to report an untrained network as completed."""
    done, _ = _train(tmp_path, *FAST, "trainer.max_epochs=0", f"data.root={tmp_path / 'none'}")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr)
    assert "trainer.max_epochs=0 trains nothing" in line
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists()  # not even the synthetic data was generated
    assert _only_record(tmp_path).status.value == "failed"


def test_a_run_that_saved_no_checkpoint_is_failed(compose_cfg, synthetic_root: Path) -> None:
    cfg = compose_cfg(
        "train",
        [
            *FAST,
            f"data.root={synthetic_root}",
            "~callbacks.model_checkpoint",
            "+trainer.enable_checkpointing=false",
        ],
    )
    with pytest.raises(Exception, match="no checkpoint was saved"):
        run(cfg)
    record = read_record(cfg.paths.output_dir)
    assert record.status.value == "failed" and record.metrics == {}


# ------------------------------------------------------------------------------ monitor mode


def test_monitor_mode_follows_the_metric_and_a_contradiction_is_an_error() -> None:
    assert monitor_mode_for("val/loss") == "min"
    assert monitor_mode_for("val/auroc") == "max"
    assert monitor_mode_for("val/loss", "min") == "min"
    with pytest.raises(ConfigError, match="monitor_mode=max contradicts monitor=val/loss"):
        monitor_mode_for("val/loss", "max")
    with pytest.raises(ConfigError, match="monitor_mode=min contradicts monitor=val/f1"):
        monitor_mode_for("val/f1", "min")


def test_monitoring_val_loss_keeps_the_epoch_with_the_lowest_loss(
    compose_cfg, synthetic_root: Path
) -> None:
    """Row: ``monitor=val/loss`` without ``monitor_mode=min`` kept the highest loss."""
    cfg = compose_cfg(
        "train",
        [
            *FAST,
            f"data.root={synthetic_root}",
            "monitor=val/loss",
            "trainer.max_epochs=3",
            "model.optimizer.lr=3e-3",
        ],
    )
    record = run(cfg)
    assert record.status.value == "completed"
    with (Path(record.run_dir) / "csv" / "metrics.csv").open() as handle:
        losses = {
            int(row["epoch"]): float(row["val/loss"])
            for row in csv.DictReader(handle)
            if row.get("val/loss")
        }
    assert len(set(losses.values())) > 1
    best_epoch = min(losses, key=losses.get)
    assert Path(record.paths["best_checkpoint"]).name == f"epoch_{best_epoch:03d}.ckpt"


def test_a_contradictory_monitor_mode_is_a_usage_error(tmp_path: Path) -> None:
    done, _ = _train(tmp_path, *FAST, "monitor=val/loss", "monitor_mode=max")
    assert done.returncode == 2, done.stderr[-2000:]
    (line,) = _error_lines(done.stderr)
    assert "monitor_mode=max contradicts monitor=val/loss" in line


# ----------------------------------------------------------------------- fail fast and brief


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.net.name=resnet9000", "model.net.name='resnet9000' is not a registered network"),
        ("monitor=val/aucroc", "monitor='val/aucroc' is not a validation metric"),
        ("ckpt_path={tmp}/missing.ckpt", "checkpoint {tmp}/missing.ckpt does not exist"),
        ("ckpt_path={tmp}/corrupt.ckpt", "checkpoint {tmp}/corrupt.ckpt is damaged"),
        ("data.cache_dir={tmp}/a-file/images", "data.cache_dir={tmp}/a-file/images is not a "),
    ],
)
def test_configuration_errors_stop_before_decoding_in_one_line(
    synthetic_root: Path, tmp_path: Path, override: str, expected: str
) -> None:
    """Rows: unknown network / monitor, missing or corrupt ckpt_path, an unwritable cache: each
    used to surface after the whole cache was decoded or an epoch ran, as a long traceback."""
    (tmp_path / "corrupt.ckpt").write_bytes(b"\x80\x02garbage")
    (tmp_path / "a-file").write_text("not a folder")
    done, _ = _train(tmp_path, *FAST, f"data.root={synthetic_root}", override.format(tmp=tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    (line,) = _error_lines(done.stderr)
    assert expected.format(tmp=tmp_path) in line
    # Nothing was decoded: no image cache was built.
    assert not list((tmp_path / "cache").glob("images/*px-*"))
    assert _only_record(tmp_path).status.value == "failed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_is_named_before_decoding(
    synthetic_root: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "read-only"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        done, _ = _train(tmp_path, *FAST, f"data.root={synthetic_root}", f"data.cache_dir={cache}")
    finally:
        cache.chmod(0o755)
    assert done.returncode == 2
    (line,) = _error_lines(done.stderr)
    assert f"data.cache_dir={cache} is not a writable folder" in line


def test_full_hydra_error_shows_the_traceback_of_a_user_error(tmp_path: Path) -> None:
    done, _ = _train(tmp_path, *FAST, "model.net.name=nope", env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr
    assert "error: model.net.name='nope'" in done.stderr


@pytest.mark.slow
def test_a_user_error_in_a_sweep_fails_that_job_and_the_sweep_goes_on(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done, _ = _train(
        tmp_path, "-m", *FAST, f"data.root={synthetic_root}", "model.net.name=nope,notebook_cnn"
    )
    assert done.returncode != 0
    (sweep,) = (tmp_path / "logs").glob("*/multiruns/*")
    statuses = [json.loads((sweep / n / "metrics.json").read_text())["status"] for n in "01"]
    assert statuses == ["failed", "completed"]


def test_no_threshold_is_chosen_on_nan_predictions(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation pass (cxrnet-train and cxrnet-eval) reports nothing from NaN scores."""
    from types import SimpleNamespace

    import cxrnet.passes.evaluation_pass as evaluation_pass
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.evaluation.report import SplitPredictions
    from cxrnet.evaluation.thresholds import ThresholdRule

    dm = ChestXRayDataModule(root=synthetic_root, image_size=32, num_workers=0, cache_dir=None)
    dm.setup("fit")

    def nan_predictions(model, loader, records, **kwargs):
        labels = np.array([record.label for record in records])
        return SplitPredictions.from_records(np.full(len(records), np.nan), labels, records)

    monkeypatch.setattr(evaluation_pass, "predict_split", nan_predictions)
    with pytest.raises(FloatingPointError, match=r"val predictions are NaN or infinite"):
        model = SimpleNamespace(hparams={})  # never called: the predictions are patched
        evaluation_pass.run_evaluation_pass(model, dm, ["val"], tmp_path, rule=ThresholdRule())
    assert not (tmp_path / "predictions_val.csv").exists(), "nothing written from NaN scores"

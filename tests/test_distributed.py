"""Trainer configs and DDP: every config builds a Trainer; two CPU processes behave as one run."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import torch
from console import QUICK, run_folder, run_train
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from cxrnet.data.datamodule import per_process_batch_size

TRAINER_CONFIGS = sorted(
    Path(str(p)).stem
    for p in importlib.resources.files("cxrnet.conf").joinpath("trainer").iterdir()
    if p.name.endswith(".yaml")
)


def test_every_trainer_config_is_tested_here() -> None:
    assert set(TRAINER_CONFIGS) == {"cpu", "ddp", "ddp_cpu", "default", "gpu"}


@pytest.mark.parametrize("name", TRAINER_CONFIGS)
def test_every_trainer_config_builds_a_trainer(compose_cfg, name: str) -> None:
    """Built for real, on the CPU where the config asks for GPUs, so a broken config fails CI."""
    cfg = compose_cfg("train", [f"trainer={name}"])
    requested = dict(cfg.trainer)
    overrides: dict[str, object] = {}
    if not torch.cuda.is_available() and requested["accelerator"] == "gpu":
        # CPU autocast knows bf16 only; the precision setting itself is still checked.
        overrides = {"accelerator": "cpu", "devices": 2 if "strategy" in requested else 1}
        if requested["precision"] == "16-mixed":
            overrides["precision"] = "bf16-mixed"
    trainer = instantiate(cfg.trainer, logger=False, **overrides)
    if requested.get("strategy") == "ddp":
        assert isinstance(trainer.strategy, DDPStrategy)
        assert trainer.num_nodes == requested["num_nodes"]
        assert trainer.world_size == trainer.num_devices * trainer.num_nodes
    else:
        assert isinstance(trainer.strategy, SingleDeviceStrategy)
        assert trainer.world_size == 1
    assert trainer.max_epochs == cfg.trainer.max_epochs
    if name == "ddp":
        assert requested["sync_batchnorm"] is True
    if name == "ddp_cpu":
        assert trainer.num_devices == 2
        assert trainer.strategy._get_process_group_backend() == "gloo"


def test_gpu_config_takes_either_mixed_precision(compose_cfg) -> None:
    for precision in ("16-mixed", "bf16-mixed"):
        cfg = compose_cfg("train", ["trainer=gpu", f"trainer.precision={precision}"])
        assert cfg.trainer.precision == precision
    trainer = instantiate(cfg.trainer, accelerator="cpu", logger=False)
    assert trainer.precision == "bf16-mixed"


def test_global_batch_is_divided_over_the_processes() -> None:
    assert per_process_batch_size(32, 1) == 32
    assert per_process_batch_size(32, 4) == 8
    assert per_process_batch_size(32, 16) == 2
    with pytest.raises(ValueError, match=r"data.batch_size=30 .* 4 processes.*e.g. 32"):
        per_process_batch_size(30, 4)


def _single_process_val_metrics(compose_cfg, checkpoint: str) -> dict[str, float]:
    from cxrnet.cli.evaluate import evaluate

    # The checkpoint records its data settings; one CPU process evaluates them.
    cfg = compose_cfg("eval", [f"ckpt_path={checkpoint}", "stages=[val]", "trainer=cpu"])
    return evaluate(cfg)


@pytest.mark.slow
def test_ddp_cpu_is_one_run_with_synchronised_metrics(
    compose_cfg, synthetic_root: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    done = run_train(
        [
            *QUICK,
            "trainer=ddp_cpu",
            "trainer.devices=2",  # debug=fast asks for one device
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "trainer.max_epochs=2",
            "logger=[csv,wandb]",
            f"paths.log_dir={logs}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = run_folder(done.stdout)
    assert [p.name for p in (logs / "debug" / "runs").iterdir()] == [run_dir.name]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["extra"]["world_size"] == 2
    # Rank 1 logs into the same folder and writes nothing else of its own.
    assert (run_dir / "train_rank1.log").is_file()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert len((run_dir / "csv" / "metrics.csv").read_text().splitlines()) > 1

    # Epoch metrics gathered from both ranks equal one process's over the same images (the
    # 24 validation images split evenly, so no rank pads its share with repeats).
    single = _single_process_val_metrics(compose_cfg, record["paths"]["best_checkpoint"])
    for key in ("val/auroc", "val/accuracy", "val/f1", "val/loss", "val/specificity"):
        assert record["metrics"][key] == pytest.approx(single[key], abs=1e-5), key


@pytest.mark.slow
def test_a_multirun_of_ddp_jobs_writes_one_folder_per_job(
    synthetic_root: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    done = run_train(
        [
            "-m",
            "debug=fast",
            "trainer=ddp_cpu",
            "trainer.devices=2",
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "test=false",
            "seed=1,2",
            f"paths.log_dir={logs}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (logs / "debug" / "runs").exists(), "a rank started a run of its own"
    (sweep,) = (logs / "debug" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert record["extra"]["world_size"] == 2

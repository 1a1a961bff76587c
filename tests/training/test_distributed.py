"""Trainer configs and DDP: every config builds a Trainer; two CPU processes behave as one run."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import torch
from helpers.console import QUICK, run_folder, run_train
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from cxrnet.data.loaders import per_process_batch_size

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
    from cxrnet.passes.checkpoint_eval import evaluate_checkpoint

    # The checkpoint records its data settings; one CPU process evaluates them.
    cfg = compose_cfg("eval", [f"ckpt_path={checkpoint}", "stages=[val]", "trainer=cpu"])
    return evaluate_checkpoint(cfg)


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


def _draws_under_ddp(synthetic_root: Path, tmp_path: Path, imbalance: str) -> list[dict]:
    """Train ddp_cpu for three epochs, tests/helpers/draw_probe.py recording each rank's draws."""
    draws = tmp_path / "draws"
    done = run_train(
        [
            *QUICK,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            f"data.root={synthetic_root}",
            f"data.imbalance={imbalance}",
            "data.batch_size=8",
            "trainer.max_epochs=3",
            "test=false",
            f"paths.log_dir={tmp_path / 'logs'}",
            "+callbacks.draws._target_=helpers.draw_probe.RecordDraws",
            f"+callbacks.draws.out_dir={draws}",
        ],
        tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((draws / f"draws_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return ranks


@pytest.mark.slow
def test_the_weighted_sampler_under_ddp_splits_one_balanced_draw_between_the_ranks(
    synthetic_root: Path, tmp_path: Path
) -> None:
    rank0, rank1 = _draws_under_ddp(synthetic_root, tmp_path, "sampler")
    # Lightning wraps the WeightedRandomSampler (not replaced by a plain DistributedSampler,
    # which would drop the weights).
    assert rank0["sampler"] == rank1["sampler"] == "DistributedSamplerWrapper"
    labels = rank0["labels"]
    n = len(labels)
    assert n % 2 == 0  # so neither rank pads its share with a repeat
    pooled: list[int] = []
    for epoch0, epoch1 in zip(rank0["epochs"], rank1["epochs"], strict=True):
        shared = epoch0["shared_draw"]
        # One weighted draw of the whole epoch, the same on both ranks ...
        assert shared == epoch1["shared_draw"] and len(shared) == n
        # ... of which each rank trains on its own half.
        assert len(epoch0["drawn"]) == len(epoch1["drawn"]) == n // 2
        assert sorted(epoch0["drawn"] + epoch1["drawn"]) == sorted(shared)
        pooled += shared
    assert rank0["epochs"][0]["shared_draw"] != rank0["epochs"][1]["shared_draw"]  # per epoch
    # Drawn with balanced weights: the minority class (a quarter of the films) makes about half
    # of the draws (binomial, 192 draws: the bounds are 4 standard deviations away).
    normal = labels.count(0) / n
    drawn_normal = sum(labels[i] == 0 for i in pooled) / len(pooled)
    assert normal == 0.25
    assert 0.35 < drawn_normal < 0.65, drawn_normal
    # With the sampler balancing, the loss is unweighted on both ranks.
    assert rank0["class_weights"] == rank1["class_weights"] == [1.0, 1.0]


@pytest.mark.slow
def test_class_weights_under_ddp_equal_one_processs_and_ranks_split_the_epoch(
    compose_cfg, synthetic_root: Path, tmp_path: Path
) -> None:
    rank0, rank1 = _draws_under_ddp(synthetic_root, tmp_path, "class_weight")
    # The weights come from the whole training split on every rank: one process's weights.
    cfg = compose_cfg("train", [*QUICK, f"data.root={synthetic_root}", "data.batch_size=8"])
    datamodule = instantiate(cfg.data, root=str(synthetic_root))
    datamodule.setup("fit")
    single = datamodule.class_weights
    assert single[0] > 1 > single[1]  # normal is the minority
    assert rank0["class_weights"] == pytest.approx(single)
    assert rank1["class_weights"] == pytest.approx(single)
    # A plain shuffle becomes Lightning's DistributedSampler: disjoint halves of the split.
    assert rank0["sampler"] == rank1["sampler"] == "DistributedSampler"
    n = len(rank0["labels"])
    for epoch0, epoch1 in zip(rank0["epochs"], rank1["epochs"], strict=True):
        assert epoch0["shared_draw"] is None
        assert sorted(epoch0["drawn"] + epoch1["drawn"]) == list(range(n))

"""cxrnet under a real Slurm: a launcher sweep, DDP with sbatch + srun, and a requeue.

The cluster is a single node on localhost (tests/helpers/slurm_cluster.py); these tests skip, saying
why, where Slurm cannot be installed or started. CI installs slurm-wlm and munge (.ci/run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.console import QUICK, console_script, run_train, script_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _batch_script(path: Path, train_args: list[str], *sbatch: str) -> Path:
    command = " ".join([*console_script("cxrnet-train"), *train_args])
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in sbatch), f"srun {command}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_sweep_through_the_slurm_launcher(slurm_cluster, synthetic_root: Path, tmp_path: Path):
    logs = tmp_path / "logs"
    done = run_train(
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=debug",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
            "debug=fast",
            f"data.root={synthetic_root}",
            "test=false",
            "seed=1,2",
            f"paths.log_dir={logs}",
        ],
        tmp_path,
        timeout=400,
        env={"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]},
    )
    assert done.returncode == 0, done.stderr[-3000:] + slurm_cluster.logs()
    (sweep,) = (logs / "debug" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    job_ids = set()
    for job in jobs:
        record = _record(job)
        assert record["status"] == "completed"
        assert "val/auroc" in record["metrics"]
        job_ids.add(record["extra"]["slurm_job_id"])  # ran under Slurm
    assert len(job_ids) == 2


def test_ddp_cpu_with_sbatch_and_srun(slurm_cluster, synthetic_root: Path, tmp_path: Path):
    logs = tmp_path / "logs"
    script = _batch_script(
        tmp_path / "ddp.sh",
        [
            *QUICK,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "test=false",
            f"paths.log_dir={logs}",
        ],
        "--nodes=1",
        "--ntasks-per-node=2",  # Lightning reads tasks per node, not --ntasks
        "--cpus-per-task=1",
        f"--output={tmp_path}/slurm-%j.out",
    )
    env = script_env(tmp_path) | {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    slurm_cluster.env = env
    job = slurm_cluster.sbatch(script, f"--chdir={tmp_path}")
    info = slurm_cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    output = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("slurm-*.out"))
    assert info["JobState"] == "COMPLETED", output
    (run_dir,) = (logs / "debug" / "runs").iterdir()  # both tasks wrote one folder
    assert run_dir.name.startswith(f"slurm-{job}-step0-")
    record = _record(run_dir)
    assert record["status"] == "completed"
    assert record["extra"]["world_size"] == 2
    assert record["extra"]["slurm_job_id"] == job


def test_a_preemption_warning_checkpoints_requeues_and_resumes(
    slurm_cluster, synthetic_root: Path, tmp_path: Path
):
    logs = tmp_path / "logs"
    script = _batch_script(
        tmp_path / "train.sh",
        [
            *QUICK,
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "trainer.max_epochs=12",
            "test=false",
            f"paths.log_dir={logs}",
        ],
        "--ntasks-per-node=1",
        "--cpus-per-task=1",
        "--requeue",
        "--open-mode=append",
        f"--output={tmp_path}/slurm-%j.out",
    )
    env = script_env(tmp_path) | {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    slurm_cluster.env = env
    job = slurm_cluster.sbatch(script, f"--chdir={tmp_path}")
    # Signal by hand once training runs (a --signal timer may fire before Lightning listens).
    deadline = time.monotonic() + 240
    while not list(logs.glob("debug/runs/*/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline, slurm_cluster.job(job)
        time.sleep(0.2)
    slurm_cluster.run(["scancel", "-s", "USR1", job])
    info = slurm_cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=300)
    output = "\n".join(p.read_text()[-4000:] for p in tmp_path.glob("slurm-*.out"))
    assert info["JobState"] == "COMPLETED", output
    assert int(info["Restarts"]) == 1, info
    (run_dir,) = (logs / "debug" / "runs").iterdir()  # the requeued job found its folder
    assert list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning wrote no checkpoint on USR1"
    record = _record(run_dir)
    assert record["status"] == "completed"
    assert record["extra"]["slurm_restart_count"] == 1
    assert record["paths"]["resumed_from"].startswith(str(run_dir))

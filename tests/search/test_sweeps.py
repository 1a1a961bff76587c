"""Multirun sweeps: one folder per job, parallel jobs, failed jobs, runs that start together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.console import run_train

from cxrnet.runs.results import collect_runs

TINY = ["debug=fast", "model.net.widths=[8,8,16,16]", "model.net.hidden=16"]


def _command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "cxrnet.cli.train", *overrides]


def _env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"CXRNET_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}


def _sweep_dirs(log_dir: Path) -> list[Path]:
    return sorted((log_dir / "debug" / "multiruns").iterdir())


def _job(job_dir: Path) -> tuple[list[str], dict]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return overrides, json.loads((job_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_a_parallel_sweep_puts_each_job_in_its_own_folder_and_survives_a_failure(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Two jobs at once in worker processes; lr=-1 fails (refused before training, with a failed
    record), lr=0.001 trains with a data worker."""
    done = subprocess.run(
        _command(
            "-m",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            *TINY,
            f"data.root={synthetic_root}",
            # DataLoader worker processes inside a launcher worker: see cxrnet/sweeps.py.
            "data.num_workers=1",
            f"paths.log_dir={tmp_path / 'logs'}",
            "model.optimizer.lr=0.001,-1",
        ),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    # The sweep reports the failed job by exiting non-zero, after every job has run.
    assert done.returncode != 0
    refused = "model.optimizer.lr=-1 is not a valid value"
    assert refused in done.stderr

    (sweep_dir,) = _sweep_dirs(tmp_path / "logs")  # one sweep, one folder: the uid is cached
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    overrides, completed = _job(sweep_dir / "0")
    assert "model.optimizer.lr=0.001" in overrides
    assert completed["status"] == "completed"
    assert completed["run_dir"] == str(sweep_dir / "0")
    assert completed["metrics"]["val/auroc"] >= 0.0
    overrides, failed = _job(sweep_dir / "1")
    assert "model.optimizer.lr=-1" in overrides
    assert failed["status"] == "failed" and refused in failed["error"]

    # cxrnet-compare lists the failed job from its metrics.json.
    assert sorted(run.status for run in collect_runs([sweep_dir])) == ["completed", "failed"]


@pytest.mark.slow
def test_the_slurm_local_launcher_runs_each_job_as_its_own_process(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """hydra/launcher=slurm_local: the Slurm launcher's sweep as submitit local jobs."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    done = run_train(
        [
            "-m",
            "hydra/launcher=slurm_local",
            *TINY,
            f"data.root={synthetic_root}",
            "test=false",
            f"paths.log_dir={tmp_path / 'logs'}",
            "seed=1,2",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sweep_dir,) = _sweep_dirs(tmp_path / "logs")
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job, seed in zip(jobs, (1, 2), strict=True):
        overrides, record = _job(sweep_dir / job)
        assert f"seed={seed}" in overrides
        assert record["status"] == "completed" and record["run_dir"] == str(sweep_dir / job)
        assert 0.0 <= record["metrics"]["val/auroc"] <= 1.0
    # Each job ran as a submitit job of its own (a process with its own log), not in the sweep's.
    submitted = sorted((sweep_dir / ".submitit").glob("*/*_submitted.pkl"))
    assert len(submitted) == 2
    assert len({p.parent for p in submitted}) == 2


@pytest.mark.slow
def test_the_basic_launcher_runs_every_job_even_after_one_fails(tmp_path: Path) -> None:
    """Hydra 1.3 runs all the jobs of a batch, then raises the first failure."""
    missing = [tmp_path / "missing_a", tmp_path / "missing_b"]
    done = subprocess.run(
        _command(
            "-m",
            "debug=fast",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"data.root={missing[0]},{missing[1]}",
        ),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    (sweep_dir,) = _sweep_dirs(tmp_path / "logs")
    for number, root in enumerate(missing):
        overrides, metrics = _job(sweep_dir / str(number))
        assert f"data.root={root}" in overrides
        assert metrics["status"] == "failed" and "no such folder" in metrics["error"]


@pytest.mark.slow
def test_two_runs_started_at_the_same_moment_get_their_own_folders(
    synthetic_root: Path, tmp_path: Path
) -> None:
    overrides = [
        *TINY,
        f"data.root={synthetic_root}",
        "test=false",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    processes = [
        subprocess.Popen(
            _command(*overrides, f"seed={seed}"),
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]

    run_dirs = [Path(stdout.split("run folder: ")[1].split()[0]) for stdout, _ in outputs]
    assert run_dirs[0] != run_dirs[1]
    assert sorted(run_dirs) == sorted((tmp_path / "logs" / "debug" / "runs").iterdir())
    for seed, run_dir in zip((1, 2), run_dirs, strict=True):
        overrides_written, metrics = _job(run_dir)
        assert f"seed={seed}" in overrides_written
        assert metrics["status"] == "completed" and metrics["run_dir"] == str(run_dir)


@pytest.mark.parametrize("config_name", ["train", "search"])
def test_run_and_sweep_folders_carry_a_random_suffix(compose_cfg, config_name: str) -> None:
    """The suffix, not the clock, keeps folders apart; it is resolved once per config."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    compose_cfg()  # registers the resolvers
    GlobalHydra.instance().clear()
    with initialize_config_module("cxrnet.conf", version_base="1.3"):
        first = compose(config_name, return_hydra_config=True)
        second = compose(config_name, return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweep = str(first.hydra.sweep.dir)
    assert sweep == str(first.hydra.sweep.dir)  # cached: one sweep, one folder
    assert sweep != str(second.hydra.sweep.dir)  # another process, another folder
    if config_name == "train":
        assert str(first.hydra.run.dir) != str(second.hydra.run.dir)


def test_every_rank_of_a_multi_task_srun_shares_one_run_folder() -> None:
    from cxrnet.config import run_stamp

    rank = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "8"}
    argv = ["trainer=ddp", "seed=1"]
    assert run_stamp(rank | {"SLURM_PROCID": "0"}, argv) == run_stamp(
        rank | {"SLURM_PROCID": "7"}, argv
    )
    assert run_stamp(rank, argv).startswith("slurm-4242-step0-")
    assert run_stamp(rank | {"SLURM_STEP_ID": "1"}, argv) != run_stamp(rank, argv)
    # A requeued job runs its command again and must find its folder (and checkpoint) again;
    # another command in the same batch script gets another folder.
    single = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1"}
    assert run_stamp(single, argv) == run_stamp(single, argv)
    assert run_stamp(single, ["seed=2"]) != run_stamp(single, argv)
    array = single | {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}
    assert run_stamp(array, argv).startswith("slurm-4240_2-")
    # Outside Slurm: time and a random suffix; a stamp fixed by the parent process wins.
    assert run_stamp({}) != run_stamp({})
    assert run_stamp({"CXRNET_RUN_STAMP": "fixed"} | single) == "fixed"

"""Under DDP only rank 0 finds, checks and splits the films; the other ranks read its splits
(cxrnet.data.shared_splits) and train on the same records."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from helpers.console import QUICK, console_script, run_folder, run_train, script_env

from cxrnet.data.records import make_record
from cxrnet.data.shared_splits import (
    LAUNCH_ENV,
    SPLITS_FILE,
    SharedSplits,
    external_launch_id,
)
from cxrnet.user_errors import DataError


def _splits(folder: Path) -> dict[str, list]:
    return {
        "train": [
            make_record(folder / "a.jpeg", 1, "train", metadata={"view": "PA", "age": "7"}),
            make_record(folder / "IM-0001-0001.jpeg", 0, "train"),
        ],
        "val": [make_record(folder / "person3_virus_9.jpeg", 1, "val")],
    }


def test_the_other_ranks_receive_rank_0s_records_as_they_were(tmp_path: Path, monkeypatch) -> None:
    # Left by an earlier job of a sweep (monkeypatch puts the environment back afterwards).
    monkeypatch.setenv(LAUNCH_ENV, "earlier-job")
    splits = _splits(tmp_path)
    SharedSplits.for_this_process(tmp_path, 0).publish(splits)
    # Lightning's launcher starts rank 1 with rank 0's environment, its new launch id included.
    assert os.environ[LAUNCH_ENV] not in ("", "earlier-job")
    received = SharedSplits.for_this_process(tmp_path, 1).receive(timeout_s=5)
    assert received == splits
    assert received["train"][0].metadata == {"age": "7", "view": "PA"}


def test_a_rank_waits_for_its_own_launch_and_not_an_earlier_ones(tmp_path: Path) -> None:
    # An earlier launch in the same folder (a resumed run) left its splits behind.
    SharedSplits(tmp_path, 0, "old").publish({"train": _splits(tmp_path)["val"]})
    splits = _splits(tmp_path)
    later = threading.Timer(1.0, SharedSplits(tmp_path, 0, "new").publish, args=(splits,))
    later.start()
    try:
        assert SharedSplits(tmp_path, 1, "new").receive(timeout_s=30) == splits
    finally:
        later.join()


def test_a_rank_that_waits_in_vain_names_the_file_and_the_setting(tmp_path: Path) -> None:
    SharedSplits(tmp_path, 0, "old").publish(_splits(tmp_path))
    with pytest.raises(DataError, match=rf"rank 1 waited .*{SPLITS_FILE}.*DDP_SPLITS_TIMEOUT_S"):
        SharedSplits(tmp_path, 1, "new").receive(timeout_s=0.6)


def test_rank_0s_failure_reaches_the_waiting_ranks(tmp_path: Path) -> None:
    SharedSplits(tmp_path, 0, "slurm-7..0").publish_failure(DataError("no films under /data"))
    with pytest.raises(DataError, match=r"rank 0 could not resolve the splits: .*no films"):
        SharedSplits(tmp_path, 1, "slurm-7..0").receive(timeout_s=5)
    # Before Lightning's launcher started any rank, none waits: nothing is written.
    SharedSplits(tmp_path / "other", 0, None).publish_failure(DataError("x"))
    assert not (tmp_path / "other").exists()


def test_launchers_that_start_every_rank_give_them_one_id() -> None:
    srun = {"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2"}
    assert external_launch_id(srun) == "slurm-12.0.0"
    assert external_launch_id(srun | {"SLURM_RESTART_COUNT": "1"}) == "slurm-12.0.1"
    # One Slurm task whose ranks Lightning starts: they share rank 0's id instead.
    assert external_launch_id(srun | {"SLURM_STEP_NUM_TASKS": "1"}) is None
    assert external_launch_id({"TORCHELASTIC_RUN_ID": "r"}) == "torchrun-r.0"
    # Rank 0 never takes an id an earlier job of its sweep left in its environment.
    assert SharedSplits.for_this_process(Path("."), 0, {LAUNCH_ENV: "stale"}).launch is None
    assert SharedSplits.for_this_process(Path("."), 1, {LAUNCH_ENV: "x"}).launch == "x"


def _probed_ddp_args(synthetic_root: Path, tmp_path: Path) -> list[str]:
    return [
        *QUICK,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        f"data.root={synthetic_root}",
        "data.image_size=32",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "test=false",
        f"paths.log_dir={tmp_path / 'logs'}",
        "data._target_=helpers.records_probe.ProbedDataModule",
        f"+data.probe_dir={tmp_path / 'probe'}",
    ]


def _check_probe(probe: Path) -> None:
    """Rank 0 walked the data once, rank 1 never, and both set up the same records."""
    assert (probe / "walks_rank0.txt").read_text() == "walked\n"
    assert not (probe / "walks_rank1.txt").exists()
    rank0, rank1 = (json.loads((probe / f"records_rank{r}.json").read_text()) for r in (0, 1))
    assert rank0 == rank1
    assert set(rank0) == {"train", "val", "test"} and all(rank0.values())


@pytest.mark.slow
def test_under_ddp_only_rank_0_walks_the_data_and_both_ranks_train_on_its_records(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        _probed_ddp_args(synthetic_root, tmp_path),
        tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _check_probe(tmp_path / "probe")
    run_dir = run_folder(done.stdout)
    assert "received the splits from rank 0" in (run_dir / "train_rank1.log").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["extra"]["world_size"] == 2


@pytest.mark.slurm
@pytest.mark.slow
def test_ranks_srun_starts_at_once_wait_for_rank_0s_records(
    slurm_cluster, synthetic_root: Path, tmp_path: Path
) -> None:
    command = " ".join(
        [*console_script("cxrnet-train"), *_probed_ddp_args(synthetic_root, tmp_path)]
    )
    script = tmp_path / "ddp.sh"
    script.write_text(f"#!/bin/bash\nsrun {command}\n")
    env = script_env(tmp_path) | {
        "SLURM_CONF": slurm_cluster.env["SLURM_CONF"],
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    slurm_cluster.env = env
    job = slurm_cluster.sbatch(
        script,
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/slurm-%j.out",
    )
    info = slurm_cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
    output = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("slurm-*.out"))
    assert info["JobState"] == "COMPLETED", output
    _check_probe(tmp_path / "probe")
    (run_dir,) = (tmp_path / "logs" / "debug" / "runs").iterdir()
    splits = json.loads((run_dir / SPLITS_FILE).read_text())
    assert splits["launch"] == f"slurm-{job}.0.0"

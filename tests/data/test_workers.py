"""How many worker processes ``auto`` means: the CPUs the job was given, never the machine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cxrnet.data.workers import available_cpus, resolve_workers


def test_slurm_cpus_per_task_is_the_jobs_share() -> None:
    assert available_cpus({"SLURM_CPUS_PER_TASK": "6"}) == (6, "SLURM_CPUS_PER_TASK")


def test_without_slurm_the_affinity_mask_counts() -> None:
    cpus, source = available_cpus({})
    assert (cpus, source) == (len(os.sched_getaffinity(0)), "the affinity mask")


@pytest.mark.parametrize(
    ("value", "cpus", "cap", "expected"),
    [("auto", 2, 8, 2), ("auto", 64, 8, 8), ("auto", 64, 32, 32), (0, 64, 8, 0), (5, 1, 8, 5)],
)
def test_auto_is_the_cpus_up_to_the_cap_and_numbers_are_kept(value, cpus, cap, expected) -> None:
    assert resolve_workers(value, "data.num_workers", cpus, cap) == expected


@pytest.mark.parametrize("value", [-1, "many", True, 1.5])
def test_a_bad_worker_count_names_the_key(value) -> None:
    with pytest.raises(ValueError, match=r"data.decode_workers must be an integer >= 0"):
        resolve_workers(value, "data.decode_workers", 4, 8)


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity masks")
def test_the_data_module_defaults_follow_a_restricted_affinity_mask(tmp_path) -> None:
    # A process pinned to one core (as taskset or a Slurm binding would) gets one worker of
    # each kind, whatever the machine has; run in a child so this process keeps its cores.
    script = (
        "import json, os, sys\n"
        "os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from cxrnet.data.datamodule import ChestXRayDataModule\n"
        "dm = ChestXRayDataModule(sys.argv[1], num_workers='auto', decode_workers='auto')\n"
        "print(json.dumps([dm.num_workers, dm.decode_workers]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CPUS_PER_TASK"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1, 1]

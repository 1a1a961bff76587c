"""Which Slurm job a process runs in: one name for run folders, records and search workers."""

from __future__ import annotations

import os
from collections.abc import Mapping


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The job as Slurm's tools name it: ``<array job>_<task>`` for an array task, else the job
    id; None outside Slurm."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None

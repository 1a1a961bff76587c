"""A composed config (OmegaConf): the resolvers its files use, the run folder's stamp, and the
config turned into objects and into the run folder's ``config.yaml``.

Plain OmegaConf and ``hydra.utils.instantiate``: usable from any code that holds a config,
whether a Hydra app composed it or a test, a notebook or a tool reading a sweep did.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxrnet.runs.slurm import slurm_job_id


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    from hydra.utils import instantiate  # imported with the objects it builds, not at start-up

    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    """``config.yaml`` in ``output_dir``: the config with every interpolation resolved."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


# Set by the entry point before Hydra starts, so every process it starts (DDP ranks, submitit
# jobs, a requeued Slurm job, which inherits its submitter's environment) names one folder.
STAMP_ENV = "CXRNET_RUN_STAMP"


def run_stamp(environ: Mapping[str, str] | None = None, argv: Sequence[str] = ()) -> str:
    """The unique part of a run folder's name.

    Normally the start time plus a random suffix, so two jobs started in the same second differ.
    Under Slurm the job names it instead: every task of a multi-task ``srun`` runs the same
    command and must land in one folder, and a requeued job must find the folder (and the
    checkpoint) of its first attempt. The job step and a digest of the command line keep two
    different trainings in one batch script apart.
    """
    env = os.environ if environ is None else environ
    if env.get(STAMP_ENV):
        return env[STAMP_ENV]
    job = slurm_job_id(env) if env.get("SLURM_JOB_ID") else None
    if job:
        step = f"-step{env['SLURM_STEP_ID']}" if env.get("SLURM_STEP_ID") else ""
        digest = hashlib.sha1("\0".join(argv).encode()).hexdigest()[:6]
        return f"slurm-{job}{step}-{digest}"
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{uuid.uuid4().hex[:6]}"


def fix_run_stamp(argv: Sequence[str]) -> str:
    """Settle this command's stamp once, for itself and every process it starts."""
    return os.environ.setdefault(STAMP_ENV, run_stamp(argv=argv))


def register_resolvers() -> None:
    # Cached, so one process names one folder even though Hydra resolves the path several times.
    if not OmegaConf.has_resolver("cxrnet_stamp"):
        OmegaConf.register_new_resolver("cxrnet_stamp", run_stamp, use_cache=True)
    if not OmegaConf.has_resolver("cxrnet_monitor_mode"):
        # The default monitor_mode: the direction in which ``monitor`` improves.
        OmegaConf.register_new_resolver("cxrnet_monitor_mode", _monitor_mode)
    if not OmegaConf.has_resolver("cxrnet_uid"):
        OmegaConf.register_new_resolver("cxrnet_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)


def _monitor_mode(monitor: object) -> str:
    # Imported when a config is resolved, not when a command starts; the light module of names,
    # not cxrnet.evaluation.metrics (torchmetrics).
    from cxrnet.evaluation.metric_names import monitor_mode_for

    return monitor_mode_for(str(monitor))

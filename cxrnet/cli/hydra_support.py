"""What every Hydra entry point shares: config location, resolvers, groups, the job's overrides."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cxrnet.evaluation.metrics import monitor_mode_for
from cxrnet.hardware import AUTO_PRECISION, Precision, native_bf16, resolve_precision, run_device

log = logging.getLogger(__name__)

CONFIG_PATH = "pkg://cxrnet.conf"
HYDRA_VERSION = "1.3"

# Hydra 1.3 cannot mark a config option deprecated, so a renamed option keeps its file (which
# composes the new one) and choosing it warns through this table: (group, old option) -> new.
DEPRECATED_CHOICES: dict[tuple[str, str], str] = {
    ("model", "seed_cnn"): "model=classifier",
    ("model/net", "seed_cnn"): "model/net=notebook_cnn",
    ("experiment", "seed_baseline"): "experiment=notebook_baseline",
}


def warn_deprecated_choices(choices: Mapping[str, Any]) -> list[str]:
    """Warn about every deprecated config option in Hydra's ``runtime.choices``; returns them."""
    used = [
        f"{group}={option} is deprecated; use {new} (the same settings)"
        for (group, option), new in DEPRECATED_CHOICES.items()
        if choices.get(group) == option
    ]
    for message in used:
        warnings.warn(message, FutureWarning, stacklevel=2)
    return used


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
    if env.get("SLURM_JOB_ID"):
        job = env["SLURM_JOB_ID"]
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
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
        OmegaConf.register_new_resolver(
            "cxrnet_monitor_mode", lambda monitor: monitor_mode_for(str(monitor))
        )
    if not OmegaConf.has_resolver("cxrnet_uid"):
        OmegaConf.register_new_resolver("cxrnet_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


def job_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job; none outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def resolve_trainer_precision(cfg: DictConfig) -> Precision:
    """Replace ``trainer.precision: auto`` in ``cfg`` by what it means on the device the Trainer
    will use (``cxrnet.hardware``), saying so once; any other value is left as it is."""
    # Imported here: cxrnet-predict and cxrnet-export share this module and run without Lightning.
    from lightning.pytorch.utilities import rank_zero_only

    requested = cfg.trainer.get("precision")
    if requested != AUTO_PRECISION:
        return requested
    accelerator = cfg.trainer.get("accelerator", "auto")
    resolved = resolve_precision(requested, accelerator)
    cfg.trainer.precision = resolved
    # Every DDP rank resolves it alike (one machine, or nodes of one kind); rank 0 says so.
    if rank_zero_only.rank == 0:
        device = run_device(accelerator)
        native = "native" if native_bf16(device) else "no native"
        print(f"trainer.precision=auto: {resolved} ({native} bfloat16 on {device})", flush=True)
    return resolved

"""DDP ranks that Lightning starts by running the training command again.

Lightning's local DDP launcher starts ranks 1.. by running this process's command line again.
Two things make that command the wrong one for cxrnet: under ``-m`` it is the whole sweep, and a
run resumed from ``ckpt_path=<run>/checkpoints/last.ckpt`` must continue in that run's folder.
``local_ddp_job`` hands the ranks the job's own command line through the environment, and
``launch_arguments`` is what each process (rank 0 or another) then passes to Hydra.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from cxrnet.runs import Override
from cxrnet.training.resume import run_dir_of_checkpoint

# Set by rank 0 for the DDP ranks Lightning starts: the command line each rank must run.
DDP_JOB_ENV = "CXRNET_DDP_JOB"

# What Lightning sets in the environment of the process that starts DDP ranks itself.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", DDP_JOB_ENV)


@contextlib.contextmanager
def local_ddp_job(output_dir: Path, overrides: Sequence[str] | None) -> Iterator[None]:
    """One job's worth of DDP ranks started by Lightning, and nothing left over after it.

    ``overrides`` are the job's command-line overrides when it runs as a ``cxrnet-train``
    command the ranks can run again, else None. Under ``-m``, ``hydra.run.dir`` is not the job's
    folder, so every rank would start a sweep of its own in other folders; the ranks read this
    job's overrides and folder from the environment instead (``launch_arguments``).
    Lightning also leaves ``LOCAL_RANK`` and the process group behind, after which the next job
    of a sweep would think its ranks already exist: both are undone when the job ends.
    """
    if "LOCAL_RANK" in os.environ or overrides is None:
        yield  # a rank started by Lightning, srun or torchrun; or no command to run again
        return
    previous = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    os.environ[DDP_JOB_ENV] = json.dumps(
        [
            *overrides,
            f"hydra.run.dir={output_dir.resolve()}",
            # Rank 0 wrote the job's .hydra/ folder; the other ranks add none.
            "hydra.output_subdir=null",
        ]
    )
    try:
        yield
    finally:
        import torch  # here, not at the top: cxrnet-train reads launch_arguments before torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def launch_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The command-line arguments Hydra should see.

    A DDP rank started by Lightning runs its job's own overrides (see above). A run resumed
    from a checkpoint of a run folder, ``ckpt_path=<run>/checkpoints/last.ckpt``, continues in
    that folder (unless ``hydra.run.dir`` says otherwise), so it keeps one record.
    """
    if "LOCAL_RANK" in environ and environ.get(DDP_JOB_ENV):
        rank = environ["LOCAL_RANK"]
        return [*json.loads(environ[DDP_JOB_ENV]), f"hydra.job.name=train_rank{rank}"]
    arguments = list(argv)
    if any(arg in ("-m", "--multirun") for arg in arguments):
        return arguments
    overrides = [Override.parse(arg) for arg in arguments if not arg.startswith("-")]
    if any(override.key == "hydra.run.dir" for override in overrides):
        return arguments
    for override in overrides:
        if override.key == "ckpt_path" and override.value:
            run_dir = run_dir_of_checkpoint(override.value)
            if run_dir is not None:
                return [*arguments, f"hydra.run.dir={run_dir}"]
    return arguments

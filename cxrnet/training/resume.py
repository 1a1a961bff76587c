"""Where a run resumes from: the checkpoint to load and the run folder to continue in.

A run folder holds ``checkpoints/*.ckpt`` (the best and ``last.ckpt``: written at each epoch's
end, every N steps with ``callbacks.last_checkpoint.every_n_train_steps``, and when a run is
stopped by SIGTERM or Ctrl-C) and, after a Slurm pre-emption warning, Lightning's
``hpc_ckpt_<n>.ckpt`` at its top. Resuming continues in the same folder, so the run keeps one
record, one W&B run and the best score it had before.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cxrnet.user_errors import ConfigError

log = logging.getLogger(__name__)

# ckpt_path values that mean "the newest checkpoint of this run folder".
RESUME_LATEST = ("last", "auto")
CHECKPOINT_DIR = "checkpoints"


def run_checkpoints(run_dir: Path | str) -> list[Path]:
    """Every checkpoint a run folder holds, oldest first (by modification time)."""
    run_dir = Path(run_dir)
    found = [*run_dir.glob("hpc_ckpt_*.ckpt"), *(run_dir / CHECKPOINT_DIR).glob("*.ckpt")]
    return sorted(found, key=lambda path: (path.stat().st_mtime_ns, path.name))


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    found = run_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path | str) -> Path | None:
    """The checkpoint a run in ``run_dir`` starts from.

    ``ckpt_path`` is a file, ``last``/``auto`` (the newest checkpoint of ``run_dir``), or None:
    then a folder that already holds checkpoints (a requeued Slurm job, or a run started again
    in its own folder) resumes from the newest, and a fresh folder starts from scratch.
    """
    run_dir = Path(run_dir)
    if ckpt_path is None:
        found = latest_checkpoint(run_dir)
        if found is not None:
            log.info("%s already holds checkpoints: resuming from %s", run_dir, found)
        return found
    if str(ckpt_path) in RESUME_LATEST:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise ConfigError(
                f"ckpt_path={ckpt_path}: no checkpoint in {run_dir} or {run_dir / CHECKPOINT_DIR}; "
                "point hydra.run.dir at the run folder to resume, or pass "
                "ckpt_path=<run folder>/checkpoints/last.ckpt"
            )
        return found
    # A file: cxrnet.models.checkpoint.load_checkpoint says what is wrong with it, if anything.
    return Path(ckpt_path).expanduser()


def run_dir_of_checkpoint(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` or
    ``<run>/hpc_ckpt_1.ckpt``), or None for a checkpoint that lives elsewhere."""
    path = Path(ckpt_path).expanduser().resolve()
    if not path.is_file():
        return None
    for folder in (path.parent, path.parent.parent):
        if (folder / ".hydra").is_dir() and (
            path.parent == folder / CHECKPOINT_DIR or path.name.startswith("hpc_ckpt_")
        ):
            return folder
    return None

"""One training process at a time in a run folder: ``<run>/.train.lock``.

Two resumes of one run at once (``ckpt_path=<run>/checkpoints/last.ckpt`` twice, the same
``hydra.run.dir``) would both train into the same checkpoints, logs and record. The lock is an
``flock`` on the file, which the kernel drops when its holder exits however it exits (SIGKILL, a
lost node once the file server notices), so a Slurm requeue of the job, or a resume after a
crash, finds it free. Linux's NFS client maps ``flock`` onto NFS byte-range locks, so it holds
across nodes on a shared disk too. The file also holds the holder's pid, host and Slurm job for
the message the next process prints: a requeue of the same Slurm job waits for its previous
process to let go (a node still shutting down) instead of being refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from cxrnet.user_errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".train.lock"
# How long a requeued Slurm job waits for its previous process to release the folder.
REQUEUE_WAIT_S = 300.0


def _holder(handle: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(handle, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}  # the holder has locked the file but not yet written who it is


def _try_lock(handle: int) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "another process"
    text = f"process {holder.get('pid')} on host {holder.get('host')}"
    if holder.get("slurm_job_id"):
        text += f" (Slurm job {holder['slurm_job_id']})"
    return f"{text}, since {holder.get('since')}"


def _in_use(run_dir: Path, holder: dict[str, object]) -> ConfigError:
    return ConfigError(
        f"{run_dir} is in use: {_describe(holder)} trains in it ({run_dir / LOCK_NAME}); wait "
        "for it to end or stop it, or train in another folder (hydra.run.dir=...)"
    )


def refuse_if_held(run_dir: Path | str) -> None:
    """The ``ConfigError`` ``run_folder_lock`` would raise, at once and without taking the lock or
    making anything: for a check before anything is written into ``run_dir`` (Hydra writes its
    ``.hydra/`` there before a job starts). A holder of this process's Slurm job passes: the
    requeued job waits for it in ``run_folder_lock``."""
    path = Path(run_dir) / LOCK_NAME
    try:
        handle = os.open(path, os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError):
        return  # never trained in, or not a folder yet
    try:
        if _try_lock(handle):
            fcntl.flock(handle, fcntl.LOCK_UN)
            return
        holder = _holder(handle)
        job = os.environ.get("SLURM_JOB_ID")
        if not (job and holder.get("slurm_job_id") == job):
            raise _in_use(Path(run_dir), holder)
    finally:
        os.close(handle)


@contextlib.contextmanager
def run_folder_lock(run_dir: Path | str) -> Iterator[None]:
    """Hold ``run_dir`` for this process while it trains there; a ``ConfigError`` at once when
    another process does (a requeue of the same Slurm job waits up to ``REQUEUE_WAIT_S``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    # No O_TRUNC: a process that is refused must not erase the holder's name.
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        job = os.environ.get("SLURM_JOB_ID")
        deadline = time.monotonic() + REQUEUE_WAIT_S
        while not _try_lock(handle):
            holder = _holder(handle)
            if job and holder.get("slurm_job_id") == job and time.monotonic() < deadline:
                log.info("%s is still held by %s: waiting for it", run_dir, _describe(holder))
                time.sleep(5)
                continue
            raise _in_use(run_dir, holder)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job_id": job,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(me).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)

"""Worker processes: how many the job was given (``available_cpus``, ``resolve_workers``), and
the process pool that decodes and writes images in parallel (image cache, synthetic set)."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import cv2

# ``data.decode_workers`` and ``data.num_workers``: as many as the job's CPUs, up to a cap.
AUTO_WORKERS = "auto"
# Decoding scales with cores until the disk or the file system is the limit; a cap keeps a
# 128-core node from starting 128 readers against one shared file system. (Only 2 cores were
# measured here: the cap is a guard, not a measured optimum.)
MAX_DECODE_WORKERS = 32
# Loader workers only index the uint8 cache and augment; 8 keep a GPU fed at the seed's sizes,
# and each one holds a copy of the dataset's Python objects.
MAX_LOADER_WORKERS = 8

log = logging.getLogger(__name__)


def available_cpus(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The CPUs this process may use, and where that number came from.

    Slurm's ``SLURM_CPUS_PER_TASK`` first (the task's share, even where the affinity mask was
    not set), then the process's affinity mask (``taskset``, cgroups' cpusets, Slurm's binding),
    then every core of the machine.
    """
    env = os.environ if environ is None else environ
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "the affinity mask"
    return os.cpu_count() or 1, "os.cpu_count()"


def resolve_workers(value: int | str, key: str, cpus: int, cap: int) -> int:
    """``value`` as a number of worker processes: ``auto`` is ``cpus`` up to ``cap``."""
    if value == AUTO_WORKERS:
        return max(1, min(cpus, cap))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{key} must be an integer >= 0 (0 works in the main process) or {AUTO_WORKERS!r}, "
            f"got {value!r}"
        )
    return value


def _init_spawned_worker() -> None:
    # One process per core already; OpenCV's own threads would only fight over the same cores.
    cv2.setNumThreads(1)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, however that happens.

    A parent killed with ``kill -9`` (or by the out-of-memory killer) runs no cleanup: its
    forked workers stayed alive, blocked on the work queue, holding hundreds of MB each.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


@contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``workers`` processes for decoding or writing images, shut down on exit.

    On Linux the workers are forked: fork starts them in milliseconds and, unlike spawn, needs no
    ``__main__`` guard and does not re-import the caller's script (with torch and Lightning) in
    every worker. OpenCV runs without worker threads while the pool forks: a forked child
    inherits OpenCV's thread pool in whatever state the parent left it, and after the parent had
    resized large images a child's ``cv2.setNumThreads`` hung for good (OpenCV 5.0). Forked with
    zero threads, the children run OpenCV serially. Elsewhere the workers are spawned.

    Submit the work inside the ``with`` block: the pool forks its workers as work arrives. On an
    error or interrupt the queued work is dropped rather than finished first.
    """
    initargs: tuple[int, ...] = ()
    if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        initializer: Callable[..., None] = _die_with_parent
        initargs = (os.getpid(),)
    else:
        context = multiprocessing.get_context("spawn")
        initializer = _init_spawned_worker
    previous = cv2.getNumThreads()
    cv2.setNumThreads(0)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=initializer, initargs=initargs
    )
    try:
        yield pool
    finally:
        cv2.setNumThreads(previous)
        pool.shutdown(wait=True, cancel_futures=True)


def data_workers(decode: int | str, load: int | str) -> tuple[int, int]:
    """``data.decode_workers`` and ``data.num_workers`` as numbers of processes; ``auto`` is the
    CPUs this job was given (Slurm's share or the affinity mask), capped, and logged."""
    cpus, cpus_from = available_cpus()
    decoding = resolve_workers(decode, "data.decode_workers", cpus, MAX_DECODE_WORKERS)
    loading = resolve_workers(load, "data.num_workers", cpus, MAX_LOADER_WORKERS)
    if AUTO_WORKERS in (decode, load):
        log.info(
            "data workers: %d decoding, %d loading (%d CPUs available, from %s)",
            decoding,
            loading,
            cpus,
            cpus_from,
        )
    return decoding, loading

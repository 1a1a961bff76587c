"""The process pool that decodes and writes images in parallel (image cache, synthetic set)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

import cv2


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

"""Folders built whole or not at all, and built once when parallel jobs want the same one.

A build fills a hidden staging sibling, ``.<name>.partial-<pid>-<random>``, and the rename to
``<name>`` publishes it: a reader that looks for the final name never sees half a folder, and a
killed build leaves only a staging folder, which the next build of that name (holding the lock)
removes. ``build_once`` adds a file lock, ``.<name>.lock``, so parallel jobs (a sweep sharing an
image cache, ranks of a DDP job) build once and the others wait and reuse it.

Used by the decode-once image cache (``cxrnet.data.cache``) and the synthetic data set
(``cxrnet.data.synthetic``); their parallel workers come from ``process_pool``.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
from filelock import FileLock

log = logging.getLogger(__name__)

Fill = Callable[[Path], None]


def staging_glob(target: Path) -> str:
    """The pattern of ``target``'s staging folders, relative to its parent."""
    return f".{target.name}.partial-*"


def publish_folder(target: Path, fill: Fill) -> Path:
    """``fill(staging)``, then rename the staging folder to ``target`` (absent or empty).

    On any error, or an interrupt, the staging folder is removed and ``target`` is untouched.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        fill(staging)
        if target.exists():
            target.rmdir()  # only an empty folder: rename cannot replace a folder everywhere
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def remove_unfinished(target: Path) -> None:
    """Remove the staging folders of dead builds of ``target``; call it holding the lock."""
    for stale in target.parent.glob(staging_glob(target)):
        log.info("removing the unfinished build %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


def build_once(target: Path, fill: Fill, is_complete: Callable[[Path], bool]) -> bool:
    """Make sure a complete ``target`` exists; True when this call built it.

    ``is_complete`` is checked before and again under the lock, since another job may have
    finished the same build while this one waited. An existing ``target`` that is not complete
    (written by an older cxrnet, or by hand) is replaced.
    """
    if is_complete(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if is_complete(target):
            return False
        remove_unfinished(target)
        if target.exists():
            log.info("replacing the incomplete folder %s", target)
            shutil.rmtree(target)
        publish_folder(target, fill)
    return True


# --------------------------------------------------------------------------- worker processes


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

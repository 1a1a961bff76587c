"""Files and folders published whole or not at all; folders built once when parallel jobs want
the same one.

A file is written to a hidden temporary sibling and renamed over its name (``write_file``): a
reader sees the old file or the new one, never half of either, and a killed writer leaves the old
file whole. The run record and every JSON file (``write_json_atomic``), report.md
(``write_text``), checkpoints stamped with their operating point and ``last.ckpt`` are all
written this way.

A build fills a hidden staging sibling, ``.<name>.partial-<pid>-<random>``, and the rename to
``<name>`` publishes it: a reader that looks for the final name never sees half a folder, and a
killed build leaves only a staging folder, which the next build of that name (holding the lock)
removes. ``build_once`` adds a file lock, ``.<name>.lock``, so parallel jobs (a sweep sharing an
image cache, ranks of a DDP job) build once and the others wait and reuse it.

Used by the decode-once image cache (``cxrnet.data.cache``) and the synthetic data set
(``cxrnet.data.synthetic``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger(__name__)

Fill = Callable[[Path], None]


def write_file(path: Path | str, write: Fill) -> Path:
    """``write(temporary)``, then rename the temporary file to ``path``: whole or not at all.

    The temporary file is a hidden sibling (same folder, so the rename stays on one file system)
    and is removed on any error or interrupt; ``path`` then keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text(path: Path | str, text: str) -> Path:
    """A text file (a report, a summary) written whole or not at all."""
    return write_file(path, lambda temporary: temporary.write_text(text))


def json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON; write them as null rather than an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write a JSON file whole or not at all: a reader never sees half a file."""
    text = json.dumps(json_safe(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text(path, text + "\n")


def unwritable_reason(folder: Path | str) -> str | None:
    """Why ``folder`` cannot be made or written into (the OS's words), or None when it can: a
    file is created in it and removed, which catches read-only mounts and permissions alike."""
    folder = Path(folder).expanduser()
    probe = folder / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return str(error.strerror or error)
    return None


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

"""Decode every image once into a memory-mapped uint8 array that later runs reuse.

One folder per key under ``cache_dir``::

    <cache_dir>/<key>/images.npy   (N_kept, S, S) uint8, opened memory-mapped
                     /index.csv    one row per record: path, label, subtype, patient, size,
                                   mtime_ns, the image row (empty when skipped) and the reason
                     /meta.json    key inputs: decode parameters, decoder versions, counts
                     /COMPLETE     written last

The key covers every file's resolved path, size and mtime (in record order) together with the
decode parameters and decoder versions; change any and a new folder is built. A build writes
into a temporary sibling folder and renames it into place under a file lock, so parallel jobs
sharing a cache build it once and never read a half-written one. Labels are not in the key:
relabelling the same files reuses the pixels (index.csv keeps the labels seen at build time).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from filelock import FileLock
from numpy.lib.format import open_memmap
from tqdm import tqdm

from cxrnet.data.decode import BadImageError, DecodeParams, decode, decoder_fingerprint
from cxrnet.data.errors import DataError
from cxrnet.data.records import Record

log = logging.getLogger(__name__)

OnBadImage = Literal["error", "skip"]

CACHE_FORMAT = 1
IMAGES_FILE = "images.npy"
INDEX_FILE = "index.csv"
META_FILE = "meta.json"
COMPLETE_FILE = "COMPLETE"
_INDEX_COLUMNS = (
    "path",
    "label",
    "subtype",
    "patient",
    "source_split",
    "size",
    "mtime_ns",
    "row",
    "error",
)


@dataclass
class LoadedImages:
    images: np.ndarray  # (N, S, S) uint8, memory-mapped when cached
    records: list[Record]  # kept records, aligned with images
    skipped: list[tuple[Record, str]]  # (record, reason) for skipped bad files
    cache_path: Path | None = None  # the cache folder used; None when decoded in memory
    from_cache: bool = False  # True when an earlier build was reused and nothing was decoded


@dataclass(frozen=True)
class _Stamp:
    path: str  # resolved
    size: int  # -1 when the file cannot be stat'ed; decoding then says why
    mtime_ns: int


def _stamp(record: Record) -> _Stamp:
    resolved = Path(record.path).expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return _Stamp(str(resolved), -1, -1)
    return _Stamp(str(resolved), stat.st_size, stat.st_mtime_ns)


def _key(stamps: Sequence[_Stamp], params: DecodeParams) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "params": params.as_dict(),
        "decoder": decoder_fingerprint(),
        "files": [[s.path, s.size, s.mtime_ns] for s in stamps],
    }
    digest = hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()
    equalized = "-eq" if params.equalize else ""
    # A readable prefix so a person can tell the folders apart; the digest makes it unique.
    return f"{params.image_size}px-{params.resize}-{params.interpolation}{equalized}-{digest[:20]}"


def cache_key(records: Sequence[Record], params: DecodeParams) -> str:
    """The folder name ``load_images`` uses under ``cache_dir`` for these records and params."""
    return _key([_stamp(r) for r in records], params)


# ---------------------------------------------------------------------------------- decoding


def _init_spawned_worker() -> None:
    # One process per core already; OpenCV's own threads would only fight over the same cores.
    cv2.setNumThreads(1)


@contextmanager
def _opencv_threads_parked() -> Iterator[None]:
    """OpenCV without worker threads while the pool forks, restored afterwards.

    A forked child inherits OpenCV's thread pool in whatever state the parent left it: after the
    parent had resized large images, a child's ``cv2.setNumThreads`` hung for good on a condition
    variable whose waiters did not survive the fork (OpenCV 5.0). Forked with zero threads, the
    children run OpenCV serially and never touch the pool.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(0)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _start_pool(workers: int) -> ProcessPoolExecutor:
    if "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux":
        # fork starts workers in milliseconds and, unlike spawn, needs no __main__ guard and
        # does not re-import the caller's script (with torch and Lightning) in every worker.
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_spawned_worker,
    )


def _decode_or_reason(path: str, params: DecodeParams) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode(Path(path), params), None
    except BadImageError as error:
        return None, error.reason


def _decode_stream(
    paths: Sequence[str], params: DecodeParams, num_workers: int
) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """(image, None) or (None, reason) per path, in order."""
    work = partial(_decode_or_reason, params=params)
    workers = min(num_workers, len(paths))
    if workers <= 0:
        yield from map(work, paths)
        return
    # Chunks amortize inter-process overhead yet stay small enough to keep the bar moving.
    chunksize = max(1, min(16, len(paths) // (workers * 8)))
    pool = None
    try:
        with _opencv_threads_parked():
            pool = _start_pool(workers)
            # Submitting starts every forked worker now, while OpenCV's threads are parked.
            results = pool.map(work, paths, chunksize=chunksize)
        yield from results
    finally:
        if pool is not None:
            # On an error or interrupt, drop the queued work instead of decoding it all first.
            pool.shutdown(wait=True, cancel_futures=True)


def _decode_into(
    out: np.ndarray,
    paths: Sequence[str],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> list[str | None]:
    """Write decodable images into consecutive rows of ``out``; the reason per path or None."""
    reasons: list[str | None] = []
    row = 0
    bar = tqdm(total=len(paths), desc="decoding images", unit="img", disable=not progress)
    with bar:
        for image, reason in _decode_stream(paths, params, num_workers):
            if image is not None:
                out[row] = image
                row += 1
            reasons.append(reason)
            bar.update()
    return reasons


# ------------------------------------------------------------------------------ cache files


def _is_complete(entry: Path) -> bool:
    return (entry / COMPLETE_FILE).is_file()


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_index(
    path: Path,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    reasons: Sequence[str | None],
) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(_INDEX_COLUMNS)
        row = 0
        for record, stamp, reason in zip(records, stamps, reasons, strict=True):
            image_row = "" if reason else str(row)
            row += 0 if reason else 1
            writer.writerow(
                [
                    stamp.path,
                    record.label,
                    record.subtype,
                    record.patient,
                    record.source_split,
                    stamp.size,
                    stamp.mtime_ns,
                    image_row,
                    reason or "",
                ]
            )
        handle.flush()
        os.fsync(handle.fileno())


def _read_reasons(entry: Path, stamps: Sequence[_Stamp]) -> list[str | None]:
    with open(entry / INDEX_FILE, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if [row["path"] for row in rows] != [stamp.path for stamp in stamps]:
        raise DataError(
            f"image cache {entry} does not list the files it was keyed on (edited by hand?); "
            "delete that folder and run again to rebuild it"
        )
    return [row["error"] or None for row in rows]


def _keep_first_rows(path: Path, rows: int) -> None:
    """Shrink the .npy at ``path`` to its first ``rows`` images (bad files leave a tail)."""
    full = np.load(path, mmap_mode="r")
    smaller = path.with_name(f"kept-{path.name}")
    kept = open_memmap(smaller, mode="w+", dtype=np.uint8, shape=(rows, *full.shape[1:]))
    kept[:] = full[:rows]
    kept.flush()
    del kept, full
    os.replace(smaller, path)


def _remove_stale_builds(entry: Path) -> None:
    # Called under the key's lock: any temporary folder of this key is a build that died.
    for stale in entry.parent.glob(f".{entry.name}.tmp-*"):
        log.info("removing unfinished image cache build %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    if entry.exists() and not _is_complete(entry):
        shutil.rmtree(entry, ignore_errors=True)


def _build(
    entry: Path,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> None:
    _remove_stale_builds(entry)
    temporary = entry.with_name(f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir(parents=True)
    try:
        size = params.image_size
        images = open_memmap(
            temporary / IMAGES_FILE, mode="w+", dtype=np.uint8, shape=(len(records), size, size)
        )
        reasons = _decode_into(images, [s.path for s in stamps], params, num_workers, progress)
        images.flush()
        del images
        kept = sum(reason is None for reason in reasons)
        if kept < len(records):
            _keep_first_rows(temporary / IMAGES_FILE, kept)
        _write_index(temporary / INDEX_FILE, records, stamps, reasons)
        meta = {
            "format": CACHE_FORMAT,
            "key": entry.name,
            "params": params.as_dict(),
            "decoder": decoder_fingerprint(),
            "images": kept,
            "skipped": len(records) - kept,
        }
        _write_text(temporary / META_FILE, json.dumps(meta, indent=2) + "\n")
        _write_text(temporary / COMPLETE_FILE, "ok\n")
        # The rename is what publishes the entry: readers only look for the final name.
        os.rename(temporary, entry)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _open_cached(
    records: Sequence[Record],
    params: DecodeParams,
    cache_dir: Path,
    num_workers: int,
    progress: bool,
) -> tuple[np.ndarray, list[str | None], Path, bool]:
    stamps = [_stamp(r) for r in records]
    entry = cache_dir / _key(stamps, params)
    reused = _is_complete(entry)
    if not reused:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir / f".{entry.name}.lock")):
            # Another job may have finished the same build while this one waited for the lock.
            reused = _is_complete(entry)
            if not reused:
                log.info("decoding %d images into the cache %s", len(records), entry)
                _build(entry, records, stamps, params, num_workers, progress)
    if reused:
        log.info("reusing decoded images from %s", entry)
    images = np.load(entry / IMAGES_FILE, mmap_mode="r")
    return images, _read_reasons(entry, stamps), entry, reused


# ---------------------------------------------------------------------------------- the API


def _bad_files_message(bad: Sequence[tuple[Record, str]], total: int) -> str:
    lines = [f"  {record.path}: {reason}" for record, reason in bad]
    return (
        f"{len(bad)} of {total} image files cannot be decoded:\n"
        + "\n".join(lines)
        + "\nReplace or delete these files, or pass on_bad_image='skip' (config: "
        "data.on_bad_image=skip) to leave them out; every skipped file is reported."
    )


def load_images(
    records: Sequence[Record],
    params: DecodeParams,
    *,
    cache_dir: Path | str | None,
    num_workers: int = 0,
    on_bad_image: OnBadImage = "error",
    progress: bool = True,
) -> LoadedImages:
    """Decode ``records`` to a ``(N, S, S)`` uint8 array, reusing the cache when it matches.

    ``cache_dir`` None decodes in memory and writes nothing. ``num_workers`` processes decode in
    parallel (0: in this process); on Linux they are forked (see ``_opencv_threads_parked``),
    elsewhere spawned, which needs the usual ``if __name__ == "__main__":`` guard in scripts.
    A bad file raises ``DataError`` listing every bad file once
    all were tried (``on_bad_image="error"``) or is left out and reported in ``skipped``
    (``"skip"``); a reused cache reports the same files.
    """
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(
            f"num_workers must be an integer >= 0 (0 decodes in this process), got {num_workers!r}"
        )
    records = list(records)
    size = params.image_size
    if not records:
        return LoadedImages(np.empty((0, size, size), dtype=np.uint8), [], [])

    cache_path: Path | None = None
    from_cache = False
    if cache_dir is None:
        images = np.empty((len(records), size, size), dtype=np.uint8)
        paths = [str(Path(r.path).expanduser()) for r in records]
        reasons = _decode_into(images, paths, params, num_workers, progress)
        kept_count = sum(reason is None for reason in reasons)
        if kept_count < len(records):
            images = images[:kept_count].copy()
    else:
        images, reasons, cache_path, from_cache = _open_cached(
            records, params, Path(cache_dir).expanduser(), num_workers, progress
        )

    paired = list(zip(records, reasons, strict=True))
    bad = [(record, reason) for record, reason in paired if reason]
    if bad and on_bad_image == "error":
        raise DataError(_bad_files_message(bad, len(records)))
    for record, reason in bad:
        log.warning("skipping unreadable image %s: %s", record.path, reason)
    kept = [record for record, reason in paired if not reason]
    return LoadedImages(images, kept, bad, cache_path=cache_path, from_cache=from_cache)

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
import errno
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from cxrnet.data.decode import BadImageError, DecodeParams, decode, decoder_fingerprint
from cxrnet.data.files import Facts, FileFacts, RealFolders, facts_or_unreadable
from cxrnet.data.records import PATH_ERRORS, Record
from cxrnet.data.workers import process_pool
from cxrnet.publish import build_once
from cxrnet.user_errors import DataError

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


# The key's view of a file: resolved path, size (UNREADABLE when it cannot be stat'ed; decoding
# then says why) and mtime.
_Stamp = FileFacts


def _stamps(records: Sequence[Record], facts: Facts | None) -> list[_Stamp]:
    """Each record's facts: from ``facts`` (the walk that found the files) or one stat."""
    real_folders = RealFolders()
    known = facts or {}
    return [known.get(r.path) or facts_or_unreadable(r.path, real_folders) for r in records]


def _key(stamps: Sequence[_Stamp], params: DecodeParams) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "params": params.as_dict(),
        "decoder": decoder_fingerprint(s.path for s in stamps),
        "files": [[s.path, s.size, s.mtime_ns] for s in stamps],
    }
    digest = hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()
    equalized = {"none": "", "hist": "-eq", "clahe": "-clahe"}[str(params.equalize)]
    # A readable prefix so a person can tell the folders apart; the digest makes it unique.
    return f"{params.image_size}px-{params.resize}-{params.interpolation}{equalized}-{digest[:20]}"


def cache_key(records: Sequence[Record], params: DecodeParams, facts: Facts | None = None) -> str:
    """The folder name ``load_images`` uses under ``cache_dir`` for these records and params."""
    return _key(_stamps(records, facts), params)


# ---------------------------------------------------------------------------------- decoding


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
    with process_pool(workers) as pool:
        yield from pool.map(work, paths, chunksize=chunksize)


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
    with open(path, "w", encoding="utf-8", errors=PATH_ERRORS, newline="") as handle:
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
    with open(entry / INDEX_FILE, encoding="utf-8", errors=PATH_ERRORS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if [row["path"] for row in rows] != [stamp.path for stamp in stamps]:
        raise DataError(
            f"image cache {entry} does not list the files it was keyed on (edited by hand?); "
            "delete that folder and run again to rebuild it"
        )
    return [row["error"] or None for row in rows]


# A filesystem that cannot allocate ahead: compare the free space instead.
_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def _mapped_file(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy at ``path`` opened memory-mapped, its disk blocks allocated now.

    ``open_memmap`` makes a sparse file: on a full disk, writing through the map would kill the
    process with SIGBUS, with no message, leaving the staging folder behind. Allocating first
    turns a full disk into an error that says how much space is needed and how much is free.
    """
    images = open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    size = path.stat().st_size
    free = shutil.disk_usage(path.parent).free
    try:
        _allocate(path, size)
    except OSError as error:
        del images
        if error.errno in _NO_FALLOCATE and free >= size:
            return open_memmap(path, mode="r+")
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, *_NO_FALLOCATE):
            raise
        raise DataError(
            f"the image cache folder {path.parent.parent} is on a full disk: decoding these "
            f"images needs {_megabytes(size)} and {_megabytes(free)} is free there; free space "
            "there, or set CXRNET_CACHE_DIR (or paths.cache_dir / data.cache_dir) to a folder "
            "on a disk with room"
        ) from None
    return images


def _allocate(path: Path, size: int) -> None:
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _keep_first_rows(path: Path, rows: int) -> None:
    """Shrink the .npy at ``path`` to its first ``rows`` images (bad files leave a tail)."""
    full = np.load(path, mmap_mode="r")
    smaller = path.with_name(f"kept-{path.name}")
    kept = _mapped_file(smaller, (rows, *full.shape[1:]))
    kept[:] = full[:rows]
    kept.flush()
    del kept, full
    os.replace(smaller, path)


def _build(
    temporary: Path,
    key: str,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> None:
    """Decode into the staging folder ``temporary``; ``build_once`` publishes it as ``key``."""
    reasons = _decode_images(temporary, stamps, params, num_workers, progress)
    _finish(temporary, key, records, stamps, params, reasons)


def _decode_images(
    temporary: Path,
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> list[str | None]:
    """The films decoded into ``temporary``'s images file, the readable ones packed first in
    order and the file cut to them; per film, why it could not be decoded (None: it could).
    A whole cache's build and one shard's part (``cache_shards``) both fill theirs this way."""
    size = params.image_size
    images = _mapped_file(temporary / IMAGES_FILE, (len(stamps), size, size))
    reasons = _decode_into(images, [s.path for s in stamps], params, num_workers, progress)
    images.flush()
    del images
    kept = sum(reason is None for reason in reasons)
    if kept < len(stamps):
        _keep_first_rows(temporary / IMAGES_FILE, kept)
    return reasons


def _finish(
    temporary: Path,
    key: str,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    reasons: Sequence[str | None],
) -> None:
    """The index, meta and COMPLETE files beside the decoded images (one build or the parts of
    a sharded one, ``cxrnet.data.cache_shards``)."""
    kept = sum(reason is None for reason in reasons)
    _write_index(temporary / INDEX_FILE, records, stamps, reasons)
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "params": params.as_dict(),
        "decoder": decoder_fingerprint(s.path for s in stamps),
        "images": kept,
        "skipped": len(records) - kept,
    }
    _write_text(temporary / META_FILE, json.dumps(meta, indent=2) + "\n")
    _write_text(temporary / COMPLETE_FILE, "ok\n")


def _open_cached(
    records: Sequence[Record],
    params: DecodeParams,
    cache_dir: Path,
    num_workers: int,
    progress: bool,
    facts: Facts | None,
) -> tuple[np.ndarray, list[str | None], Path, bool]:
    stamps = _stamps(records, facts)
    entry = cache_dir / _key(stamps, params)

    def fill(temporary: Path) -> None:
        log.info("decoding %d images into the cache %s", len(records), entry)
        _build(temporary, entry.name, records, stamps, params, num_workers, progress)

    # Imported here: cache_shards builds on this module.
    from cxrnet.data.cache_shards import join_sharded_build

    # Tasks of a sharded build (cxrnet-cache shard=i/n) are decoding it: wait for them.
    decoded = join_sharded_build(entry, records, stamps, params, num_workers, progress)
    reused = not build_once(entry, fill, _is_complete) and not decoded
    reasons = _read_reasons(entry, stamps)
    if reused and _a_failure_decodes_now(stamps, reasons, params):
        # A failed decode is not the file's verdict: a permission fixed or a network drive back
        # leaves path, size and mtime (the key) as they were. Rebuild once the file reads.
        log.info("a file that could not be decoded before now decodes: rebuilding %s", entry)
        (entry / COMPLETE_FILE).unlink(missing_ok=True)
        reused = not build_once(entry, fill, _is_complete)
        reasons = _read_reasons(entry, stamps)
    if reused:
        log.info("reusing decoded images from %s", entry)
    images = np.load(entry / IMAGES_FILE, mmap_mode="r")
    return images, reasons, entry, reused


def _a_failure_decodes_now(
    stamps: Sequence[_Stamp], reasons: Sequence[str | None], params: DecodeParams
) -> bool:
    failed = [stamp.path for stamp, reason in zip(stamps, reasons, strict=True) if reason]
    return any(_decode_or_reason(path, params)[1] is None for path in failed)


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
    facts: Facts | None = None,
) -> LoadedImages:
    """Decode ``records`` to a ``(N, S, S)`` uint8 array, reusing the cache when it matches.

    ``cache_dir`` None decodes in memory and writes nothing. ``num_workers`` processes decode in
    parallel (0: in this process); on Linux they are forked (see ``_opencv_threads_parked``),
    elsewhere spawned, which needs the usual ``if __name__ == "__main__":`` guard in scripts.
    A bad file raises ``DataError`` listing every bad file once
    all were tried (``on_bad_image="error"``) or is left out and reported in ``skipped``
    (``"skip"``); a reused cache reports the same files. ``facts`` (by record path: from the
    walk that found the files, or ``trusted_facts``) spares the stat per file for the key.
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
            records, params, Path(cache_dir).expanduser(), num_workers, progress, facts
        )

    paired = list(zip(records, reasons, strict=True))
    bad = [(record, reason) for record, reason in paired if reason]
    if bad and on_bad_image == "error":
        raise DataError(_bad_files_message(bad, len(records)))
    for record, reason in bad:
        log.warning("skipping unreadable image %s: %s", record.path, reason)
    kept = [record for record, reason in paired if not reason]
    return LoadedImages(images, kept, bad, cache_path=cache_path, from_cache=from_cache)

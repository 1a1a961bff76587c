"""One entry of the image cache: its key, its files and how they are decoded and written.

The format ``cache`` builds, reuses and hands to runs, and that a sharded build
(``cache_shards``) writes in parts; apart from both so that neither imports the other.
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

import numpy as np
from numpy.lib.format import open_memmap
from tqdm import tqdm

from cxrnet.data.decode import BadImageError, DecodeParams, decode, decoder_fingerprint
from cxrnet.data.files import Facts, FileFacts, RealFolders, facts_or_unreadable
from cxrnet.data.records import PATH_ERRORS, Record
from cxrnet.data.workers import process_pool
from cxrnet.user_errors import DataError

log = logging.getLogger("cxrnet.data.cache")


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


@dataclass(frozen=True)
class Index:
    """The columns of an entry's ``index.csv`` a start reads: each film's resolved path, size,
    mtime and decode error ("" when it decoded), in the cache's order."""

    paths: list[str]
    sizes: list[int]
    mtimes: list[int]
    errors: list[str]


# The last index read, by its file's identity: a warm start reads it twice (the trusted facts of
# data.verify_files=false, then the decode errors), 377,000 rows in a public dataset. An entry is
# never edited in place (a rebuild renames a new folder in), so a new file is a new identity.
_last_index: tuple[tuple[str, int, int, int], Index] | None = None


def read_index(entry: Path) -> Index | None:
    """The index of the cache folder ``entry``; None when it lacks a column a start needs or a
    row is damaged (the caller then trusts nothing in it)."""
    global _last_index
    path = entry / INDEX_FILE
    info = path.stat()
    identity = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if _last_index is not None and _last_index[0] == identity:
        return _last_index[1]
    with open(path, encoding="utf-8", errors=PATH_ERRORS, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, [])
        if not {"path", "size", "mtime_ns", "error"} <= set(header):
            return None
        try:  # a row cut short (a damaged file) is an index that lists nothing to trust
            columns = list(zip(*rows, strict=True)) or [()] * len(header)
        except ValueError:
            return None
    at = {name: header.index(name) for name in ("path", "size", "mtime_ns", "error")}
    try:
        index = Index(
            list(columns[at["path"]]),
            [int(value) for value in columns[at["size"]]],
            [int(value) for value in columns[at["mtime_ns"]]],
            list(columns[at["error"]]),
        )
    except ValueError:
        return None
    _last_index = (identity, index)
    return index


def _read_reasons(entry: Path, stamps: Sequence[_Stamp]) -> list[str | None]:
    index = read_index(entry)
    if index is None or index.paths != [stamp.path for stamp in stamps]:
        raise DataError(
            f"image cache {entry} does not list the files it was keyed on (edited by hand?); "
            "delete that folder and run again to rebuild it"
        )
    return [error or None for error in index.errors]


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
        needed, available = megabytes(size, free)
        raise DataError(
            f"the image cache folder {path.parent.parent} is on a full disk: decoding these "
            f"images needs {needed} and {available} is free there; free space "
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


def megabytes(*sizes: int) -> list[str]:
    """Byte counts as MB with as many decimals as it takes for different sizes to read
    differently (0.1 MB needed and 0.1 MB free said nothing), up to single bytes."""
    for decimals in range(1, 7):
        texts = [f"{size / 1e6:.{decimals}f} MB" for size in sizes]
        if len(set(texts)) == len(set(sizes)):
            return texts
    return [f"{size} bytes" for size in sizes]


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

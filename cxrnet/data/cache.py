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

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from cxrnet.data.cache_entry import (
    COMPLETE_FILE,
    IMAGES_FILE,
    _build,
    _decode_into,
    _decode_or_reason,
    _is_complete,
    _key,
    _read_reasons,
    _Stamp,
    _stamps,
)
from cxrnet.data.cache_shards import Shard, build_shard, join_sharded_build
from cxrnet.data.decode import DecodeParams
from cxrnet.data.files import Facts
from cxrnet.data.records import Record
from cxrnet.publish import build_once
from cxrnet.user_errors import ConfigError, DataError

log = logging.getLogger(__name__)

OnBadImage = Literal["error", "skip"]


@dataclass
class LoadedImages:
    images: np.ndarray  # (N, S, S) uint8, memory-mapped when cached
    records: list[Record]  # kept records, aligned with images
    skipped: list[tuple[Record, str]]  # (record, reason) for skipped bad files
    cache_path: Path | None = None  # the cache folder used; None when decoded in memory
    from_cache: bool = False  # True when an earlier build was reused and nothing was decoded


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


def decode_order(records: Iterable[Record]) -> list[Record]:
    """The films in the order they are decoded and cached: by path, whatever the split, so every
    re-split (each k-fold fold, each seed) shares one cache."""
    return sorted(records, key=lambda record: str(record.path))


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


class CacheSource(Protocol):
    """What ``prepare_cache`` needs of a data module: the films, how to decode them, where."""

    cache_dir: Path | None
    decode_params: DecodeParams
    decode_workers: int

    def films_to_decode(self) -> list[Record]: ...


def prepare_cache(source: CacheSource, shard: Shard | None) -> str:
    """``cxrnet-cache``: the data module's image cache built, by this task alone (``shard``
    None; it also finishes a sharded build under way) or as task ``shard``; what was done, in a
    line."""
    if source.cache_dir is None:
        raise ConfigError(
            "data.cache_dir is null, so runs decode in memory and there is no cache to build; "
            "set data.cache_dir (default: ${paths.cache_dir}/images)"
        )
    records = source.films_to_decode()
    params, workers = source.decode_params, source.decode_workers
    if shard is not None:
        outcome = build_shard(records, params, source.cache_dir, shard, num_workers=workers)
        return outcome.describe(shard)
    # Bad films are kept out of the cache and reported, as the run would; the run's
    # data.on_bad_image decides whether they stop it.
    loaded = load_images(
        records, params, cache_dir=source.cache_dir, num_workers=workers, on_bad_image="skip"
    )
    how = "reused" if loaded.from_cache else "built"
    bad = f", {len(loaded.skipped)} could not be decoded" if loaded.skipped else ""
    return f"the cache {loaded.cache_path} is {how}: {len(records)} films{bad}"

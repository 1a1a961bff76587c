"""A first image cache built by several tasks at once (``cxrnet-cache shard=i/n``).

Decoding every film once is the long part of a first start at hundreds of thousands of films;
a Slurm job array shares it out. Task ``i`` of ``n`` decodes the ``i``-th contiguous range of
the films, in the cache's order, into a part of its own, and whichever task finishes the last
part assembles the parts, in order, into the usual cache folder (``cxrnet.data.cache``) and
publishes it under the usual lock. The result is the cache one process would build, byte for
byte; the parts are then removed::

    <cache_dir>/<key>.parts/plan.json            how many parts, of how many films
                           /part-<i>-of-<n>/     images.npy (the range's decodable films)
                                                 reasons.json (per film: null or why not)

Each part is built under its own lock and published by a rename (``cxrnet.publish``), so a part
is whole or absent and a task that is started twice decodes it once. A run that needs the cache
while such a build is under way joins it: it waits for the parts being decoded, decodes any
part no task has started (array tasks still queued, or killed), and assembles. Array tasks that
start after that find the cache built and stop.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrnet.data.cache_entry import (
    IMAGES_FILE,
    _decode_images,
    _finish,
    _is_complete,
    _key,
    _mapped_file,
    _Stamp,
    _stamps,
    _write_text,
)
from cxrnet.data.decode import DecodeParams
from cxrnet.data.records import Record
from cxrnet.publish import build_once, write_file
from cxrnet.user_errors import ConfigError, DataError

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
REASONS_FILE = "reasons.json"
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Task ``index`` (from 0) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: object, key: str = "shard") -> Shard:
        """``"i/n"``, as a job array passes it: ``shard=$SLURM_ARRAY_TASK_ID/n``."""
        match = _SHARD.match(str(text))
        if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
            raise ConfigError(
                f"{key}={text!r} must be i/n with 0 <= i < n, e.g. {key}=0/4 for the first of "
                f"four tasks (a Slurm job array: --array=0-3 and "
                f"{key}=$SLURM_ARRAY_TASK_ID/4)"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def films(self, total: int) -> range:
        """The positions of this task's films among ``total``: contiguous, so the parts in
        order are the films in order."""
        return range(self.index * total // self.count, (self.index + 1) * total // self.count)

    @property
    def name(self) -> str:
        return f"part-{self.index}-of-{self.count}"


@dataclass(frozen=True)
class ShardOutcome:
    entry: Path  # the cache folder
    decoded: int  # films this call decoded (0: its part or the cache was there already)
    published: bool  # this call assembled and published the cache
    complete: bool  # the cache is built (by this call or another)

    def describe(self, shard: Shard | None) -> str:
        task = f"shard {shard.index}/{shard.count}: " if shard else ""
        if self.published:
            return f"{task}decoded {self.decoded} films; published the cache {self.entry}"
        if self.complete:
            return f"{task}decoded {self.decoded} films; the cache {self.entry} is built"
        return (
            f"{task}decoded {self.decoded} films into {parts_folder(self.entry)}; the task "
            "that finishes the last part publishes the cache"
        )


def parts_folder(entry: Path) -> Path:
    return entry.with_name(f"{entry.name}.parts")


def _part_complete(part: Path) -> bool:
    return (part / REASONS_FILE).is_file()


def _read_plan(parts: Path) -> dict[str, int] | None:
    try:
        return json.loads((parts / PLAN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _plan(parts: Path, shard: Shard, films: int) -> None:
    """Record how the build is shared out, or check that this task's share agrees with it."""
    plan = {"parts": shard.count, "films": films}
    found = _read_plan(parts)
    if found is None:
        text = json.dumps(plan) + "\n"
        write_file(parts / PLAN_FILE, lambda temporary: temporary.write_text(text))
    elif found != plan:
        raise DataError(
            f"{parts} holds a build of {found['films']} films in {found['parts']} parts, and "
            f"this task was asked for part {shard.index} of {shard.count} of {films} films: "
            f"run every task with shard=i/{found['parts']}, or delete {parts} (no task of the "
            "other build running) to start again"
        )


def _decode_part(
    temporary: Path,
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> None:
    reasons = _decode_images(temporary, stamps, params, num_workers, progress)
    # Written last: a part with its reasons is complete.
    _write_text(temporary / REASONS_FILE, json.dumps(reasons) + "\n")


def _build_part(
    parts: Path,
    shard: Shard,
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> int:
    """Decode the shard's films into its part unless another task did; the films decoded."""
    mine = [stamps[i] for i in shard.films(len(stamps))]

    def fill(temporary: Path) -> None:
        log.info("decoding %d films into %s", len(mine), parts / shard.name)
        _decode_part(temporary, mine, params, num_workers, progress)

    return len(mine) if build_once(parts / shard.name, fill, _part_complete) else 0


def _assemble(
    entry: Path,
    parts: Path,
    count: int,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    params: DecodeParams,
) -> bool:
    """Publish the cache from its ``count`` parts (all complete); True when this call did."""
    names = [Shard(i, count).name for i in range(count)]

    def fill(temporary: Path) -> None:
        log.info("assembling the cache %s from %d parts", entry, count)
        reasons: list[str | None] = []
        for name in names:
            reasons += json.loads((parts / name / REASONS_FILE).read_text(encoding="utf-8"))
        if len(reasons) != len(records):
            raise DataError(
                f"the parts in {parts} hold {len(reasons)} films and the cache needs "
                f"{len(records)}; delete {parts} and build again"
            )
        size = params.image_size
        kept = sum(reason is None for reason in reasons)
        images = _mapped_file(temporary / IMAGES_FILE, (kept, size, size))
        row = 0
        for name in names:
            part = np.load(parts / name / IMAGES_FILE, mmap_mode="r")
            images[row : row + len(part)] = part
            row += len(part)
            del part
        images.flush()
        del images
        _finish(temporary, entry.name, records, stamps, params, reasons)

    published = build_once(entry, fill, _is_complete)
    shutil.rmtree(parts, ignore_errors=True)  # the cache is complete: the parts are spent
    return published


def build_shard(
    records: Sequence[Record],
    params: DecodeParams,
    cache_dir: Path | str,
    shard: Shard,
    *,
    num_workers: int = 0,
    progress: bool = True,
) -> ShardOutcome:
    """Task ``shard`` of a sharded first build of the cache of ``records`` (in the order the
    run decodes them) under ``cache_dir``; the task that completes the last part publishes."""
    records = list(records)
    stamps = _stamps(records, None)
    entry = Path(cache_dir).expanduser() / _key(stamps, params)
    if _is_complete(entry):
        return ShardOutcome(entry, 0, published=False, complete=True)
    parts = parts_folder(entry)
    _plan(parts, shard, len(records))
    decoded = _build_part(parts, shard, stamps, params, num_workers, progress)
    if _is_complete(entry):  # assembled meanwhile, by a task that saw every part but this one
        shutil.rmtree(parts, ignore_errors=True)
        return ShardOutcome(entry, decoded, published=False, complete=True)
    if not all(_part_complete(parts / Shard(i, shard.count).name) for i in range(shard.count)):
        return ShardOutcome(entry, decoded, published=False, complete=False)
    published = _assemble(entry, parts, shard.count, records, stamps, params)
    return ShardOutcome(entry, decoded, published=published, complete=True)


def join_sharded_build(
    entry: Path,
    records: Sequence[Record],
    stamps: Sequence[_Stamp],
    params: DecodeParams,
    num_workers: int,
    progress: bool,
) -> int:
    """Finish a sharded build of ``entry`` under way, if any: each part waited for (a task is
    decoding it) or decoded here (none is), then the cache assembled. The films decoded here."""
    parts = parts_folder(entry)
    plan = None if _is_complete(entry) else _read_plan(parts)
    if plan is None:
        return 0
    if plan.get("films") != len(records):
        raise DataError(
            f"{parts} holds a build of {plan.get('films')} films and this run's cache has "
            f"{len(records)}; delete {parts} (no cxrnet-cache task of it running) and run again"
        )
    count = int(plan["parts"])
    log.info("a sharded build of %s is under way: joining it", entry)
    decoded = sum(
        _build_part(parts, Shard(i, count), stamps, params, num_workers, progress)
        for i in range(count)
    )
    _assemble(entry, parts, count, records, stamps, params)
    return decoded

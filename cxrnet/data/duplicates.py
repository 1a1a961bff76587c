"""Byte-identical files: reported within a split, an error across train/val/test.

Files are grouped by size first, so only files that share a size are read and hashed (blake2b);
with a ``DigestStore`` beside the image cache (``cxrnet.data.digests``) a file is hashed once,
not at every start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.digests import DigestStore
from cxrnet.data.files import Facts
from cxrnet.data.records import Record
from cxrnet.user_errors import DataError


def _stat(path: Path, facts: Facts | None) -> tuple[int, int]:
    known = facts.get(path) if facts is not None else None
    if known is not None and known.readable:
        return known.size, known.mtime_ns
    try:
        stat = Path(path).stat()
    except OSError as error:
        raise DataError(f"cannot read {path} to look for duplicates: {error}") from error
    return stat.st_size, stat.st_mtime_ns


def find_duplicates(
    records: Iterable[Record],
    skip_unreadable: bool = False,
    digests: DigestStore | None = None,
    facts: Facts | None = None,
) -> list[list[Record]]:
    """Groups of two or more records whose files have identical bytes.

    Each group is sorted by path and the groups by their first path. The same file listed
    twice (say in two manifests) is a group of its own: it is the same picture twice.
    An unreadable file raises ``DataError``, or with ``skip_unreadable`` is left out here (the
    decoder then skips and reports it, as ``on_bad_image="skip"`` asks). ``digests`` supplies
    (and keeps) the digests of files seen before; without it every candidate is hashed.
    ``facts`` (by record path, from the walk that found the files) spares a stat per file.
    """
    digests = DigestStore() if digests is None else digests
    by_size: dict[int, list[tuple[Record, int]]] = defaultdict(list)
    for record in records:
        try:
            size, mtime_ns = _stat(record.path, facts)
        except DataError:
            if not skip_unreadable:
                raise
            continue
        by_size[size].append((record, mtime_ns))
    by_digest: dict[str, list[Record]] = defaultdict(list)
    for size, same_size in by_size.items():
        if len(same_size) < 2:
            continue
        for record, mtime_ns in same_size:
            try:
                digest = digests.digest(record.path, size, mtime_ns)
            except DataError:
                if not skip_unreadable:
                    raise
                continue
            by_digest[digest].append(record)
    groups = [sorted(g, key=lambda r: str(r.path)) for g in by_digest.values() if len(g) > 1]
    return sorted(groups, key=lambda g: str(g[0].path))


@dataclass
class DuplicateReport:
    """Duplicate groups split into those inside one split and those spanning splits."""

    within: dict[str, list[list[Record]]] = field(default_factory=dict)
    across: list[list[tuple[str, Record]]] = field(default_factory=list)

    @property
    def all_groups(self) -> list[list[Record]]:
        groups = [g for groups in self.within.values() for g in groups]
        groups += [[record for _, record in g] for g in self.across]
        return groups

    def summary(self) -> str:
        parts = [f"{len(groups)} group(s) in {split}" for split, groups in self.within.items()]
        parts.append(f"{len(self.across)} group(s) across splits")
        return "byte-identical duplicates: " + ", ".join(parts)


def _describe_across(groups: Sequence[Sequence[tuple[str, Record]]], limit: int) -> str:
    lines = [
        " = ".join(f"{record.path} ({split})" for split, record in group)
        for group in groups[:limit]
    ]
    if len(groups) > limit:
        lines.append(f"... and {len(groups) - limit} more group(s)")
    return "\n  ".join(lines)


def check_duplicates(
    splits: Mapping[str, Sequence[Record]],
    allow_cross_split: bool = False,
    limit: int = 20,
    skip_unreadable: bool = False,
    digests: DigestStore | None = None,
    facts: Facts | None = None,
) -> DuplicateReport:
    """Find duplicates in ``splits``; raise a DataError when a group spans two splits.

    A copy of one picture in train and in val or test lets the model be scored on what it
    trained on, so that is an error unless ``allow_cross_split`` says the user accepts it.
    """
    split_of = {id(record): split for split, items in splits.items() for record in items}
    everything = [record for items in splits.values() for record in items]
    report = DuplicateReport()
    groups = find_duplicates(
        everything, skip_unreadable=skip_unreadable, digests=digests, facts=facts
    )
    for group in groups:
        tagged = [(split_of[id(record)], record) for record in group]
        names = {split for split, _ in tagged}
        if len(names) == 1:
            report.within.setdefault(tagged[0][0], []).append(group)
        else:
            report.across.append(tagged)
    if report.across and not allow_cross_split:
        raise DataError(
            f"{len(report.across)} group(s) of byte-identical files span splits, so the same "
            f"picture would be trained on and evaluated:\n  "
            f"{_describe_across(report.across, limit)}\n"
            "Delete the extra copies, or pass allow_cross_split=True to accept the overlap."
        )
    return report

"""The per-source rules around a re-split: ``train_only_sources`` and ``source_train_size``.

Before the re-split, the films of training-only sources (``data.source_roles``: train) are taken
out, to join train whole afterwards (``split_off_train_only``). After it, ``keep_train_size``
keeps about N of a source's training films: whole patients, stratified by class and subtype,
taken in one fixed random order per stratum, so a smaller N keeps a subset of a larger N's films;
the rest is the split ``unused``. A setting naming a source no film comes from is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cxrnet.data.records import SPLIT_NAMES, Record
from cxrnet.data.sources import source_of
from cxrnet.data.split_groups import STREAM_TRAIN_SIZE, build_groups, by_stratum
from cxrnet.user_errors import DataError

# The name these warnings were always logged under (they were part of ``splits``), so that
# logging settings and tests that name it still see them.
log = logging.getLogger("cxrnet.data.splits")


def check_sources_named(
    setting: str,
    names: Iterable[str],
    records: Mapping[str, Sequence[Record]],
    sources: Iterable[str] = (),
) -> None:
    """``setting`` may name only sources some film comes from (of ``records``, or ``sources``):
    a misspelt name would otherwise change nothing, silently."""
    found = sorted({source_of(r) for items in records.values() for r in items} | set(sources))
    found = [name for name in found if name]
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise DataError(
            f"{setting} names source(s) {unknown} that no film comes from; the sources are "
            f"{found} (data.sources names them, or a root's folder name / manifest stem)"
        )


def split_off_train_only(
    records: Mapping[str, Sequence[Record]], train_only_sources: Iterable[str]
) -> tuple[dict[str, list[Record]], list[Record]]:
    """(the records to split, the films of ``train_only_sources``, which train as they are)."""
    names = set(train_only_sources)
    if not names:
        return {split: list(items) for split, items in records.items()}, []
    check_sources_named("data.source_roles", names, records)
    rest = {
        split: [r for r in items if source_of(r) not in names] for split, items in records.items()
    }
    # Every film of a training-only source trains, its test folder's too: that source is
    # training data, and the test split is the other sources' films.
    trained = [r for split in SPLIT_NAMES for r in records.get(split, []) if source_of(r) in names]
    tested = [r for r in records.get("test", []) if source_of(r) in names]
    if tested:
        log.warning(
            "data.source_roles: %d test film(s) of the training-only source(s) %s train too; "
            "the test split holds the other sources' films only",
            len(tested),
            sorted({source_of(r) for r in tested}),
        )
    if not rest.get("train") and not rest.get("val"):
        raise DataError(
            f"data.source_roles makes every source training-only ({sorted(names)}): no films are "
            "left to validate on; give at least one source the role split"
        )
    return {split: items for split, items in rest.items() if items or split == "train"}, trained


def _train_size_rng(split_seed: int, fold: int, source: str) -> np.random.Generator:
    """One source's stream: the same order for every N, apart for each seed, fold and source."""
    return np.random.default_rng([split_seed, STREAM_TRAIN_SIZE, fold, *source.encode("utf-8")])


def keep_train_size(
    train: Sequence[Record],
    sizes: Sequence[tuple[str, int | float]],
    *,
    split_seed: int,
    fold: int,
    duplicates: Sequence[Sequence[Record]] = (),
    sources: Iterable[str] = (),
) -> tuple[list[Record], list[Record]]:
    """(the training films kept, those ``sizes`` (``SplitConfig.source_train_size``) leaves out).

    Per source named there: its training films grouped by patient (with byte-identical copies),
    each (class, subtype) stratum in its own fixed random order, and of each the prefix closest
    to its share of the size (one patient at least where that share rounds to a film). The
    order does not depend on the size and the prefix only grows with it, so a smaller size keeps
    a subset of a larger one's films. The order is drawn from ``split_seed`` and ``fold`` (the
    k-fold fold, else 0). ``sources``: every source the data has (an unknown name in the setting
    is an error listing them).
    """
    if not sizes:
        return list(train), []
    named = {name for name, _ in sizes}
    check_sources_named("data.source_train_size", named, {"train": train}, sources)
    left_out: set[int] = set()
    for name, size in sizes:
        own = [r for r in train if source_of(r) == name]
        target = size * len(own) if isinstance(size, float) else float(size)
        if isinstance(size, int) and size >= len(own):
            log.warning(
                "data.source_train_size.%s=%d but source %s has %d training film(s) after the "
                "split: all of them train",
                name,
                size,
                name,
                len(own),
            )
            continue
        groups = build_groups(own, by_patient=True, duplicates=duplicates)
        rng = _train_size_rng(split_seed, fold, name)
        for indices in by_stratum(groups).values():
            order = [indices[p] for p in rng.permutation(len(indices))]
            counts = np.cumsum([0, *(len(groups[i]) for i in order)])
            wanted = int(np.floor(target * counts[-1] / len(own) + 0.5))  # half up
            # The prefix whose film count is closest to the stratum's share (the longer on a
            # tie, and one patient at least once the share is a film): it never shrinks as the
            # size grows, which keeps the sizes nested.
            distance = np.abs(counts - wanted)
            length = int(np.flatnonzero(distance == distance.min())[-1])
            length = max(length, 1) if wanted >= 1 else length
            left_out.update(id(record) for i in order[length:] for record in groups[i])
    kept = [r for r in train if id(r) not in left_out]
    unused = [r for r in train if id(r) in left_out]
    return kept, unused

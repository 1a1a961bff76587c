"""Turning discovered records into train/val/test: official folders, re-splits, k-fold, holdout.

Every re-split works on *groups* that must stay on one side: a patient's films (``patient``,
``kfold`` and the holdout) or a single file (``stratified``), joined with any byte-identical
copies passed as ``duplicates`` so the same picture never sits in train and val. Groups are
stratified by their (source, class, subtype), so bacterial and viral pneumonia keep their ratio
too, in every source (``data.sources``). A patient is a patient of one source: the same patient key
in two sources is two people.

Sources that ``train_only_sources`` names are taken out before any of this and all their films
(test folder too) join train in every split, fold and holdout: they are never in val or test.

The test folder is never re-split. A holdout is carved from train+val first, from its own random
stream, so it is the same for every split method, fold and val_fraction with one ``split_seed``.

``source_train_size`` then keeps about N of a source's training films (after every split above):
whole patients, stratified by class and subtype, taken in one fixed random order per stratum, so
the films a smaller N keeps are among those a larger N keeps (a learning curve adds films, never
swaps them). The films left out are the split ``unused``: listed, never decoded or scored.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from cxrnet.data.records import (
    CLASS_NAMES,
    PATH_ERRORS,
    SPLIT_NAMES,
    SUBTYPE_NAMES,
    UNKNOWN_SUBTYPE,
    UNUSED_SPLIT,
    Record,
    metadata_columns,
)
from cxrnet.data.sources import source_of
from cxrnet.publish import write_file
from cxrnet.user_errors import DataError

SplitName = Literal["official", "stratified", "patient", "kfold"]
SPLIT_METHODS: tuple[str, ...] = get_args(SplitName)
SPLIT_CSV_COLUMNS: tuple[str, ...] = (
    "file",
    "split",
    "label",
    "subtype",
    "patient",
    "source_split",
)

# Separate random streams: changing val_fraction or the fold must not move the holdout.
_STREAM_HOLDOUT = 1
_STREAM_VAL = 2
_STREAM_FOLDS = 3
_STREAM_TRAIN_SIZE = 4

Stratum = tuple[str, int, str]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """How to turn the discovered splits into train/val(/test); mirrors the ``data.*`` keys."""

    split: SplitName = "official"
    val_fraction: float = 0.2
    num_folds: int = 5
    fold: int = 0
    holdout_fraction: float = 0.0
    split_seed: int = 0
    # None: the holdout follows split_seed. Set it to keep one held-out set while split_seed
    # varies the validation split or the folds across repeats of a study.
    holdout_seed: int | None = None
    # Source splits (folders or manifest split values: train, val) whose films always go to val,
    # besides the re-split's val_fraction of the rest: e.g. the official val films, kept out of
    # training to choose the threshold on (threshold.films={source_split: val}). A holdout is
    # carved first, as always: films it took stay in test.
    keep_in_val: tuple[str, ...] = ()
    # Sources (``data.source_roles``: train) whose films are all training films (their test
    # folder's too): never in val, a fold's val, the holdout or test; the others split as above.
    train_only_sources: tuple[str, ...] = ()
    # ``data.source_train_size``: per source, the training films to keep, a count (an int >= 0)
    # or a fraction in (0, 1] of its training films; the rest is the split ``unused``. Given as
    # a mapping, kept as sorted (source, size) pairs.
    source_train_size: Mapping[str, int | float] | tuple[tuple[str, int | float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_train_size", _train_sizes(self.source_train_size))
        if self.split not in SPLIT_METHODS:
            raise DataError(f"split must be one of {', '.join(SPLIT_METHODS)}, got {self.split!r}")
        if not _is_number(self.val_fraction) or not 0 < self.val_fraction <= 0.5:
            raise DataError(f"val_fraction must be in (0, 0.5], got {self.val_fraction!r}")
        if not _is_int(self.num_folds) or self.num_folds < 2:
            raise DataError(f"num_folds must be an integer >= 2, got {self.num_folds!r}")
        if not _is_int(self.fold) or not 0 <= self.fold < self.num_folds:
            raise DataError(
                f"fold must be an integer in [0, num_folds) = [0, {self.num_folds}), "
                f"got {self.fold!r}"
            )
        if not _is_number(self.holdout_fraction) or not 0 <= self.holdout_fraction < 0.5:
            raise DataError(f"holdout_fraction must be in [0, 0.5), got {self.holdout_fraction!r}")
        if not _is_int(self.split_seed) or self.split_seed < 0:
            raise DataError(f"split_seed must be a non-negative integer, got {self.split_seed!r}")
        if self.holdout_seed is not None and (
            not _is_int(self.holdout_seed) or self.holdout_seed < 0
        ):
            raise DataError(
                f"holdout_seed must be null or a non-negative integer, got {self.holdout_seed!r}"
            )
        kept = self.keep_in_val
        if not isinstance(kept, tuple) or not set(kept) <= {"train", "val"}:
            raise DataError(
                f"keep_in_val must be a list of source splits among [train, val], got {kept!r}"
            )
        if kept and self.split == "official" and kept != ("val",):
            raise DataError(
                f"keep_in_val={list(kept)} moves training films to val, which data.split=official "
                "never does (its val is the val folder as given); use data.split=patient or "
                "stratified to keep them in val"
            )
        if kept and self.split == "kfold":
            # Each film is in one fold's val: the pooled out-of-fold predictions count it once.
            raise DataError(
                f"keep_in_val={list(kept)} would put the same films in every fold's val, and "
                "data.split=kfold gives each film one fold; set data.keep_in_val=[] for k-fold, "
                "or use data.split=patient"
            )


def _train_sizes(setting: object) -> tuple[tuple[str, int | float], ...]:
    """``data.source_train_size`` as sorted (source, size) pairs, every size checked."""
    if setting is None:
        return ()
    pairs = setting.items() if isinstance(setting, Mapping) else setting
    if not isinstance(pairs, Iterable) or isinstance(pairs, str):
        raise DataError(
            "data.source_train_size must be null or map source names to a number of training "
            f"films or a fraction of them, e.g. {{site: 200}} or {{site: 0.5}}; got {setting!r}"
        )
    sizes: dict[str, int | float] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise DataError(
                f"data.source_train_size must map source names to sizes, got {setting!r}"
            )
        name, size = pair
        # 0: none of its films train (the source only validates and tests): the learning
        # curve's first point, "what does choosing on my films alone give?"
        if _is_int(size) and size >= 0:
            sizes[str(name)] = int(size)
        elif _is_number(size) and not _is_int(size) and 0 < size <= 1:
            sizes[str(name)] = float(size)
        else:
            raise DataError(
                f"data.source_train_size.{name}={size!r}: give a number of training films (an "
                "integer >= 0) or a fraction of the source's training films in (0, 1]"
            )
    return tuple(sorted(sizes.items()))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def _path_key(record: Record) -> str:
    return str(record.path)


# --- grouping ---------------------------------------------------------------------------------


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:  # path compression
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, first: str, second: str) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            # The smaller name wins so the result does not depend on the order of unions.
            self.parent[max(a, b)] = min(a, b)


def build_groups(
    records: Sequence[Record],
    by_patient: bool,
    duplicates: Iterable[Sequence[Record]] = (),
) -> list[list[Record]]:
    """Records joined into units that must stay on one side of a split, in a fixed order.

    A unit is one patient (``by_patient``) or one file, merged with every byte-identical copy
    from ``duplicates``; the same path listed twice is always one unit.
    """
    node_of_path: dict[str, str] = {}
    union = _UnionFind()
    for record in records:
        path = _path_key(record)
        patient = f"{source_of(record)}\x00{record.patient}"
        node = f"patient:{patient}" if by_patient else f"file:{path}"
        if path in node_of_path:
            union.union(node_of_path[path], node)
        else:
            node_of_path[path] = node
        union.find(node)
    for group in duplicates:
        nodes = [node_of_path[_path_key(r)] for r in group if _path_key(r) in node_of_path]
        for node in nodes[1:]:
            union.union(nodes[0], node)
    members: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        members[union.find(node_of_path[_path_key(record)])].append(record)
    groups = [sorted(group, key=_path_key) for group in members.values()]
    return sorted(groups, key=lambda group: _path_key(group[0]))


def _stratum(group: Sequence[Record]) -> Stratum:
    counts = Counter((source_of(record), record.label, record.subtype) for record in group)
    # Majority (source, class, subtype); ties go to the smallest key so the choice is reproducible.
    return min(counts, key=lambda key: (-counts[key], key))


def _by_stratum(groups: Sequence[Sequence[Record]]) -> dict[Stratum, list[int]]:
    strata: dict[Stratum, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        strata[_stratum(group)].append(index)
    return dict(sorted(strata.items()))


def select_fraction(
    groups: Sequence[Sequence[Record]], fraction: float, rng: np.random.Generator
) -> set[int]:
    """Indices of groups holding about ``fraction`` of the images of every stratum."""
    chosen: set[int] = set()
    for indices in _by_stratum(groups).values():
        target = fraction * sum(len(groups[i]) for i in indices)
        taken = 0
        for position in rng.permutation(len(indices)):
            index = indices[position]
            size = len(groups[index])
            # Take a group whenever it brings the count closer to the target; keep scanning so
            # smaller groups later in the order can fill the gap a big one left.
            if abs(taken + size - target) < abs(taken - target):
                chosen.add(index)
                taken += size
    return chosen


def assign_folds(
    groups: Sequence[Sequence[Record]], num_folds: int, rng: np.random.Generator
) -> list[int]:
    """A fold in ``[0, num_folds)`` for every group, balancing each stratum across folds."""
    if len(groups) < num_folds:
        raise DataError(
            f"num_folds={num_folds} but train+val has only {len(groups)} patient group(s); "
            "lower num_folds or add data"
        )
    fold_of = [-1] * len(groups)
    totals = np.zeros(num_folds, dtype=np.int64)
    strata = _by_stratum(groups)
    # Big strata first, then the small ones fill whichever folds are still light overall.
    order = sorted(strata, key=lambda key: (-sum(len(groups[i]) for i in strata[key]), key))
    for key in order:
        indices = [strata[key][p] for p in rng.permutation(len(strata[key]))]
        # Largest groups first (stable, so equal sizes keep their random order): the greedy
        # fill then ends with small groups that even out the counts.
        indices.sort(key=lambda i: -len(groups[i]))
        in_stratum = np.zeros(num_folds, dtype=np.int64)
        priority = rng.permutation(num_folds)  # no fold is always first on ties
        for index in indices:
            fold = min(range(num_folds), key=lambda f: (in_stratum[f], totals[f], priority[f]))
            fold_of[index] = fold
            in_stratum[fold] += len(groups[index])
            totals[fold] += len(groups[index])
    return fold_of


# --- splitting --------------------------------------------------------------------------------


def _check_input(records: Mapping[str, Sequence[Record]]) -> None:
    unknown = sorted(set(records) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"unknown split name(s) {unknown}; expected keys among {SPLIT_NAMES}")
    if not records.get("train"):
        raise DataError(
            "no training images: the data needs a train folder or manifest rows with split=train"
        )


def _check_output(splits: Mapping[str, Sequence[Record]], config: SplitConfig) -> None:
    for split, items in splits.items():
        if split == UNUSED_SPLIT or (split == "test" and config.holdout_fraction == 0):
            continue  # the user's own test set is reported as it is, never judged here
        present = {record.label for record in items}
        for label, class_name in enumerate(CLASS_NAMES):
            if label not in present:
                sized = (
                    f", source_train_size {dict(config.source_train_size)}"
                    if split == "train" and config.source_train_size
                    else ""
                )
                raise DataError(
                    f"the {split} split has no {class_name} images after data.split="
                    f"{config.split} (fold {config.fold}, val_fraction {config.val_fraction}, "
                    f"holdout_fraction {config.holdout_fraction}{sized}); there are too few "
                    "images or patients of that class: add data, raise the fraction"
                    f"{' or the source_train_size' if sized else ''} or lower num_folds"
                )


def _take(groups: Sequence[Sequence[Record]], indices: Iterable[int]) -> list[Record]:
    return sorted((record for i in indices for record in groups[i]), key=_path_key)


def _carve_holdout(
    pool: list[Record], config: SplitConfig, duplicates: Sequence[Sequence[Record]]
) -> tuple[list[Record], list[Record]]:
    """(remaining pool, holdout): patient-grouped, stratified, from its own random stream."""
    groups = build_groups(pool, by_patient=True, duplicates=duplicates)
    chosen = select_fraction(
        groups,
        config.holdout_fraction,
        _rng(
            config.split_seed if config.holdout_seed is None else config.holdout_seed,
            _STREAM_HOLDOUT,
        ),
    )
    held = {id(record) for i in chosen for record in groups[i]}
    return [r for r in pool if id(r) not in held], _take(groups, chosen)


def _kept_in_val(
    pool: list[Record], config: SplitConfig, duplicates: Sequence[Sequence[Record]]
) -> tuple[list[Record], list[Record]]:
    """(the pool to re-split, the films ``keep_in_val`` sends to val). Whole groups move, as the
    re-split would group them (a patient, byte-identical copies), so none of their films trains."""
    if not config.keep_in_val or config.split == "official":
        return pool, []
    if not any(r.source_split in config.keep_in_val for r in pool):
        found = sorted({r.source_split for r in pool})
        raise DataError(
            f"data.keep_in_val={list(config.keep_in_val)} names no films: the train+val films "
            f"come from {found}; set data.keep_in_val to some of those, or [] to keep none"
        )
    groups = build_groups(pool, by_patient=config.split == "patient", duplicates=duplicates)
    kept = [i for i, g in enumerate(groups) if any(r.source_split in config.keep_in_val for r in g)]
    taken = {id(record) for i in kept for record in groups[i]}
    return [r for r in pool if id(r) not in taken], _take(groups, kept)


def _check_sources_named(
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


def _train_only(
    records: Mapping[str, Sequence[Record]], config: SplitConfig
) -> tuple[dict[str, list[Record]], list[Record]]:
    """(the records to split, the films of ``train_only_sources``, which train as they are)."""
    names = set(config.train_only_sources)
    if not names:
        return {split: list(items) for split, items in records.items()}, []
    _check_sources_named("data.source_roles", names, records)
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


def _train_size_rng(config: SplitConfig, source: str) -> np.random.Generator:
    """One source's stream: the same order for every N, apart for each seed, fold and source."""
    fold = config.fold if config.split == "kfold" else 0
    return np.random.default_rng(
        [config.split_seed, _STREAM_TRAIN_SIZE, fold, *source.encode("utf-8")]
    )


def keep_train_size(
    train: Sequence[Record],
    config: SplitConfig,
    duplicates: Sequence[Sequence[Record]] = (),
    sources: Iterable[str] = (),
) -> tuple[list[Record], list[Record]]:
    """(the training films kept, those ``config.source_train_size`` leaves out).

    Per source named there: its training films grouped by patient (with byte-identical copies),
    each (class, subtype) stratum in its own fixed random order, and of each the prefix closest
    to its share of the size (one patient at least where that share rounds to a film). The
    order does not depend on the size and the prefix only grows with it, so a smaller size keeps
    a subset of a larger one's films. ``sources``: every source the data has (an unknown name
    in the setting is an error listing them).
    """
    if not config.source_train_size:
        return list(train), []
    named = {name for name, _ in config.source_train_size}
    _check_sources_named("data.source_train_size", named, {"train": train}, sources)
    left_out: set[int] = set()
    for name, size in config.source_train_size:
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
        rng = _train_size_rng(config, name)
        for indices in _by_stratum(groups).values():
            order = [indices[p] for p in rng.permutation(len(indices))]
            sizes = np.cumsum([0, *(len(groups[i]) for i in order)])
            wanted = int(np.floor(target * sizes[-1] / len(own) + 0.5))  # half up
            # The prefix whose film count is closest to the stratum's share (the longer on a
            # tie, and one patient at least once the share is a film): it never shrinks as the
            # size grows, which keeps the sizes nested.
            distance = np.abs(sizes - wanted)
            length = int(np.flatnonzero(distance == distance.min())[-1])
            length = max(length, 1) if wanted >= 1 else length
            left_out.update(id(record) for i in order[length:] for record in groups[i])
    kept = [r for r in train if id(r) not in left_out]
    unused = [r for r in train if id(r) in left_out]
    return kept, unused


def make_splits(
    records: Mapping[str, Sequence[Record]],
    config: SplitConfig | None = None,
    duplicates: Sequence[Sequence[Record]] = (),
) -> dict[str, list[Record]]:
    """``train``, ``val`` and (when there is a test folder or a holdout) ``test`` records, and
    ``unused`` when ``source_train_size`` left training films out.

    ``duplicates`` are groups of byte-identical files (from ``find_duplicates``); passing them
    keeps each group on one side of every re-split.
    """
    config = config or SplitConfig()
    _check_input(records)
    sources = {source_of(r) for items in records.values() for r in items}
    records, trained = _train_only(records, config)
    test = list(records.get("test", []))
    if config.holdout_fraction > 0 and test:
        raise DataError(
            f"holdout_fraction={config.holdout_fraction} carves a test set from train+val, but "
            f"a test set already exists ({len(test)} images); choose one: set "
            "holdout_fraction=0 to use the test folder, or remove the test folder/rows"
        )
    pool = [*records.get("train", []), *records.get("val", [])]
    if config.holdout_fraction > 0:
        pool, test = _carve_holdout(pool, config, duplicates)

    pool, pinned = _kept_in_val(pool, config, duplicates)
    if config.split == "official":
        if not records.get("val"):
            raise DataError(
                "data.split=official needs a val folder (or manifest rows with split=val) and "
                "there is none; choose data.split=stratified, patient or kfold to carve one "
                "from train"
            )
        # Folders as given, less whatever the holdout took.
        kept = {id(record) for record in pool}
        train = [r for r in records["train"] if id(r) in kept]
        val = [r for r in records["val"] if id(r) in kept]
    elif config.split == "kfold":
        groups = build_groups(pool, by_patient=True, duplicates=duplicates)
        folds = assign_folds(groups, config.num_folds, _rng(config.split_seed, _STREAM_FOLDS))
        val = _take(groups, (i for i, f in enumerate(folds) if f == config.fold))
        train = _take(groups, (i for i, f in enumerate(folds) if f != config.fold))
    else:
        groups = build_groups(pool, by_patient=config.split == "patient", duplicates=duplicates)
        chosen = select_fraction(groups, config.val_fraction, _rng(config.split_seed, _STREAM_VAL))
        val = _take(groups, chosen)
        train = _take(groups, (i for i in range(len(groups)) if i not in chosen))

    if pinned:
        val = sorted([*val, *pinned], key=_path_key)
    if trained:
        train = sorted([*train, *trained], key=_path_key)
    train, unused = keep_train_size(train, config, duplicates, sources)
    splits = {"train": train, "val": val}
    if test:
        splits["test"] = test
    if unused:
        splits[UNUSED_SPLIT] = unused
    _check_output(splits, config)
    return splits


# --- reporting --------------------------------------------------------------------------------


def patient_overlap(splits: Mapping[str, Sequence[Record]]) -> dict[tuple[str, str], list[str]]:
    """Patients found in two splits, per pair of splits that share any (sorted)."""
    patients = {split: {_patient_name(r) for r in items} for split, items in splits.items()}
    names = list(splits)
    overlap: dict[tuple[str, str], list[str]] = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = patients[first] & patients[second]
            if shared:
                overlap[(first, second)] = sorted(shared)
    return overlap


def _patient_name(record: Record) -> str:
    """The patient as one name: ``source/patient`` for a film with a source, as the same key in
    two sources is two people."""
    source = source_of(record)
    return f"{source}/{record.patient}" if source else record.patient


def _ordered(splits: Mapping[str, Sequence[Record]]) -> list[str]:
    known = [s for s in SPLIT_NAMES if s in splits]
    return known + sorted(s for s in splits if s not in SPLIT_NAMES)


def count_table(splits: Mapping[str, Sequence[Record]]) -> list[dict[str, str | int]]:
    """One row per split: images, patients, images per class and per subtype."""
    with_unknown = any(r.subtype == UNKNOWN_SUBTYPE for items in splits.values() for r in items)
    subtypes = (*SUBTYPE_NAMES, UNKNOWN_SUBTYPE) if with_unknown else SUBTYPE_NAMES
    rows: list[dict[str, str | int]] = []
    for split in _ordered(splits):
        items = splits[split]
        labels = Counter(r.label for r in items)
        kinds = Counter(r.subtype for r in items)
        row: dict[str, str | int] = {
            "split": split,
            "images": len(items),
            "patients": len({(source_of(r), r.patient) for r in items}),
        }
        row.update({name: labels.get(label, 0) for label, name in enumerate(CLASS_NAMES)})
        row.update({name: kinds.get(name, 0) for name in subtypes})
        rows.append(row)
    return rows


def format_count_table(rows: Sequence[Mapping[str, str | int]]) -> str:
    """``count_table`` rows as an aligned plain-text table."""
    if not rows:
        return "(no splits)"
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def write_split_csv(path: Path, splits: Mapping[str, Sequence[Record]]) -> None:
    """One row per image: file, split, label, subtype, patient, source_split, then the films'
    metadata columns (view, age, source ...; "" where a film has no value).

    Paths are written absolute, so ``read_manifest`` reads the file back as the same splits
    with the same metadata (pin a split for a later run with ``data.split=official`` on that
    manifest); it skips the ``unused`` rows, so the films read back are the films the run used.
    """
    ordered = [(split, record) for split in _ordered(splits) for record in splits[split]]
    columns = metadata_columns([record for _, record in ordered])
    clash = sorted(set(columns) & set(SPLIT_CSV_COLUMNS))
    if clash:
        raise ValueError(f"metadata column(s) {clash} would overwrite split.csv's own columns")

    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
            writer = csv.writer(handle)
            writer.writerow([*SPLIT_CSV_COLUMNS, *columns])
            for index, (split, record) in enumerate(ordered):
                writer.writerow(
                    [
                        str(record.path.absolute()),
                        split,
                        record.class_name,
                        record.subtype,
                        record.patient,
                        record.source_split,
                        *(values[index] for values in columns.values()),
                    ]
                )

    write_file(path, write)

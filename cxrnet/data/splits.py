"""Turning discovered records into train/val/test: official folders, re-splits, k-fold, holdout.

Every re-split works on *groups* that must stay on one side: a patient's films (``patient``,
``kfold`` and the holdout) or a single file (``stratified``), joined with any byte-identical
copies passed as ``duplicates`` so the same picture never sits in train and val. Groups are
stratified by their (source, class, subtype), so bacterial and viral pneumonia keep their ratio
too, in every source (``data.sources``). A patient is a patient of one source: the same patient key
in two sources is two people. The groups and the seeded draws over them are ``split_groups``.

Sources that ``train_only_sources`` names are taken out before any of this and all their films
(test folder too) join train in every split, fold and holdout: they are never in val or test.

The test folder is never re-split. A holdout is carved from train+val first, from its own random
stream, so it is the same for every split method, fold and val_fraction with one ``split_seed``.

``source_train_size`` then keeps about N of a source's training films (after every split above):
whole patients, stratified by class and subtype, taken in one fixed random order per stratum, so
the films a smaller N keeps are among those a larger N keeps (a learning curve adds films, never
swaps them). The films left out are the split ``unused``: listed, never decoded or scored. Both
per-source rules are ``split_sources``; the counts and split.csv of the result, ``split_report``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from cxrnet.data.records import CLASS_NAMES, SPLIT_NAMES, UNUSED_SPLIT, Record
from cxrnet.data.sources import source_of
from cxrnet.data.split_groups import (
    STREAM_FOLDS,
    STREAM_HOLDOUT,
    STREAM_VAL,
    assign_folds,
    build_groups,
    path_key,
    records_of,
    select_fraction,
    stream_rng,
)
from cxrnet.data.split_sources import keep_train_size, split_off_train_only
from cxrnet.user_errors import DataError

SplitName = Literal["official", "stratified", "patient", "kfold"]
SPLIT_METHODS: tuple[str, ...] = get_args(SplitName)


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


def _carve_holdout(
    pool: list[Record], config: SplitConfig, duplicates: Sequence[Sequence[Record]]
) -> tuple[list[Record], list[Record]]:
    """(remaining pool, holdout): patient-grouped, stratified, from its own random stream."""
    groups = build_groups(pool, by_patient=True, duplicates=duplicates)
    chosen = select_fraction(
        groups,
        config.holdout_fraction,
        stream_rng(
            config.split_seed if config.holdout_seed is None else config.holdout_seed,
            STREAM_HOLDOUT,
        ),
    )
    held = {id(record) for i in chosen for record in groups[i]}
    return [r for r in pool if id(r) not in held], records_of(groups, chosen)


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
    return [r for r in pool if id(r) not in taken], records_of(groups, kept)


def _resplit(
    records: Mapping[str, Sequence[Record]],
    pool: list[Record],
    config: SplitConfig,
    duplicates: Sequence[Sequence[Record]],
) -> tuple[list[Record], list[Record]]:
    """(train, val) from ``pool``, the train+val films left after the holdout and keep_in_val,
    as ``config.split`` says: the folders as given, one k-fold fold, or a val_fraction re-split."""
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
        folds = assign_folds(groups, config.num_folds, stream_rng(config.split_seed, STREAM_FOLDS))
        val = records_of(groups, (i for i, f in enumerate(folds) if f == config.fold))
        train = records_of(groups, (i for i, f in enumerate(folds) if f != config.fold))
    else:
        groups = build_groups(pool, by_patient=config.split == "patient", duplicates=duplicates)
        rng = stream_rng(config.split_seed, STREAM_VAL)
        chosen = select_fraction(groups, config.val_fraction, rng)
        val = records_of(groups, chosen)
        train = records_of(groups, (i for i in range(len(groups)) if i not in chosen))
    return train, val


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
    records, trained = split_off_train_only(records, config.train_only_sources)
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
    train, val = _resplit(records, pool, config, duplicates)
    if pinned:
        val = sorted([*val, *pinned], key=path_key)
    if trained:
        train = sorted([*train, *trained], key=path_key)
    train, unused = keep_train_size(
        train,
        config.source_train_size,
        split_seed=config.split_seed,
        # A k-fold fold draws its own order (each fold's train differs); one split has fold 0.
        fold=config.fold if config.split == "kfold" else 0,
        duplicates=duplicates,
        sources=sources,
    )
    splits = {"train": train, "val": val}
    if test:
        splits["test"] = test
    if unused:
        splits[UNUSED_SPLIT] = unused
    _check_output(splits, config)
    return splits

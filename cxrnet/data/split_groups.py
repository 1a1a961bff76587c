"""The units a re-split moves whole and the seeded, stratified draws over them.

A group is one patient's films or one file, joined with its byte-identical copies
(``build_groups``); its stratum is its majority (source, class, subtype). ``select_fraction``
takes about a fraction of every stratum's films, ``assign_folds`` balances every stratum over
k folds. Each draw takes a generator from its own numbered random stream (``stream_rng``), so
changing one setting (val_fraction, the fold) never moves what another draw chose.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from cxrnet.data.records import Record
from cxrnet.data.sources import source_of
from cxrnet.user_errors import DataError

# Separate random streams: changing val_fraction or the fold must not move the holdout. Listed
# in one place so that no two draws share a stream.
STREAM_HOLDOUT = 1
STREAM_VAL = 2
STREAM_FOLDS = 3
STREAM_TRAIN_SIZE = 4

Stratum = tuple[str, int, str]


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of random stream ``stream`` for ``seed``."""
    return np.random.default_rng([int(seed), stream])


def path_key(record: Record) -> str:
    """The key records are ordered and matched by: the path as given."""
    return str(record.path)


def records_of(groups: Sequence[Sequence[Record]], indices: Iterable[int]) -> list[Record]:
    """The records of the groups at ``indices``, in path order."""
    return sorted((record for i in indices for record in groups[i]), key=path_key)


class _UnionFind:
    """Nodes joined into sets; a node never joined is its own set and is not stored (most
    patients are joined to nothing, and a public dataset has tens of thousands)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, node: str) -> str:
        parent = self.parent
        root = node
        while (up := parent.get(root, root)) != root:
            root = up
        while node != root:  # path compression
            parent[node], node = root, parent[node]
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
        path = str(record.path)
        node = f"patient:{source_of(record)}\x00{record.patient}" if by_patient else f"file:{path}"
        first = node_of_path.setdefault(path, node)
        if first != node:
            union.union(first, node)
    for group in duplicates:
        nodes = [node_of_path[path_key(r)] for r in group if path_key(r) in node_of_path]
        for node in nodes[1:]:
            union.union(nodes[0], node)
    members: dict[str, list[Record]] = defaultdict(list)
    find = union.find if union.parent else None  # nothing joined: every node is its own set
    for record in records:
        node = node_of_path[str(record.path)]
        members[find(node) if find else node].append(record)
    groups = [sorted(group, key=path_key) for group in members.values()]
    return sorted(groups, key=lambda group: path_key(group[0]))


def _stratum(group: Sequence[Record]) -> Stratum:
    counts = Counter((source_of(record), record.label, record.subtype) for record in group)
    # Majority (source, class, subtype); ties go to the smallest key so the choice is reproducible.
    return min(counts, key=lambda key: (-counts[key], key))


def by_stratum(groups: Sequence[Sequence[Record]]) -> dict[Stratum, list[int]]:
    """The indices of ``groups`` per stratum, strata in sorted order."""
    strata: dict[Stratum, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        strata[_stratum(group)].append(index)
    return dict(sorted(strata.items()))


def select_fraction(
    groups: Sequence[Sequence[Record]], fraction: float, rng: np.random.Generator
) -> set[int]:
    """Indices of groups holding about ``fraction`` of the images of every stratum."""
    chosen: set[int] = set()
    for indices in by_stratum(groups).values():
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
    strata = by_stratum(groups)
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

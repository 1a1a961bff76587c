"""What a run's splits hold, for people and for a later run: counts, patient overlap, split.csv.

``count_table`` counts images, patients, classes and subtypes per split;
``patient_overlap`` names the patients two splits share (none, after a patient re-split);
``write_split_csv`` lists every film with its split, a manifest that ``read_manifest`` reads
back as the same splits.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from cxrnet.data.records import (
    CLASS_NAMES,
    OTHER_ABNORMAL,
    PATH_ERRORS,
    SPLIT_NAMES,
    SUBTYPE_NAMES,
    UNKNOWN_SOURCE,
    UNKNOWN_SUBTYPE,
    Record,
    metadata_columns,
)
from cxrnet.data.sources import source_of
from cxrnet.publish import write_file

SPLIT_CSV_COLUMNS: tuple[str, ...] = (
    "file",
    "split",
    "label",
    "subtype",
    "patient",
    "source_split",
)


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
    """One row per split: images, patients, images per class and per subtype (OTHER_ABNORMAL,
    which data.task=findings trains on, where any film is of it)."""
    with_unknown = any(r.subtype == UNKNOWN_SUBTYPE for items in splits.values() for r in items)
    subtypes = (*SUBTYPE_NAMES, UNKNOWN_SUBTYPE) if with_unknown else SUBTYPE_NAMES
    classes = _classes(splits)
    rows: list[dict[str, str | int]] = []
    for split in _ordered(splits):
        items = splits[split]
        labels = Counter(r.class_name for r in items)
        kinds = Counter(r.subtype for r in items)
        row: dict[str, str | int] = {
            "split": split,
            "images": len(items),
            "patients": len({(source_of(r), r.patient) for r in items}),
        }
        row.update({name: labels.get(name, 0) for name in classes})
        row.update({name: kinds.get(name, 0) for name in subtypes})
        rows.append(row)
    return rows


def by_source(splits: Mapping[str, Sequence[Record]]) -> dict[str, dict[str, list[Record]]]:
    """Each source's own splits (every split, empty where the source has no film in it), by
    source name (``unknown`` for films without one), sorted."""
    names = sorted({source_of(r) or UNKNOWN_SOURCE for items in splits.values() for r in items})
    return {
        name: {
            split: [r for r in items if (source_of(r) or UNKNOWN_SOURCE) == name]
            for split, items in splits.items()
        }
        for name in names
    }


def source_class_table(splits: Mapping[str, Sequence[Record]]) -> list[dict[str, str | int]]:
    """One row per source and split it has films in: its films per class (what a clinician
    reads per population: which hospital, which dataset, gave how many of each class)."""
    classes = _classes(splits)  # the same columns for every source
    rows: list[dict[str, str | int]] = []
    for source, own in by_source(splits).items():
        for split in _ordered(own):
            if own[split]:
                labels = Counter(r.class_name for r in own[split])
                row: dict[str, str | int] = {"source": source, "split": split}
                row["images"] = len(own[split])
                rows.append(row | {name: labels.get(name, 0) for name in classes})
    return rows


def _classes(splits: Mapping[str, Sequence[Record]]) -> tuple[str, ...]:
    """The class columns: NORMAL, PNEUMONIA, and OTHER_ABNORMAL (which data.task=findings trains
    on) where any film is of it."""
    other = any(r.class_name == OTHER_ABNORMAL for items in splits.values() for r in items)
    return (*CLASS_NAMES, *([OTHER_ABNORMAL] if other else []))


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

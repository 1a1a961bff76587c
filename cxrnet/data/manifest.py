"""Records from a CSV manifest instead of folders, so other datasets can be added or combined.

Columns (header names in any case): ``path`` and ``label`` are required; ``patient_id``, ``split``,
``subtype`` and ``findings`` (``effusion|mass=0|nodule=-1``: ``cxrnet.data.findings``; under
``data.task=findings`` a label may be ``OTHER_ABNORMAL`` too) are optional. ``file`` and ``patient``
are read as ``path`` and ``patient_id``, so a CSV written by ``write_split_csv`` reads back as the
same splits (its ``source_split`` column is cxrnet's own and is not read). Every other column
(``source``, ``age``, ``sex``, ``view``, a site, boxes ...) is the films' metadata: kept on each
record (``Record.metadata``) under its name stripped and lowercased, an empty cell meaning unknown.
A DICOM film's header fills what its row leaves blank (``dicom_header``): the patient, ``view``,
``age`` and ``sex``; the row's own values win. Rows with split ``unused`` (training films that
``data.source_train_size`` left out of the run that wrote the split.csv) are not read, and their
number is logged: read back, a split.csv gives the films that run used.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.dicom_header import header_of
from cxrnet.data.discovery import discover
from cxrnet.data.files import Facts, RealFolders, path_facts
from cxrnet.data.findings import (
    CLASS_FINDINGS,
    FINDINGS_COLUMN,
    film_findings,
    findings_contradict_class,
    parse_findings_cell,
)
from cxrnet.data.other_classes import OtherFilm, other_film
from cxrnet.data.records import (
    CLASS_NAMES,
    IMAGE_SUFFIXES,
    PATH_ERRORS,
    SPLIT_NAMES,
    SUBTYPE_NAMES,
    UNKNOWN_SUBTYPE,
    UNUSED_SPLIT,
    Record,
    make_record,
)
from cxrnet.data.sources import combine_records
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = ("patient_id", "split", "subtype", FINDINGS_COLUMN)
_ALIASES = {"file": "path", "patient": "patient_id"}
# Written by write_split_csv beside split; the split itself is what a re-read starts from.
_IGNORED_COLUMNS = frozenset({"source_split"})
# Names the predictions files give their own columns: a manifest column of that name (a
# predictions file read as a manifest) is kept as input_<name> rather than lost beside them.
_RESERVED_NAMES = frozenset({"probability", "prediction"})
_LABEL_VALUES = {name.lower(): index for index, name in enumerate(CLASS_NAMES)} | {"0": 0, "1": 1}
_ALLOWED_LABELS = ", ".join([*CLASS_NAMES, "0", "1"])
_SUBTYPES = (*SUBTYPE_NAMES, UNKNOWN_SUBTYPE)
_MAX_LISTED = 20


def _metadata_name(raw: str) -> str:
    """A further column's name as records carry it: stripped, lowercased, and kept apart from
    the predictions files' own columns by an ``input_`` prefix."""
    name = raw.strip().lower()
    while name in _RESERVED_NAMES:
        name = f"input_{name}"
    return name


def _column_map(header: Sequence[str] | None, csv_path: Path) -> dict[str, str]:
    """Canonical column name -> the header's own spelling."""
    found: dict[str, str] = {}
    for raw in header or []:
        name = raw.strip().lower()
        canonical = _ALIASES.get(name, name)
        # A real "path" column wins over its alias "file" whatever the order.
        if canonical not in found or name == canonical:
            found[canonical] = raw
    missing = [column for column in REQUIRED_COLUMNS if column not in found]
    if missing:
        raise DataError(
            f"manifest {csv_path} lacks column(s) {', '.join(missing)} (header: "
            f"{', '.join(h.strip() for h in header or []) or 'empty'}); expected a header "
            f"row path,label[,patient_id][,split][,subtype]"
        )
    return found


def _metadata_map(header: Sequence[str] | None, csv_path: Path) -> dict[str, str]:
    """Metadata name -> the header's own spelling, for every column that is not a known one."""
    known = {*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, *_IGNORED_COLUMNS}
    found: dict[str, str] = {}
    for raw in header or []:
        name = raw.strip().lower()
        if not name or _ALIASES.get(name, name) in known:
            continue  # a known column (or an alias beside its real one), or an unnamed one
        key = _metadata_name(raw)
        if key in found:
            raise DataError(
                f"manifest {csv_path} has two columns named {found[key].strip()!r} and "
                f"{raw.strip()!r}; column names are read in any case: rename one"
            )
        found[key] = raw
    return found


def _unnamed_cells(row: Mapping[str | None, object]) -> int:
    """Non-empty cells under no header name (an empty name, or beyond the header's end)."""
    count = 0
    for key, value in row.items():
        if key is None:  # DictReader's rest key: a list of the cells past the header
            count += sum(1 for cell in value or [] if isinstance(cell, str) and cell.strip())
        elif not key.strip() and isinstance(value, str) and value.strip():
            count += 1
    return count


def _parse_label(value: str, finding_classes: bool = False) -> int | None:
    """The label's class index (pneumonia or not); with ``finding_classes`` (data.task=findings)
    the further classes of ``CLASS_FINDINGS`` too (OTHER_ABNORMAL: no pneumonia)."""
    label = _LABEL_VALUES.get(value.strip().lower())
    if label is None and finding_classes and value.strip().upper() in CLASS_FINDINGS:
        return int(CLASS_FINDINGS[value.strip().upper()]["pneumonia"])
    return label


def _class_name(raw_label: str, label: int) -> str:
    """The class a row's label names (``OTHER_ABNORMAL`` kept, 0/1 read as NORMAL/PNEUMONIA)."""
    raw = raw_label.strip().upper()
    return raw if raw in CLASS_FINDINGS or raw in CLASS_NAMES else CLASS_NAMES[label]


def _resolve(value: str, csv_dir: Path) -> Path:
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else csv_dir / path


def _patient_and_metadata(
    row: Mapping[str, str | None], metadata: Mapping[str, str], path: Path, patient_cell: str
) -> tuple[str | None, dict[str, str]]:
    """A film's patient and metadata: its row's further columns, whose blanks (and the columns
    it lacks) take the values of the film's DICOM header."""
    values = {name: (row.get(raw) or "").strip() for name, raw in metadata.items()}
    header = header_of(path)
    known = {name: value for name, value in values.items() if value}  # the row's values win
    return patient_cell or header.patient or None, {**header.fields, **known}


def _parse_row(
    row: Mapping[str, str | None],
    columns: Mapping[str, str],
    metadata: Mapping[str, str],
    csv_dir: Path,
    unsplit: str,
    facts: Facts | None,
    real_folders: RealFolders | None,
    finding_classes: bool = False,
) -> tuple[Record | None, list[str]]:
    """A record for one CSV row, or the problems with it (without the line prefix).

    ``real_folders`` None: the file is not checked (no stat); else its facts go into ``facts``.
    """

    def cell(name: str) -> str:
        return (row.get(columns[name]) or "").strip() if name in columns else ""

    problems: list[str] = []
    raw_path, raw_label = cell("path"), cell("label")
    path = _resolve(raw_path, csv_dir) if raw_path else None
    found = None
    if path is not None and real_folders is not None:
        with contextlib.suppress(OSError):  # a missing file is reported just below
            found = path_facts(path, real_folders)
    if path is None:
        problems.append("empty path")
    elif real_folders is not None and found is None:
        problems.append(f"file {path} not found (relative paths resolve against {csv_dir})")
    elif path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(f"{path} is not an image; expected {', '.join(sorted(IMAGE_SUFFIXES))}")
    label = _parse_label(raw_label, finding_classes)
    if label is None:
        problems.append(
            f"label {raw_label!r} is not one of {_ALLOWED_LABELS} (any case)"
            + (f"; {_OTHER_CLASS_HINT}" if raw_label else "")
        )
    split = cell("split").lower() or unsplit
    if split not in SPLIT_NAMES:
        problems.append(f"split {cell('split')!r} is not one of {', '.join(SPLIT_NAMES)}")
    subtype = cell("subtype").lower() or None
    if subtype is not None and subtype not in _SUBTYPES:
        problems.append(f"subtype {cell('subtype')!r} is not one of {', '.join(_SUBTYPES)}")
    elif subtype is not None and label is not None and (label == 0) != (subtype == "normal"):
        problems.append(f"subtype {subtype!r} contradicts label {CLASS_NAMES[label]}")
    given, finding_problems = parse_findings_cell(cell(FINDINGS_COLUMN))
    problems.extend(finding_problems)
    if label is not None and (
        why := findings_contradict_class(_class_name(raw_label, label), given)
    ):
        problems.append(f"findings {cell(FINDINGS_COLUMN)!r} contradict label {raw_label!r}: {why}")
    unnamed = _unnamed_cells(row)
    if unnamed:
        problems.append(f"{unnamed} value(s) in no named column; give every column a header name")
    if problems or path is None or label is None:
        return None, problems
    patient, fields = _patient_and_metadata(row, metadata, path, cell("patient_id"))
    findings = film_findings(_class_name(raw_label, label), given) if finding_classes else ()
    record = make_record(
        path, label, split, patient=patient, subtype=subtype, metadata=fields, findings=findings
    )
    if facts is not None and found is not None:
        facts[record.path] = found
    return record, []


# Training and re-splitting need every film to be NORMAL or PNEUMONIA; a test set can hold more.
_OTHER_CLASS_HINT = (
    "films of another class are scored only as a test set (cxrnet-eval data.root=<manifest>, "
    "reported as their own group): leave such rows out of training data, or set "
    "data.other_classes=ignore to list them in ignored.csv"
)


def _parse_other(
    row: Mapping[str, str | None],
    columns: Mapping[str, str],
    metadata: Mapping[str, str],
    csv_dir: Path,
    any_split: bool = False,
) -> tuple[OtherFilm | None, list[str]]:
    """A film of a class other than NORMAL/PNEUMONIA in a test set (of any split with
    ``any_split``: training data that lists such films as ignored), or the problems with its
    row; (None, []) for a row of either class (or without a label), which ``_parse_row`` reads."""

    def cell(name: str) -> str:
        return (row.get(columns[name]) or "").strip() if name in columns else ""

    raw_label = cell("label")
    if not raw_label or _parse_label(raw_label) is not None:
        return None, []
    raw_path = cell("path")
    path = _resolve(raw_path, csv_dir) if raw_path else None
    problems = []
    if path is None:
        problems.append("empty path")
    elif not path.is_file():
        problems.append(f"file {path} not found (relative paths resolve against {csv_dir})")
    elif path.suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(f"{path} is not an image; expected {', '.join(sorted(IMAGE_SUFFIXES))}")
    if not any_split and cell("split").lower() not in ("", "test"):
        problems.append(
            f"label {raw_label!r} on a split={cell('split')} row: films of classes other than "
            f"{_ALLOWED_LABELS} may only be test films (split empty or test)"
        )
    if problems or path is None:
        return None, problems
    # The row's further columns as _parse_row keeps them (its blanks take a DICOM header's).
    patient, fields = _patient_and_metadata(row, metadata, path, cell("patient_id"))
    return other_film(path, raw_label, patient, fields), []


def _raise_problems(csv_path: Path, problems: list[str]) -> None:
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DataError(f"manifest {csv_path} has {len(problems)} problem(s):\n  {listed}{more}")


@dataclass(frozen=True)
class _RowReader:
    """Reads one manifest's rows: its columns, where relative paths start, and the settings."""

    columns: Mapping[str, str]
    metadata: Mapping[str, str]
    csv_dir: Path
    unsplit: str
    facts: Facts | None
    real_folders: RealFolders | None
    # Whether rows of another class are read as OtherFilms (read_manifest's ``others`` given).
    read_others: bool
    others_any_split: bool
    # data.task=findings: OTHER_ABNORMAL rows are films to train on, and each record carries
    # its findings (cxrnet.data.findings).
    finding_classes: bool = False

    def is_unused(self, row: Mapping[str, str | None]) -> bool:
        """A row of the split ``unused``: a film a source_train_size run left out."""
        split = row.get(self.columns["split"]) if "split" in self.columns else None
        return (split or "").strip().lower() == UNUSED_SPLIT

    def film(self, row: Mapping[str, str | None]) -> tuple[Record | OtherFilm | None, list[str]]:
        """The row's film (a Record, or an OtherFilm of another class), or its problems."""
        label = (row.get(self.columns["label"]) or "").strip()
        other, problems = (
            _parse_other(row, self.columns, self.metadata, self.csv_dir, self.others_any_split)
            if self.read_others and _parse_label(label, self.finding_classes) is None
            else (None, [])
        )
        if other is not None or problems:
            return other, problems
        return _parse_row(
            row,
            self.columns,
            self.metadata,
            self.csv_dir,
            self.unsplit,
            self.facts,
            self.real_folders,
            self.finding_classes,
        )


@dataclass
class _Listing:
    """What a manifest's rows add up to: the records per split, the films of other classes, every
    problem (each with its line), the line each file was first listed on, the unused rows."""

    # The caller's list (read_manifest's ``others``): the films of other classes are added to it.
    others: list[OtherFilm]
    records: dict[str, list[Record]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    first_line: dict[Path, int] = field(default_factory=dict)
    unused: int = 0

    def add(self, line: int, film: Record | OtherFilm | None, problems: Sequence[str]) -> None:
        """The film on ``line`` (None when the row has problems); a file listed twice is one."""
        self.problems.extend(f"line {line}: {problem}" for problem in problems)
        if film is None:
            return
        if film.path in self.first_line:
            self.problems.append(
                f"line {line}: {film.path} is already listed on line "
                f"{self.first_line[film.path]}; list each file once"
            )
            return
        self.first_line[film.path] = line
        if isinstance(film, OtherFilm):
            self.others.append(film)
        else:
            self.records.setdefault(film.source_split, []).append(film)

    def result(self, csv_path: Path) -> dict[str, list[Record]]:
        """The records per split, in split order; a DataError listing the problems if any."""
        if self.problems:
            _raise_problems(csv_path, self.problems)
        if self.unused:
            log.info(
                "manifest %s: %d row(s) with split=unused (films data.source_train_size left "
                "out) are not read",
                csv_path,
                self.unused,
            )
        if not self.records:
            raise DataError(f"manifest {csv_path} lists no images; add rows path,label")
        return {split: self.records[split] for split in SPLIT_NAMES if split in self.records}


def read_manifest(
    csv_path: Path,
    unsplit: str = "train",
    others: list[OtherFilm] | None = None,
    facts: Facts | None = None,
    check_files: bool = True,
    others_any_split: bool = False,
    finding_classes: bool = False,
) -> dict[str, list[Record]]:
    """Records per split listed in ``csv_path``; rows without a split go to ``unsplit``
    (``train``: training data to re-split; ``test``: an external site scored as it is).
    With ``others``, test rows of another class (``OTHER_ABNORMAL``) are added to it rather
    than refused (they are reported as their own group, never as NORMAL or PNEUMONIA); rows of
    any split with ``others_any_split`` (``data.other_classes=ignore``: listed as ignored).
    ``finding_classes`` (``data.task=findings``): rows of ``CLASS_FINDINGS``' classes
    (OTHER_ABNORMAL) are films to train on, and each record carries its findings.

    Each listed file must exist: one stat per row checks it, and ``facts``, when given,
    receives its ``FileFacts`` from that stat. ``check_files=False`` (a warm start that trusts
    the image cache, ``data.verify_files=false``) stats no file.

    Every bad row is reported at once, each with its line number, so a CSV is fixed in one go.
    """
    csv_path = Path(csv_path).expanduser()
    if not csv_path.is_file():
        raise DataError(
            f"manifest {csv_path} not found; data.root must name a CSV file or a folder"
        )
    listing = _Listing([] if others is None else others)
    # utf-8-sig: spreadsheet programs put a byte-order mark before the header.
    with csv_path.open(newline="", encoding="utf-8-sig", errors=PATH_ERRORS) as handle:
        reader = csv.DictReader(handle)
        rows = _RowReader(
            columns=_column_map(reader.fieldnames, csv_path),
            metadata=_metadata_map(reader.fieldnames, csv_path),
            csv_dir=csv_path.absolute().parent,
            unsplit=unsplit,
            facts=facts,
            real_folders=RealFolders() if check_files else None,
            read_others=others is not None,
            others_any_split=others_any_split,
            finding_classes=finding_classes,
        )
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue  # blank lines between blocks are harmless
            if rows.is_unused(row):
                listing.unused += 1
                continue
            listing.add(reader.line_num, *rows.film(row))
    return listing.result(csv_path)


def load_records(sources: Path | str | Sequence[Path | str]) -> dict[str, list[Record]]:
    """Records from a folder layout, a CSV manifest, or several of either combined."""
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not items:
        raise DataError("no data source given; set data.root to a folder or a CSV manifest")
    parts = []
    for item in items:
        path = Path(item).expanduser()
        parts.append(read_manifest(path) if path.suffix.lower() == ".csv" else discover(path))
    return combine_records(*parts)

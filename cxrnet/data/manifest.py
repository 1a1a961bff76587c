"""Records from a CSV manifest instead of folders, so other datasets can be added or combined.

Columns (header names in any case): ``path`` and ``label`` are required; ``patient_id``,
``split`` and ``subtype`` are optional. ``file`` and ``patient`` are read as ``path`` and
``patient_id``, so a CSV written by ``write_split_csv`` reads back as the same splits.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from cxrnet.data.discovery import discover
from cxrnet.data.files import Facts, RealFolders, path_facts
from cxrnet.data.records import (
    CLASS_NAMES,
    IMAGE_SUFFIXES,
    PATH_ERRORS,
    SPLIT_NAMES,
    SUBTYPE_NAMES,
    UNKNOWN_SUBTYPE,
    Record,
    make_record,
)
from cxrnet.user_errors import DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = ("patient_id", "split", "subtype")
_ALIASES = {"file": "path", "patient": "patient_id"}
_LABEL_VALUES = {name.lower(): index for index, name in enumerate(CLASS_NAMES)} | {"0": 0, "1": 1}
_ALLOWED_LABELS = ", ".join([*CLASS_NAMES, "0", "1"])
_SUBTYPES = (*SUBTYPE_NAMES, UNKNOWN_SUBTYPE)
_MAX_LISTED = 20


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


def _parse_label(value: str) -> int | None:
    return _LABEL_VALUES.get(value.strip().lower())


def _resolve(value: str, csv_dir: Path) -> Path:
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else csv_dir / path


def _parse_row(
    row: Mapping[str, str | None],
    columns: Mapping[str, str],
    csv_dir: Path,
    unsplit: str,
    facts: Facts | None,
    real_folders: RealFolders | None,
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
    label = _parse_label(raw_label)
    if label is None:
        problems.append(f"label {raw_label!r} is not one of {_ALLOWED_LABELS} (any case)")
    split = cell("split").lower() or unsplit
    if split not in SPLIT_NAMES:
        problems.append(f"split {cell('split')!r} is not one of {', '.join(SPLIT_NAMES)}")
    subtype = cell("subtype").lower() or None
    if subtype is not None and subtype not in _SUBTYPES:
        problems.append(f"subtype {cell('subtype')!r} is not one of {', '.join(_SUBTYPES)}")
    elif subtype is not None and label is not None and (label == 0) != (subtype == "normal"):
        problems.append(f"subtype {subtype!r} contradicts label {CLASS_NAMES[label]}")
    if problems or path is None or label is None:
        return None, problems
    record = make_record(path, label, split, patient=cell("patient_id") or None, subtype=subtype)
    if facts is not None and found is not None:
        facts[record.path] = found
    return record, []


def _raise_problems(csv_path: Path, problems: list[str]) -> None:
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DataError(f"manifest {csv_path} has {len(problems)} problem(s):\n  {listed}{more}")


def read_manifest(
    csv_path: Path,
    unsplit: str = "train",
    facts: Facts | None = None,
    check_files: bool = True,
) -> dict[str, list[Record]]:
    """Records per split listed in ``csv_path``; rows without a split go to ``unsplit``
    (``train``: training data to re-split; ``test``: an external site scored as it is).

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
    csv_dir = csv_path.absolute().parent
    records: dict[str, list[Record]] = {}
    problems: list[str] = []
    first_line: dict[Path, int] = {}
    real_folders = RealFolders() if check_files else None
    # utf-8-sig: spreadsheet programs put a byte-order mark before the header.
    with csv_path.open(newline="", encoding="utf-8-sig", errors=PATH_ERRORS) as handle:
        reader = csv.DictReader(handle)
        columns = _column_map(reader.fieldnames, csv_path)
        for row in reader:
            line = reader.line_num
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue  # blank lines between blocks are harmless
            record, row_problems = _parse_row(row, columns, csv_dir, unsplit, facts, real_folders)
            problems.extend(f"line {line}: {problem}" for problem in row_problems)
            if record is None:
                continue
            if record.path in first_line:
                problems.append(
                    f"line {line}: {record.path} is already listed on line "
                    f"{first_line[record.path]}; list each file once"
                )
                continue
            first_line[record.path] = line
            records.setdefault(record.source_split, []).append(record)
    if problems:
        _raise_problems(csv_path, problems)
    if not records:
        raise DataError(f"manifest {csv_path} lists no images; add rows path,label")
    return {split: records[split] for split in SPLIT_NAMES if split in records}


def combine_records(*parts: Mapping[str, Sequence[Record]]) -> dict[str, list[Record]]:
    """Concatenate record sets split by split (manifests, folders or both).

    The same file in two parts is an error: it would count twice, or leak across splits.
    """
    combined: dict[str, list[Record]] = {}
    seen: dict[Path, str] = {}
    clashes: list[str] = []
    for part in parts:
        for split, items in part.items():
            for record in items:
                key = record.path.absolute()
                if key in seen:
                    clashes.append(f"{record.path} (in {seen[key]} and {split})")
                    continue
                seen[key] = split
                combined.setdefault(split, []).append(record)
    if clashes:
        listed = "\n  ".join(clashes[:_MAX_LISTED])
        raise DataError(
            f"{len(clashes)} file(s) appear in more than one of the combined sources:\n  "
            f"{listed}\nList each file in one source only."
        )
    known = [s for s in SPLIT_NAMES if s in combined]
    return {split: combined[split] for split in [*known, *sorted(set(combined) - set(known))]}


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

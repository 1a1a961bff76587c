"""What ``cxrnet-predict input=...`` may name: a folder, one image, a text file of paths, or a CSV
manifest with a ``path`` column. Labels are never needed; the order is always the same.

A manifest's other columns travel to the predictions as they are written (``input_columns``),
and a DICOM film's header adds its ``patient``, ``view``, ``age`` and ``sex`` where the manifest
gives none."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrnet.data.dicom_header import AGE, PATIENT, SEX, VIEW, header_of
from cxrnet.data.records import IMAGE_SUFFIXES, is_image_file
from cxrnet.user_errors import DataError


@dataclass(frozen=True)
class UnusableEntry:
    """A manifest row that names no file (an empty path): it still gets its own error row."""

    source: Path
    line: int

    @property
    def reason(self) -> str:
        return (
            f"empty path on line {self.line} of {self.source}; fill in the film's path or "
            "remove the row"
        )

    def __str__(self) -> str:
        return f"{self.source}:{self.line}"


Input = Path | UnusableEntry
# A film's further columns, one value per input in the inputs' order.
Columns = dict[str, tuple[str, ...]]
# Predict's own columns, in order (here, not in cxrnet.inference.predict: the listing must not
# import torch): a manifest column of one of them is kept as input_<name>.
OUTPUT_COLUMNS = ("path", "probability", "prediction", "threshold", "error", "seen")
# The manifest columns that already say what a header field would (matched in any case).
_SAME_AS = {PATIENT: ("patient", "patient_id"), VIEW: (VIEW,), AGE: (AGE,), SEX: (SEX,)}


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _listed(path: Path) -> list[Path]:
    """Non-blank, non-comment lines; relative paths are taken from the list's own folder."""
    base = path.absolute().parent
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [Path(entry) if Path(entry).is_absolute() else base / entry for entry in entries]


def _output_name(raw: str) -> str:
    name = raw.strip()
    while name.lower() in OUTPUT_COLUMNS:
        name = f"input_{name}"
    return name


def _manifest(path: Path) -> tuple[list[Input], Columns]:
    """The films a manifest lists and its other columns, named as written (stripped)."""
    base = path.absolute().parent
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "path" not in columns:
            raise DataError(
                f"manifest {path} has no 'path' column (columns: {reader.fieldnames}); "
                "add a header line starting with path"
            )
        others = [raw for raw in reader.fieldnames or [] if raw != columns["path"]]
        rows = [((row[columns["path"]] or "").strip(), reader.line_num, row) for row in reader]
    names: dict[str, str] = {}
    for raw in others:
        name = _output_name(raw)
        if not name:
            continue  # an unnamed column (a trailing comma): its cells go with no name
        if name.lower() in (known.lower() for known in names):
            raise DataError(
                f"manifest {path} has two columns named {name!r} in any case; rename one"
            )
        names[name] = raw
    inputs: list[Input] = [
        (Path(p) if Path(p).is_absolute() else base / p) if p else UnusableEntry(path, line)
        for p, line, _ in rows
    ]
    values = {
        name: tuple((row.get(raw) or "").strip() for _, _, row in rows)
        for name, raw in names.items()
    }
    return inputs, values


def input_columns(inputs: Sequence[Input], columns: Mapping[str, Sequence[str]]) -> Columns:
    """``columns`` (a manifest's) with each DICOM film's header fields added: a header field
    fills the blank cells of the manifest's own column for it (``patient`` or ``patient_id``,
    ``view``, ``age``, ``sex`` in any case) or, where there is none, a column of its own."""
    merged = {name: list(values) for name, values in columns.items()}
    lower = {name.lower(): name for name in merged}
    for index, film in enumerate(inputs):
        if not isinstance(film, Path):
            continue
        header = header_of(film)
        found = {PATIENT: header.patient or "", **header.fields}
        for field, value in found.items():
            if not value:
                continue
            target = next((lower[n] for n in _SAME_AS[field] if n in lower), None)
            if target is None:
                target = lower[field] = field
                merged[field] = [""] * len(inputs)
            if not merged[target][index]:
                merged[target][index] = value
    return {name: tuple(values) for name, values in merged.items()}


def read_inputs(source: str | Path) -> tuple[list[Input], Columns]:
    """``list_inputs`` with a manifest's other columns (none for any other source)."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv" and not is_image_file(path):
        return _manifest(path)
    return list_inputs(path), {}


def list_inputs(source: str | Path) -> list[Input]:
    """The image files ``source`` names, in a deterministic order.

    A folder is searched recursively for image files (hidden files and ``__MACOSX`` left out)
    and sorted by path; a list or manifest keeps its own order. Listed files are not checked
    here: one that is missing or unreadable, a dangling symlink or a symlink loop in a folder,
    and a manifest row with an empty path each become their own error row at prediction time.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            # A symlink that leads nowhere (dangling, a loop) is still a film the user gave.
            if (p.is_file() or p.is_symlink()) and is_image_file(p) and not _hidden(p, path)
        )
        if not found:
            raise DataError(
                f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}; "
                "point input= at a folder of films, an image, a .txt list or a .csv manifest"
            )
        return found
    if not path.is_file():
        raise DataError(
            f"input {path} does not exist; pass input=<folder | image | list.txt | manifest.csv>"
        )
    suffix = path.suffix.lower()
    if is_image_file(path):
        return [path]
    if suffix == ".csv":
        return _manifest(path)[0]
    if suffix in (".txt", ".lst", ".list"):
        return _listed(path)
    raise DataError(
        f"input {path}: cannot tell what {suffix or 'a file without suffix'} holds; use an "
        f"image ({', '.join(sorted(IMAGE_SUFFIXES))}), a .txt list of paths or a .csv manifest"
    )

"""A public dataset's label files as downloaded: found under its root (plain, ``.gz`` or a
one-member ``.zip``, as the datasets and their mirrors ship them) and read row by row with every
problem named: the dataset, the file, and the column or line.

A label file that lacks a column the reader needs, a row cut short (a truncated download), or a
value the dataset never writes stops the run with one line saying which; nothing about a row is
guessed.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from cxrnet.user_errors import DataError

# Compressed forms a label file is found in, tried after the plain name.
_COMPRESSED = (".gz", ".zip")


def find_label_file(
    dataset: str, root: Path, names: Sequence[str], required: bool = True
) -> Path | None:
    """The first of ``names`` (each also as ``.gz`` or ``.zip``) under ``root`` or one folder
    below it (archives unpack into a folder of their own); a ``DataError`` naming the dataset, the
    root and the names when none is there and ``required``."""
    folders = [root, *sorted(child for child in root.iterdir() if child.is_dir())]
    for name in names:
        for folder in folders:
            for candidate in (name, *(name + suffix for suffix in _COMPRESSED)):
                path = folder / candidate
                if path.is_file():
                    return path
    if not required:
        return None
    raise DataError(
        f"{dataset}: no {' or '.join(names)} in {root} (nor .gz or .zip of it); point the "
        "source's root at the folder the dataset was downloaded to"
    )


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [name for name in archive.namelist() if not name.endswith("/")]
        if len(members) != 1:
            raise DataError(f"{path}: a zipped label file must hold one file, it holds {members}")
        return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


class Row:
    """One data row: its line in the file (for messages) and its cells by column name. A plain
    class with slots: a reader builds one per row, hundreds of thousands of them."""

    __slots__ = ("cells", "line")

    def __init__(self, line: int, cells: dict[str, str]) -> None:
        self.line = line
        self.cells = cells

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


def read_rows(dataset: str, path: Path, required: Sequence[str]) -> Iterator[Row]:
    """The rows of the label file ``path``, each cell stripped; a ``DataError`` for a missing
    ``required`` column, a row with fewer or more cells than the header (a truncated or damaged
    file), or a file that cannot be read as CSV."""
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, strict=True)
            header = [name.strip() for name in next(reader, [])]
            missing = [column for column in required if column not in header]
            if missing:
                raise DataError(
                    f"{dataset}: {path} has no column {', '.join(repr(c) for c in missing)} "
                    f"(its columns: {', '.join(header) or 'none'}); use the label file as the "
                    "dataset ships it"
                )
            # Trailing unnamed header cells (NIH's box list ends in ",,,") hold nothing.
            while header and not header[-1]:
                header.pop()
            width = len(header)
            for cells in reader:
                if not cells or not any(cell.strip() for cell in cells):
                    continue
                if len(cells) < width or any(cell.strip() for cell in cells[width:]):
                    raise DataError(
                        f"{dataset}: {path} line {reader.line_num} has {len(cells)} of the "
                        f"header's {width} columns; the file looks truncated or damaged: "
                        "download it again"
                    )
                # cells[width:] are empty (checked above).
                values = map(str.strip, cells[:width])
                yield Row(reader.line_num, dict(zip(header, values, strict=True)))
    except (csv.Error, EOFError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{dataset}: {path} cannot be read to the end ({error}); the file looks truncated "
            "or damaged: download it again"
        ) from None


def bad_value(dataset: str, path: Path, row: Row, column: str, allowed: str) -> DataError:
    """The error for a cell the dataset never writes."""
    return DataError(
        f"{dataset}: {path} line {row.line}, column {column!r}: {row[column]!r} is not "
        f"{allowed}; use the label file as the dataset ships it"
    )

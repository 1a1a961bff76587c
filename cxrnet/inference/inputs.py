"""What ``cxrnet-predict input=...`` may name: a folder, one image, a text file of paths, or a CSV
manifest with a ``path`` column. Labels are never needed; the order is always the same."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.relative_to(root).parts)


def _listed(path: Path) -> list[Path]:
    """Non-blank, non-comment lines; relative paths are taken from the list's own folder."""
    base = path.absolute().parent
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return [Path(entry) if Path(entry).is_absolute() else base / entry for entry in entries]


def _manifest(path: Path) -> list[Input]:
    base = path.absolute().parent
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "path" not in columns:
            raise DataError(
                f"manifest {path} has no 'path' column (columns: {reader.fieldnames}); "
                "add a header line starting with path"
            )
        rows = [((row[columns["path"]] or "").strip(), reader.line_num) for row in reader]
    return [
        (Path(p) if Path(p).is_absolute() else base / p) if p else UnusableEntry(path, line)
        for p, line in rows
    ]


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
        return _manifest(path)
    if suffix in (".txt", ".lst", ".list"):
        return _listed(path)
    raise DataError(
        f"input {path}: cannot tell what {suffix or 'a file without suffix'} holds; use an "
        f"image ({', '.join(sorted(IMAGE_SUFFIXES))}), a .txt list of paths or a .csv manifest"
    )

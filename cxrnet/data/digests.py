"""Content digests of image files, kept beside the image cache so a warm start hashes nothing.

The duplicate check (``cxrnet.data.duplicates``) hashes every file whose size matches another
one's: on a large set that is nearly every file, at every start and in every process. A digest
is a function of the file's bytes, so it is stored under the file's path, size and modification
time (nanoseconds): a file that was replaced or edited has another size or time and is hashed
again; an unchanged file is not read.

The store is one tab-separated file, ``digests.tsv``, in the image cache folder. Several
processes (the jobs of a sweep, DDP ranks) may add to it at once: each writes under a file lock,
merging what is on disk with what it hashed, through a temporary file and a rename
(``cxrnet.publish.write_file``), so a reader never sees half a file and nothing is lost.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from cxrnet.data.records import PATH_ERRORS
from cxrnet.publish import write_file
from cxrnet.user_errors import DataError

STORE_NAME = "digests.tsv"
_CHUNK = 1 << 20

Key = tuple[str, int, int]  # path, size in bytes, modification time in nanoseconds


def file_digest(path: Path) -> str:
    """blake2b hex digest of the file's bytes, read in chunks so large films stay cheap."""
    digest = hashlib.blake2b()
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise DataError(f"cannot read {path} to look for duplicates: {error}") from error
    return digest.hexdigest()


def _read(path: Path) -> dict[Key, str]:
    known: dict[Key, str] = {}
    try:
        with open(path, encoding="utf-8", errors=PATH_ERRORS, newline="") as handle:
            for row in csv.reader(handle, delimiter="\t"):
                if len(row) == 4 and row[1].isdigit() and row[2].lstrip("-").isdigit():
                    known[(row[0], int(row[1]), int(row[2]))] = row[3]
    except FileNotFoundError:
        pass
    return known


@dataclass
class DigestStore:
    """Digests by (path, size, mtime_ns); ``folder`` None keeps them in memory only.

    ``hashed`` counts the files this store actually read, so a caller (and a test) can tell a
    warm start from a cold one.
    """

    folder: Path | None = None
    known: dict[Key, str] = field(default_factory=dict)
    hashed: int = 0
    _new: dict[Key, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.folder is not None:
            self.folder = Path(self.folder)
            self.known.update(_read(self.folder / STORE_NAME))

    def digest(self, path: Path, size: int, mtime_ns: int) -> str:
        key = (str(path), size, mtime_ns)
        if key not in self.known:
            self.known[key] = self._new[key] = file_digest(path)
            self.hashed += 1
        return self.known[key]

    def save(self) -> None:
        """Add what this store hashed to the file on disk (merged under the lock)."""
        if self.folder is None or not self._new:
            return
        target = self.folder / STORE_NAME
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / f".{STORE_NAME}.lock")):
            merged = _read(target) | self._new

            def write(temporary: Path) -> None:
                with open(
                    temporary, "w", encoding="utf-8", errors=PATH_ERRORS, newline=""
                ) as handle:
                    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
                    writer.writerows(
                        (path, size, mtime, digest)
                        for (path, size, mtime), digest in sorted(merged.items())
                    )

            write_file(target, write)
        self._new.clear()

"""What a start needs to know of each film file, from one stat: resolved path, size, mtime.

Discovery, the duplicate check (``cxrnet.data.duplicates``, ``cxrnet.data.digests``) and the
image cache key (``cxrnet.data.cache``) all need a file's size and modification time, and the
cache its resolved path. Asked separately they stat each file about ten times (``resolve()``
alone is one ``lstat`` per path component); on a network file system that dominated a warm
start. ``FileFacts`` is the one answer, taken once (from the folder walk's ``os.DirEntry`` or,
for a manifest's rows, from one ``lstat``) and handed on, keyed by the record's path.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

# Size and time of a file that cannot be stat'ed: it keys the cache all the same, and decoding
# it then reports why it cannot be read.
UNREADABLE = -1


class FileFacts(NamedTuple):
    """One file as the cache key and the digest store name it (a named tuple: a warm start
    builds one per film, hundreds of thousands in a public dataset, from the cache's index)."""

    path: str  # resolved: symbolic links and ``..`` followed, as ``Path.resolve()`` gives it
    size: int  # bytes; UNREADABLE when the file cannot be stat'ed
    mtime_ns: int

    @property
    def readable(self) -> bool:
        return self.size != UNREADABLE


# The facts of each record's file, by the record's (unresolved) path.
Facts = dict[Path, FileFacts]


class RealFolders:
    """``os.path.realpath`` of folders, each asked once: the files in a folder that are not
    links themselves resolve to the folder's real path and their name, with no further call.

    A folder that is no link resolves to its parent's real path and its name: one ``lstat``
    per new folder, where ``realpath`` takes one per part of the path (MIMIC-CXR has a folder
    per study, 227,827 of them, each eight parts deep)."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def __call__(self, folder: str) -> str:
        real = self._known.get(folder)
        if real is None:
            real = self._known[folder] = self._resolve(folder)
        return real

    def _resolve(self, folder: str) -> str:
        parent, name = os.path.split(folder)
        if name in ("", ".", "..") or not parent or parent == folder:
            return os.path.realpath(folder)  # a root, or a part realpath must work out
        try:
            link = stat.S_ISLNK(os.lstat(folder).st_mode)
        except OSError:
            link = True  # realpath says what it can of a folder that is not there
        return os.path.realpath(folder) if link else os.path.join(self(parent), name)


def entry_facts(entry: os.DirEntry[str], real_folder: str) -> FileFacts:
    """The facts of a file found by ``os.scandir`` in a folder whose real path is
    ``real_folder``; ``entry.stat()`` is the one stat (it follows a link, as ``resolve`` does).

    Raises OSError when the file cannot be stat'ed (a link whose target is gone).
    """
    info = entry.stat()
    if entry.is_symlink():
        return FileFacts(os.path.realpath(entry.path), info.st_size, info.st_mtime_ns)
    return FileFacts(os.path.join(real_folder, entry.name), info.st_size, info.st_mtime_ns)


def path_facts(path: Path | str, real_folders: RealFolders | None = None) -> FileFacts:
    """The facts of one file named by path: one ``lstat``, and a ``stat`` only for a link.

    Raises OSError when the file cannot be stat'ed or is not a file (a folder, say).
    """
    text = _absolute(path)
    info = os.lstat(text)
    link = stat.S_ISLNK(info.st_mode)
    if link:
        info = os.stat(text)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EISDIR, "not a file", text)
    if link:
        return FileFacts(os.path.realpath(text), info.st_size, info.st_mtime_ns)
    folder, name = os.path.split(text)
    real = (real_folders or RealFolders())(folder)
    return FileFacts(os.path.join(real, name), info.st_size, info.st_mtime_ns)


def facts_or_unreadable(path: Path | str, real_folders: RealFolders | None = None) -> FileFacts:
    """``path_facts``, or UNREADABLE size and time (under the resolved name) when the file
    cannot be stat'ed: the cache then keys it as such and decoding says why."""
    try:
        return path_facts(path, real_folders)
    except OSError:
        return FileFacts(os.path.realpath(_absolute(path)), UNREADABLE, UNREADABLE)


def _absolute(path: Path | str) -> str:
    # Not abspath: it drops ``..`` before links are followed, where resolve() follows them first.
    text = os.path.expanduser(os.fspath(path))
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)


# pathlib's own constructor of a child path from a listed name (what rglob uses): a Path parsed
# from a string costs several times more, and a walk or a dataset's label file builds one per
# film.
_MAKE_CHILD = getattr(Path, "_make_child_relpath", None)


def child_path(folder: Path, name: str) -> Path:
    """``folder / name`` for a plain file name (no separator), built the fast way."""
    return _MAKE_CHILD(folder, name) if _MAKE_CHILD is not None else folder / name


class PathBuilder:
    """Paths of many films, each folder built once from its parent: ``Path(text)`` parses the
    whole text every time (about 10 us a film, seconds for a public dataset's 377,110, where
    MIMIC's 227,827 studies each have a folder of their own). Takes the text of a normalised
    path (``str`` of a ``Path``)."""

    def __init__(self) -> None:
        self._folders: dict[str, Path] = {}

    def __call__(self, text: str) -> Path:
        cut = max(text.rfind("/"), text.rfind(os.sep))
        if cut <= 0:
            return Path(text)
        return child_path(self._folder(text[:cut]), text[cut + 1 :])

    def many(self, texts: Iterable[str]) -> list[Path]:
        """The paths of ``texts`` (each normalised), in order: ``__call__`` without a call per
        film, for a listing's hundreds of thousands."""
        folders = self._folders
        make = child_path if _MAKE_CHILD is None else _MAKE_CHILD
        paths: list[Path] = []
        for text in texts:
            head, _, name = text.rpartition(os.sep)
            folder = folders.get(head) if head else None
            if folder is None:
                paths.append(self(text))  # a root's child, or the first film of its folder
                continue
            paths.append(make(folder, name))
        return paths

    def _folder(self, text: str) -> Path:
        folder = self._folders.get(text)
        if folder is None:
            cut = max(text.rfind("/"), text.rfind(os.sep))
            parent = self._folder(text[:cut]) if cut > 0 else None
            folder = child_path(parent, text[cut + 1 :]) if parent else Path(text)
            self._folders[text] = folder
        return folder

"""A warm start touches each film once (one walk), or not at all with ``verify_files=False``.

Every way the data pipeline can stat or open a file is counted per film: ``os.stat`` and
``os.lstat`` (``Path.stat``, ``is_file``, ``exists``, ``resolve`` and ``realpath`` go through
them), the walk's ``DirEntry.stat`` and ``open``.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cxrnet.data import cache_listing
from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.records import CLASS_NAMES, SPLIT_NAMES
from cxrnet.user_errors import DataError


class _CountedEntry:
    """An ``os.DirEntry`` whose ``stat`` is counted (a C type's methods cannot be patched)."""

    def __init__(self, entry: os.DirEntry[str], touches: Counter[str]) -> None:
        self._entry, self._touches = entry, touches
        self.name, self.path = entry.name, entry.path

    def stat(self, **kwargs: Any) -> os.stat_result:
        self._touches[self.path] += 1
        return self._entry.stat(**kwargs)

    def is_dir(self, **kwargs: Any) -> bool:
        return self._entry.is_dir(**kwargs)

    def is_file(self, **kwargs: Any) -> bool:
        return self._entry.is_file(**kwargs)

    def is_symlink(self) -> bool:
        return self._entry.is_symlink()


_SCANDIR = os.scandir  # the real one, kept before the fixture replaces it


class _CountedListing:
    def __init__(self, folder: Any, touches: Counter[str]) -> None:
        self._listing, self._touches = _SCANDIR(folder), touches

    def __enter__(self) -> _CountedListing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listing.close()

    def __iter__(self) -> Iterator[_CountedEntry]:
        return (_CountedEntry(entry, self._touches) for entry in self._listing)


@pytest.fixture
def touches(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Stats and opens per absolute path, counted from the moment the fixture is used."""
    counted: Counter[str] = Counter()
    real_stat, real_lstat = os.stat, os.lstat
    real_open, real_io_open = builtins.open, io.open

    def name(path: Any) -> str:
        return os.path.abspath(os.fsdecode(path)) if isinstance(path, (str, bytes, Path)) else ""

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        counted[name(path)] += 1
        return real_stat(path, *args, **kwargs)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        counted[name(path)] += 1
        return real_lstat(path, *args, **kwargs)

    def opener(real: Any) -> Any:
        def counted_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            counted[name(file)] += 1
            return real(file, *args, **kwargs)

        return counted_open

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "scandir", lambda folder=".": _CountedListing(folder, counted))
    monkeypatch.setattr(builtins, "open", opener(real_open))
    monkeypatch.setattr(io, "open", opener(real_io_open))
    yield counted


def _films(root: Path) -> list[str]:
    return sorted(str(path) for path in root.rglob("*.jpeg"))


def _manifest(root: Path, target: Path) -> Path:
    rows = ["path,label,split"]
    for split in SPLIT_NAMES:
        for label, class_name in enumerate(CLASS_NAMES):
            rows += [f"{p},{label},{split}" for p in sorted((root / split / class_name).iterdir())]
    target.write_text("\n".join(rows) + "\n")
    return target


def _setup(source: Path, cache: Path, verify_files: bool = True) -> ChestXRayDataModule:
    dm = ChestXRayDataModule(
        source,
        image_size=32,
        num_workers=0,
        decode_workers=0,
        cache_dir=cache,
        verify_files=verify_files,
    )
    dm.setup("fit")
    return dm


def _cache_entries(cache: Path) -> list[str]:
    """The image cache folders built (``32px-...``), not the digests or listings."""
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("32px-"))


def _pixels(dm: ChestXRayDataModule) -> np.ndarray:
    return np.asarray(dm.datasets["train"].images)


@pytest.fixture(params=["folder", "manifest"])
def source(request: pytest.FixtureRequest, synthetic_copy: Path, tmp_path: Path) -> Path:
    if request.param == "folder":
        return synthetic_copy
    return _manifest(synthetic_copy, tmp_path / "films.csv")


def test_a_warm_start_touches_each_film_once(
    source: Path, synthetic_copy: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _setup(source, tmp_path / "cache")  # cold: builds the cache and the digests
    counted = request.getfixturevalue("touches")
    dm = _setup(source, tmp_path / "cache")
    films = _films(synthetic_copy)
    # Once each, not "at most once": the one stat is what notices a film edited in place.
    assert {film: counted[film] for film in films} == dict.fromkeys(films, 1)
    assert dm.files_hashed == 0
    assert sum(len(records) for records in dm.split_records.values()) == len(films)


def test_without_verifying_a_warm_start_stats_no_film(
    source: Path, synthetic_copy: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    verified = _setup(source, tmp_path / "cache")
    counted = request.getfixturevalue("touches")
    trusted = _setup(source, tmp_path / "cache", verify_files=False)
    assert [counted[film] for film in _films(synthetic_copy)] == [0] * len(_films(synthetic_copy))
    assert trusted.split_records == verified.split_records
    np.testing.assert_array_equal(_pixels(trusted), _pixels(verified))
    assert trusted.files_hashed == 0
    assert len(_cache_entries(tmp_path / "cache")) == 1


def _edit_in_place(film: Path, like: Path) -> None:
    """Another film's bytes under this film's name, one second later."""
    stat = film.stat()
    shutil.copyfile(like, film)
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_a_film_edited_in_place_is_noticed_when_verifying(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    before = _setup(synthetic_copy, cache)
    films = [Path(film) for film in _films(synthetic_copy / "train")]
    _edit_in_place(films[0], like=films[1])

    # Trusting the cache keeps the old pixels: what verify_files=false is documented to trust.
    trusted = _setup(synthetic_copy, cache, verify_files=False)
    np.testing.assert_array_equal(_pixels(trusted), _pixels(before))
    assert len(_cache_entries(cache)) == 1

    # The one stat per film sees the new size or time: a new cache, the copy found.
    verified = _setup(synthetic_copy, cache)
    assert len(_cache_entries(cache)) == 2
    assert verified.files_hashed >= 1
    groups = verified.duplicates.within.get("train", [])
    assert [[r.path for r in group] for group in groups] == [sorted(films[:2])]


def test_a_film_added_is_noticed_without_verifying(synthetic_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    before = _setup(synthetic_copy, cache)
    first = Path(_films(synthetic_copy / "train" / "NORMAL")[0])
    added = first.with_name("IM-9999-0001.jpeg")
    shutil.copyfile(first, added)

    # The listing changed, so nothing is trusted: every file is checked, as with verifying.
    after = _setup(synthetic_copy, cache, verify_files=False)
    assert len(_cache_entries(cache)) == 2
    found = {record.path for records in after.split_records.values() for record in records}
    assert found == {r.path for records in before.split_records.values() for r in records} | {added}
    groups = [sorted(r.path for r in g) for g in after.duplicates.all_groups]
    assert sorted([first, added]) in groups


def test_a_cache_folder_this_job_cannot_write_still_serves_it(
    synthetic_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    built = _setup(synthetic_copy, cache)
    shutil.rmtree(cache / cache_listing.LISTINGS_FOLDER)

    def refused(path: Path, write: object) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    # A shared cache others built, read-only here: the listing cannot be noted, nothing fails.
    monkeypatch.setattr(cache_listing, "write_file", refused)
    for verify_files in (True, False):
        again = _setup(synthetic_copy, cache, verify_files=verify_files)
        assert again.split_records == built.split_records
        np.testing.assert_array_equal(_pixels(again), _pixels(built))
    assert not (cache / cache_listing.LISTINGS_FOLDER).exists()


def test_a_damaged_cache_index_is_trusted_for_nothing(synthetic_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _setup(synthetic_copy, cache)
    (name,) = _cache_entries(cache)
    entry = cache / name
    index = entry / "index.csv"
    text = index.read_text()
    index.write_text(text[: text.rindex(",", 0, len(text) - 2)] + "\n")  # the last row cut short
    # No film's facts are taken from it, and the folder is named with what to do.
    for verify_files in (False, True):
        with pytest.raises(DataError, match=rf"image cache {entry} does not list .*delete that"):
            _setup(synthetic_copy, cache, verify_files=verify_files)

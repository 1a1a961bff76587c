"""FileFacts name a film as ``Path.resolve()`` does (the cache key's name), from one stat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrnet.data.discovery import scan_folder
from cxrnet.data.files import (
    UNREADABLE,
    PathBuilder,
    RealFolders,
    facts_or_unreadable,
    path_facts,
)


@pytest.fixture
def linked(tmp_path: Path) -> dict[str, Path]:
    real = tmp_path / "real" / "NORMAL"
    real.mkdir(parents=True)
    film = real / "IM-0001-0001.jpeg"
    film.write_bytes(b"x" * 10)
    (tmp_path / "via").symlink_to(tmp_path / "real")  # a linked folder
    (real / "IM-0002-0001.jpeg").symlink_to(film)  # a linked file
    return {"film": film, "root": tmp_path}


def test_a_path_through_links_resolves_as_pathlib_does(linked: dict[str, Path]) -> None:
    root = linked["root"]
    for path in (
        root / "via" / "NORMAL" / "IM-0001-0001.jpeg",
        root / "real" / "NORMAL" / "IM-0002-0001.jpeg",
        root / "via" / "NORMAL" / ".." / "NORMAL" / "IM-0001-0001.jpeg",
    ):
        facts = path_facts(path)
        assert facts.path == str(path.resolve())
        assert (facts.size, facts.mtime_ns) == (10, linked["film"].stat().st_mtime_ns)


def test_the_walk_gives_every_film_the_same_facts(linked: dict[str, Path]) -> None:
    facts: dict = {}
    images, _ = scan_folder(linked["root"] / "via", facts)
    assert len(images) == 2 and set(facts) == set(images)
    for path in images:
        assert facts[path] == path_facts(path)
        assert facts[path].path == str(path.resolve())


def test_a_folder_or_a_missing_file_has_no_facts(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        path_facts(tmp_path)
    gone = tmp_path / "gone.jpeg"
    with pytest.raises(OSError):
        path_facts(gone)
    missing = facts_or_unreadable(gone)
    assert (missing.path, missing.size, missing.readable) == (
        os.path.realpath(gone),
        UNREADABLE,
        False,
    )


def test_a_path_builder_gives_the_paths_pathlib_parses(tmp_path: Path) -> None:
    texts = [
        str(tmp_path / "files" / "p10" / "p10000032" / "s50414267" / "a.jpg"),
        str(tmp_path / "files" / "p10" / "p10000032" / "s50414267" / "b.jpg"),
        str(tmp_path / "files" / "p11" / "c.jpg"),
        str(tmp_path / "d.png"),
        "/e.png",
        "relative/f.png",
        "g.png",
    ]
    builder = PathBuilder()
    many = builder.many(texts)
    assert many == [Path(text) for text in texts] == [builder(text) for text in texts]
    assert [str(path) for path in many] == texts


def test_real_folders_agree_with_realpath_through_links_and_dots(tmp_path: Path) -> None:
    (tmp_path / "real" / "s1" / "deep").mkdir(parents=True)
    (tmp_path / "real" / "s2").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")  # a linked folder above
    (tmp_path / "real" / "s3").symlink_to(tmp_path / "real" / "s1")  # a linked folder itself
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    folders = [
        tmp_path / "real" / "s1" / "deep",
        tmp_path / "via" / "s1" / "deep",
        tmp_path / "via" / "s3" / "deep",
        tmp_path / "via" / "s2" / ".." / "s1",
        tmp_path / "real" / "." / "s2",
        tmp_path / "dangling" / "x",
        tmp_path / "absent" / "y",
        Path("/"),
    ]
    real_folders = RealFolders()
    for folder in folders:
        assert real_folders(str(folder)) == os.path.realpath(folder), folder

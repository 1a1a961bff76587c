"""Byte-identical files: grouped by hash, reported within a split, an error across splits."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.real_films import REAL_224, require

from cxrnet.data import digests as digests_module
from cxrnet.data.digests import file_digest
from cxrnet.data.discovery import discover
from cxrnet.data.duplicates import check_duplicates, find_duplicates
from cxrnet.data.records import Record, make_record
from cxrnet.user_errors import DataError


def write(path: Path, content: bytes, label: int = 1, split: str = "train") -> Record:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return make_record(path, label, split)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Record]:
    folder = tmp_path / "train" / "PNEUMONIA"
    return {
        "a": write(folder / "person1_virus_1.jpeg", b"same picture"),
        "a_copy": write(folder / "person2_virus_7.jpeg", b"same picture"),
        "same_size": write(folder / "person3_virus_2.jpeg", b"other pictur"),
        "unique": write(folder / "person4_virus_3.jpeg", b"a longer, different picture"),
    }


def test_identical_bytes_form_one_group(files: dict[str, Record]) -> None:
    groups = find_duplicates(files.values())
    assert groups == [[files["a"], files["a_copy"]]]


def test_no_duplicates_gives_no_groups(files: dict[str, Record]) -> None:
    assert find_duplicates([files["a"], files["same_size"], files["unique"]]) == []


def test_only_files_sharing_a_size_are_hashed(
    files: dict[str, Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []

    def spy(path: Path) -> str:
        hashed.append(Path(path))
        return file_digest(path)

    monkeypatch.setattr(digests_module, "file_digest", spy)
    find_duplicates(files.values())
    assert files["unique"].path not in hashed
    assert sorted(hashed) == sorted(files[k].path for k in ("a", "a_copy", "same_size"))


def test_duplicates_within_a_split_are_reported(files: dict[str, Record]) -> None:
    report = check_duplicates({"train": list(files.values())})
    assert report.within == {"train": [[files["a"], files["a_copy"]]]}
    assert report.across == []
    assert "1 group(s) in train" in report.summary()


def test_duplicates_across_splits_are_an_error_naming_both_files(tmp_path: Path) -> None:
    train = write(tmp_path / "train" / "NORMAL" / "IM-0001-0001.jpeg", b"film", label=0)
    test = write(tmp_path / "test" / "NORMAL" / "IM-0999-0001.jpeg", b"film", 0, "test")
    splits = {"train": [train], "test": [test]}
    with pytest.raises(DataError, match="span splits") as error:
        check_duplicates(splits)
    message = str(error.value)
    assert f"{train.path} (train)" in message
    assert f"{test.path} (test)" in message
    assert "allow_cross_split=True" in message

    report = check_duplicates(splits, allow_cross_split=True)
    assert report.across == [[("test", test), ("train", train)]]
    assert report.all_groups == [[test, train]]


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = make_record(tmp_path / "gone.jpeg", 0, "train")
    with pytest.raises(DataError, match=r"gone\.jpeg"):
        find_duplicates([missing])


@pytest.mark.real_data
def test_real_training_split_duplicate_groups() -> None:
    records = discover(require(REAL_224))
    report = check_duplicates(records)
    # The 224-pixel copy in ../shared holds 24 groups (22 pairs, 2 triples), all in train and
    # each within one patient; none crosses into val.
    groups = report.within["train"]
    assert len(groups) == 24
    assert sorted(len(g) for g in groups) == [2] * 22 + [3] * 2
    assert all(len({r.patient for r in g}) == 1 for g in groups)
    assert report.across == []
    assert "val" not in report.within

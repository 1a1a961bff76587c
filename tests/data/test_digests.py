"""The duplicate check's digests are kept beside the image cache: a warm start hashes nothing."""

from __future__ import annotations

import os
from pathlib import Path

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.digests import STORE_NAME, DigestStore
from cxrnet.data.duplicates import find_duplicates
from cxrnet.data.records import Record, make_record


def write(path: Path, content: bytes) -> Record:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return make_record(path, 1, "train")


def same_size_files(folder: Path) -> list[Record]:
    return [
        write(folder / "person1_virus_1.jpeg", b"same picture"),
        write(folder / "person2_virus_2.jpeg", b"same picture"),
        write(folder / "person3_virus_3.jpeg", b"other pictur"),
        write(folder / "person4_virus_4.jpeg", b"a longer, unique picture"),
    ]


def test_a_second_check_with_the_store_hashes_no_file(tmp_path: Path) -> None:
    records = same_size_files(tmp_path / "films")
    cold = DigestStore(tmp_path / "cache")
    groups = find_duplicates(records, digests=cold)
    cold.save()
    assert cold.hashed == 3  # the three files of one size; the unique size is never read
    warm = DigestStore(tmp_path / "cache")
    assert find_duplicates(records, digests=warm) == groups == [records[:2]]
    assert warm.hashed == 0


def test_a_changed_file_is_hashed_again_and_its_new_bytes_count(tmp_path: Path) -> None:
    records = same_size_files(tmp_path / "films")
    store = DigestStore(tmp_path / "cache")
    find_duplicates(records, digests=store)
    store.save()
    # Same size, new bytes, new modification time: the stored digest no longer applies.
    records[2].path.write_bytes(b"same picture")
    stat = records[2].path.stat()
    os.utime(records[2].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = DigestStore(tmp_path / "cache")
    assert find_duplicates(records, digests=again) == [records[:3]]
    assert again.hashed == 1


def test_stores_saved_by_two_processes_keep_both_sets_of_digests(tmp_path: Path) -> None:
    first = same_size_files(tmp_path / "a")
    second = same_size_files(tmp_path / "b")
    one, other = DigestStore(tmp_path / "cache"), DigestStore(tmp_path / "cache")
    find_duplicates(first, digests=one)
    find_duplicates(second, digests=other)
    one.save()
    other.save()  # merged with what the first wrote, not over it
    rows = (tmp_path / "cache" / STORE_NAME).read_text().splitlines()
    assert len(rows) == 6
    warm = DigestStore(tmp_path / "cache")
    find_duplicates(first, digests=warm)
    find_duplicates(second, digests=warm)
    assert warm.hashed == 0


def test_a_warm_data_module_setup_hashes_no_file(synthetic_root: Path, tmp_path: Path) -> None:
    def setup() -> ChestXRayDataModule:
        dm = ChestXRayDataModule(
            synthetic_root,
            image_size=32,
            num_workers=0,
            cache_dir=tmp_path / "images",
        )
        dm.setup("fit")
        return dm

    cold = setup()
    assert cold.files_hashed > 0  # synthetic films of one size share it with others
    assert setup().files_hashed == 0

"""Finding images, labels, subtypes and patients in the folder layout, as people download it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers.real_films import REAL_224, require

from cxrnet.data.discovery import (
    discover,
    discover_folders,
    discover_split,
    find_split_root,
    list_images,
)
from cxrnet.data.records import (
    CLASS_NAMES,
    SPLIT_NAMES,
    SUBTYPE_NAMES,
    Record,
    check_subtypes,
    make_record,
    patient_from_name,
    subtype_counts,
    subtype_from_name,
)
from cxrnet.user_errors import DataError

NORMAL_FILES = ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0115-0001.jpeg"]
PNEUMONIA_FILES = ["person1_bacteria_1.jpeg", "person1_virus_6.jpeg", "person2_bacteria_3.jpeg"]


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_layout(
    root: Path,
    splits: tuple[str, ...] = ("train", "val", "test"),
    normal: list[str] = NORMAL_FILES,
    pneumonia: list[str] = PNEUMONIA_FILES,
) -> Path:
    for split in splits:
        for name in normal:
            touch(root / split / "NORMAL" / name)
        for name in pneumonia:
            touch(root / split / "PNEUMONIA" / name)
    return root


def test_flat_layout_gives_labels_subtypes_patients_per_split(tmp_path: Path) -> None:
    records = discover(make_layout(tmp_path))
    assert list(records) == list(SPLIT_NAMES)
    train = {r.path.name: r for r in records["train"]}
    assert len(train) == 6
    assert train["IM-0115-0002.jpeg"].label == 0
    assert train["IM-0115-0002.jpeg"].class_name == "NORMAL"
    assert train["person1_virus_6.jpeg"].label == 1
    assert train["person1_virus_6.jpeg"].subtype == "virus"
    assert train["person1_bacteria_1.jpeg"].subtype == "bacteria"
    assert {r.source_split for r in records["val"]} == {"val"}
    # Two films of IM-0115 are one patient; the NORMAL2 series and each kind are separate.
    assert train["IM-0115-0001.jpeg"].patient == train["IM-0115-0002.jpeg"].patient
    assert train["NORMAL2-IM-0115-0001.jpeg"].patient != train["IM-0115-0001.jpeg"].patient
    assert train["person1_bacteria_1.jpeg"].patient != train["person1_virus_6.jpeg"].patient


def test_missing_test_and_val_folders_are_fine(tmp_path: Path) -> None:
    records = discover(make_layout(tmp_path, splits=("train",)))
    assert list(records) == ["train"]


def test_kaggle_zip_nesting_with_macosx_and_ds_store(tmp_path: Path) -> None:
    inner = make_layout(tmp_path / "chest_xray" / "chest_xray", splits=("train", "test"))
    # macOS zips carry AppleDouble copies under __MACOSX that look like images by suffix.
    touch(tmp_path / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "._IM-0115-0001.jpeg")
    ds_store = touch(inner / "train" / "NORMAL" / ".DS_Store")
    notes = touch(inner / "train" / "PNEUMONIA" / "notes.txt")
    apple = touch(inner / "train" / "PNEUMONIA" / "._person1_bacteria_1.jpeg")
    stray = touch(inner / "train" / "readme.md")

    result = discover_folders(tmp_path)

    assert result.root == inner
    assert {split: len(items) for split, items in result.records.items()} == {
        "train": 6,
        "test": 6,
    }
    assert not any("__MACOSX" in str(r.path) for r in result.records["train"])
    reasons = dict(result.ignored)
    assert set(reasons) == {ds_store, notes, apple, stray}
    assert "not an image" in reasons[notes]
    assert "hidden" in reasons[ds_store]
    assert "outside a class folder" in reasons[stray]
    assert "ignored" in result.summary()


def test_outer_layout_wins_over_deeper_copy(tmp_path: Path) -> None:
    # The Kaggle zip holds the layout twice: chest_xray/train and chest_xray/chest_xray/train.
    make_layout(tmp_path / "chest_xray", splits=("train",))
    make_layout(tmp_path / "chest_xray" / "chest_xray", splits=("train",))
    assert find_split_root(tmp_path) == tmp_path / "chest_xray"


def test_two_data_sets_at_one_depth_is_an_error(tmp_path: Path) -> None:
    make_layout(tmp_path / "a", splits=("train",))
    make_layout(tmp_path / "b", splits=("train",))
    with pytest.raises(DataError, match="several data sets") as error:
        find_split_root(tmp_path)
    assert str(tmp_path / "a") in str(error.value)


def test_image_suffixes_in_any_case_and_folder_names_in_any_case(tmp_path: Path) -> None:
    names = ["IM-0001-0001.JPEG", "IM-0002-0001.jpg", "IM-0003-0001.Png", "IM-0004-0001.gif"]
    for name in names:
        touch(tmp_path / "Train" / "normal" / name)
    touch(tmp_path / "Train" / "pneumonia" / "person3_virus_9.JPG")
    result = discover_folders(tmp_path)
    found = sorted(r.path.name for r in result.records["train"])
    assert found == [
        "IM-0001-0001.JPEG",
        "IM-0002-0001.jpg",
        "IM-0003-0001.Png",
        "person3_virus_9.JPG",
    ]
    assert [path.name for path, _ in result.ignored] == ["IM-0004-0001.gif"]


def test_list_images_skips_hidden_and_non_images(tmp_path: Path) -> None:
    keep = touch(tmp_path / "sub" / "IM-0001-0001.jpeg")
    touch(tmp_path / ".hidden" / "IM-0002-0001.jpeg")
    touch(tmp_path / "notes.txt")
    assert list_images(tmp_path) == [keep]


def test_extra_class_folder_is_reported_not_used(tmp_path: Path) -> None:
    make_layout(tmp_path, splits=("train",))
    touch(tmp_path / "train" / "COVID" / "covid1.jpeg")
    result = discover_folders(tmp_path)
    assert len(result.records["train"]) == 6
    assert [path.name for path, _ in result.ignored] == ["COVID"]


def test_discover_warns_about_ignored_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_layout(tmp_path, splits=("train",))
    touch(tmp_path / "train" / "NORMAL" / "labels.csv")
    with caplog.at_level(logging.WARNING):
        discover(tmp_path)
    assert "labels.csv" in caplog.text


def test_missing_train_folder_names_the_root(tmp_path: Path) -> None:
    touch(tmp_path / "val" / "NORMAL" / "IM-0001-0001.jpeg")
    with pytest.raises(DataError, match="no train/ folder") as error:
        discover(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_root_without_images_says_so(tmp_path: Path) -> None:
    touch(tmp_path / "docs" / "readme.txt")
    with pytest.raises(DataError, match="holds no images"):
        discover(tmp_path)


def test_missing_root_says_set_data_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*data\.root"):
        discover(tmp_path / "nowhere")


def test_missing_class_folder_names_it(tmp_path: Path) -> None:
    make_layout(tmp_path, splits=("train",))
    for path in (tmp_path / "train" / "PNEUMONIA").iterdir():
        path.unlink()
    (tmp_path / "train" / "PNEUMONIA").rmdir()
    with pytest.raises(DataError, match="missing class folder") as error:
        discover(tmp_path)
    assert str(tmp_path / "train" / "PNEUMONIA") in str(error.value)


def test_empty_class_folder_names_it(tmp_path: Path) -> None:
    make_layout(tmp_path, splits=("train",), pneumonia=[])
    touch(tmp_path / "train" / "PNEUMONIA" / ".DS_Store")
    with pytest.raises(DataError, match="holds no images") as error:
        discover_split(tmp_path / "train", "train")
    assert str(tmp_path / "train" / "PNEUMONIA") in str(error.value)


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("IM-0115-0001.jpeg", "im-0115"),
        ("IM-0429-0001-0002.jpeg", "im-0429"),
        ("NORMAL2-IM-1427-0001.jpeg", "normal2-im-1427"),
        ("NORMAL2-IM-0395-0001-0001.jpeg", "normal2-im-0395"),
        ("person1_bacteria_1.jpeg", "person1_bacteria"),
        ("person1_virus_6.jpeg", "person1_virus"),
        ("person447_virus_921_1.jpeg", "person447_virus"),
        ("person10_bacteria_35.jpeg", "person10_bacteria"),
        ("Person5_Virus_1.JPG", "person5_virus"),
        ("person12.jpeg", "person12"),
        ("scan_0007.png", "scan_0007"),
    ],
)
def test_patient_key_follows_the_real_naming(name: str, patient: str) -> None:
    assert patient_from_name(name) == patient


@pytest.mark.parametrize(
    ("name", "label", "subtype"),
    [
        ("IM-0115-0001.jpeg", 0, "normal"),
        ("person1_bacteria_1.jpeg", 1, "bacteria"),
        ("person1_virus_6.jpeg", 1, "virus"),
        ("covid_virus_3.png", 1, "virus"),
        ("person12.jpeg", 1, "unknown"),
        ("viruses.jpeg", 1, "unknown"),
    ],
)
def test_subtype_from_name(name: str, label: int, subtype: str) -> None:
    assert subtype_from_name(name, label) == subtype


def test_check_subtypes_names_files_without_a_kind() -> None:
    records = [
        make_record(Path("/d/train/PNEUMONIA/person2_virus_3.jpeg"), 1, "train"),
        make_record(Path("/d/train/PNEUMONIA/scan_17.jpeg"), 1, "train"),
        make_record(Path("/d/train/NORMAL/IM-0001-0001.jpeg"), 0, "train"),
    ]
    assert subtype_counts(records) == {"normal": 1, "bacteria": 0, "virus": 1, "unknown": 1}
    with pytest.raises(DataError, match=r"scan_17\.jpeg") as error:
        check_subtypes(records)
    assert "person2_virus_3" not in str(error.value)
    check_subtypes(records[:1])  # files with a kind pass


def test_subtype_counts_lists_every_subtype_even_when_absent() -> None:
    records = [make_record(Path("IM-0001-0001.jpeg"), 0, "train")]
    assert subtype_counts(records) == {name: int(name == "normal") for name in SUBTYPE_NAMES}


def test_record_rejects_a_contradicting_subtype() -> None:
    with pytest.raises(DataError, match="contradicts label"):
        Record(Path("x.jpeg"), label=0, subtype="virus", patient="x", source_split="train")
    with pytest.raises(DataError, match="label must be 0"):
        make_record(Path("x.jpeg"), 2, "train")


@pytest.mark.real_data
def test_real_training_folder_counts_and_patients() -> None:
    root = require(REAL_224)
    result = discover_folders(root)
    assert result.ignored == []
    assert sorted(result.records) == ["train", "val"]  # the official test split is not shipped
    train, val = result.records["train"], result.records["val"]
    assert [sum(r.label == i for r in train) for i in range(2)] == [1341, 3875]
    assert [sum(r.label == i for r in val) for i in range(2)] == [8, 8]
    assert subtype_counts(train) == {"normal": 1341, "bacteria": 2530, "virus": 1345}
    check_subtypes(train + val)
    # Every real name follows a known pattern, so no patient key fell back to the file stem.
    assert not [r for r in train + val if r.patient == r.path.stem.lower()]
    assert {r.class_name for r in train} == set(CLASS_NAMES)

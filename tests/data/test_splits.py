"""Re-splitting: official, stratified, patient-grouped, k-fold and the held-out set."""

from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.real_films import REAL_224, require

from cxrnet.data.discovery import discover
from cxrnet.data.duplicates import find_duplicates
from cxrnet.data.records import Record, make_record
from cxrnet.data.split_groups import assign_folds, build_groups
from cxrnet.data.split_report import (
    SPLIT_CSV_COLUMNS,
    count_table,
    format_count_table,
    patient_overlap,
    write_split_csv,
)
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.user_errors import DataError


def synthetic(seed: int = 0, with_test: bool = False) -> dict[str, list[Record]]:
    """Records (no files) named like the real set: 1-4 films per patient, ~1/10 in val."""
    rng = random.Random(seed)
    records: dict[str, list[Record]] = {"train": [], "val": []}
    patients = [("NORMAL", "IM-{:04d}-{:04d}", 0, n) for n in range(80)]
    patients += [("PNEUMONIA", "person{}_bacteria_{}", 1, n) for n in range(70)]
    patients += [("PNEUMONIA", "person{}_virus_{}", 1, n) for n in range(50)]
    for folder, pattern, label, number in patients:
        split = "val" if rng.random() < 0.1 else "train"
        for film in range(rng.randint(1, 4)):
            path = Path("/data", split, folder, pattern.format(number, film) + ".jpeg")
            records[split].append(make_record(path, label, split))
    if with_test:
        records["test"] = [
            make_record(Path("/data/test/NORMAL/IM-9000-0001.jpeg"), 0, "test"),
            make_record(Path("/data/test/PNEUMONIA/person9000_virus_1.jpeg"), 1, "test"),
        ]
    return records


def paths(records: list[Record]) -> list[str]:
    return [str(r.path) for r in records]


def pneumonia_share(records: list[Record]) -> float:
    return sum(r.label for r in records) / len(records)


def pool_of(records: dict[str, list[Record]]) -> list[str]:
    return sorted(paths(records["train"] + records["val"]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"val_fraction": 0.9}, r"val_fraction must be in \(0, 0.5\], got 0.9"),
        ({"val_fraction": 0.0}, r"val_fraction must be in \(0, 0.5\], got 0.0"),
        ({"num_folds": 1}, r"num_folds must be an integer >= 2, got 1"),
        ({"fold": 5}, r"fold must be an integer in \[0, num_folds\) = \[0, 5\), got 5"),
        ({"fold": -1}, r"fold must be .* got -1"),
        ({"holdout_fraction": 0.5}, r"holdout_fraction must be in \[0, 0.5\), got 0.5"),
        ({"split": "random"}, r"split must be one of official, stratified, patient, kfold"),
        ({"split_seed": -3}, r"split_seed must be a non-negative integer, got -3"),
    ],
)
def test_bad_arguments_are_named_with_the_allowed_range(changes: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        SplitConfig(**changes)


def test_official_keeps_the_folders_as_given() -> None:
    records = synthetic(with_test=True)
    splits = make_splits(records, SplitConfig("official"))
    assert {k: paths(v) for k, v in splits.items()} == {k: paths(v) for k, v in records.items()}


def test_official_without_val_says_to_choose_a_re_split() -> None:
    records = synthetic()
    del records["val"]
    with pytest.raises(DataError, match=r"data\.split=stratified"):
        make_splits(records, SplitConfig("official"))


def test_no_training_images_is_an_error() -> None:
    with pytest.raises(DataError, match="no training images"):
        make_splits({"val": synthetic()["val"]}, SplitConfig("stratified"))


@pytest.mark.parametrize("method", ["stratified", "patient"])
def test_val_fraction_is_met_per_class(method: str) -> None:
    records = synthetic()
    splits = make_splits(records, SplitConfig(method, val_fraction=0.25))
    pool = records["train"] + records["val"]
    assert sorted(paths(splits["train"] + splits["val"])) == pool_of(records)
    for label in (0, 1):
        in_val = sum(r.label == label for r in splits["val"])
        in_pool = sum(r.label == label for r in pool)
        assert in_val == pytest.approx(0.25 * in_pool, abs=4)
    assert "test" not in splits


def test_patient_split_has_no_patient_on_both_sides() -> None:
    splits = make_splits(synthetic(), SplitConfig("patient", val_fraction=0.3))
    assert patient_overlap(splits) == {}


def test_splits_are_deterministic_and_seeded() -> None:
    records = synthetic()
    config = SplitConfig("patient", split_seed=7)
    first = make_splits(records, config)
    shuffled = {k: random.Random(1).sample(v, len(v)) for k, v in records.items()}
    again = make_splits(shuffled, config)  # input order must not matter
    other = make_splits(records, replace(config, split_seed=8))
    assert paths(first["val"]) == paths(again["val"])
    assert paths(first["val"]) != paths(other["val"])


def test_test_folder_is_never_re_split() -> None:
    records = synthetic(with_test=True)
    for config in (SplitConfig("stratified"), SplitConfig("patient"), SplitConfig("kfold", fold=3)):
        splits = make_splits(records, config)
        assert paths(splits["test"]) == paths(records["test"])
        assert set(paths(splits["train"] + splits["val"])).isdisjoint(paths(records["test"]))


def test_kfold_folds_cover_every_image_once_and_are_balanced() -> None:
    records = synthetic()
    folds = [make_splits(records, SplitConfig("kfold", num_folds=4, fold=k)) for k in range(4)]
    vals = [paths(f["val"]) for f in folds]
    assert sorted(p for val in vals for p in val) == pool_of(records)
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 4  # groups of at most 4 films
    overall = pneumonia_share(records["train"] + records["val"])
    for fold in folds:
        assert patient_overlap(fold) == {}
        assert sorted(paths(fold["train"] + fold["val"])) == pool_of(records)
        assert pneumonia_share(fold["val"]) == pytest.approx(overall, abs=0.05)


def test_kfold_with_more_folds_than_patients_is_an_error() -> None:
    records = {
        "train": [
            make_record(Path("/d/IM-0001-0001.jpeg"), 0, "train"),
            make_record(Path("/d/person1_virus_1.jpeg"), 1, "train"),
        ]
    }
    with pytest.raises(DataError, match="num_folds=5 but train\\+val has only 2"):
        make_splits(records, SplitConfig("kfold"))


def test_val_without_a_class_is_an_error() -> None:
    records = {
        "train": [make_record(Path(f"/d/IM-{i:04d}-0001.jpeg"), 0, "train") for i in range(20)]
        + [make_record(Path("/d/person1_virus_1.jpeg"), 1, "train")]
    }
    with pytest.raises(DataError, match="the val split has no PNEUMONIA images"):
        make_splits(records, SplitConfig("patient"))


def test_holdout_is_the_same_for_every_fold_fraction_and_method() -> None:
    records = synthetic()
    base = SplitConfig(holdout_fraction=0.2, split_seed=3)
    configs = [replace(base, split="kfold", fold=k) for k in range(5)]
    configs += [
        replace(base, split=m, val_fraction=f)
        for m in ("stratified", "patient")
        for f in (0.1, 0.3)
    ]
    configs.append(base)  # official
    results = [make_splits(records, config) for config in configs]
    holdouts = {tuple(paths(r["test"])) for r in results}
    assert len(holdouts) == 1
    holdout = results[0]["test"]
    assert len(holdout) == pytest.approx(0.2 * len(pool_of(records)), abs=6)
    assert {r.label for r in holdout} == {0, 1}
    for result in results:
        overlap = patient_overlap(result)
        assert ("train", "test") not in overlap
        assert ("val", "test") not in overlap
        assert len(paths(result["train"] + result["val"] + result["test"])) == len(pool_of(records))
    # The holdout changes with the seed, so a study can also repeat it.
    other = make_splits(records, replace(base, split_seed=4))
    assert paths(other["test"]) != paths(holdout)


def test_holdout_seed_fixes_the_held_out_set_while_split_seed_varies() -> None:
    records = synthetic()
    base = SplitConfig(split="patient", holdout_fraction=0.2, holdout_seed=7)
    results = [make_splits(records, replace(base, split_seed=seed)) for seed in (0, 1, 2)]
    assert len({tuple(paths(r["test"])) for r in results}) == 1
    assert len({tuple(paths(r["val"])) for r in results}) == 3
    following = make_splits(records, replace(base, holdout_seed=None, split_seed=7))
    assert paths(following["test"]) == paths(results[0]["test"])
    with pytest.raises(DataError, match="holdout_seed must be null or a non-negative integer"):
        SplitConfig(holdout_seed=-1)


def test_kfold_with_holdout_covers_the_rest_once() -> None:
    records = synthetic()
    folds = [
        make_splits(records, SplitConfig("kfold", fold=k, holdout_fraction=0.2)) for k in range(5)
    ]
    held = set(paths(folds[0]["test"]))
    vals = sorted(p for fold in folds for p in paths(fold["val"]))
    assert vals == sorted(set(pool_of(records)) - held)


def test_holdout_and_test_folder_together_is_an_error() -> None:
    with pytest.raises(DataError, match="choose one"):
        make_splits(synthetic(with_test=True), SplitConfig("patient", holdout_fraction=0.1))


def test_duplicates_stay_on_one_side_even_in_a_file_level_split() -> None:
    records = synthetic()
    # Byte-identical copies under unrelated names: only the duplicate link keeps them together.
    copies = [
        [records["train"][i], records["train"][i + 1]]
        for i in range(0, len(records["train"]) - 1, 6)
    ]
    for seed in range(5):
        splits = make_splits(records, SplitConfig("stratified", split_seed=seed), duplicates=copies)
        val = set(paths(splits["val"]))
        for group in copies:
            assert len({str(r.path) in val for r in group}) == 1


def test_count_table_counts_per_split_class_and_subtype() -> None:
    records = synthetic(with_test=True)
    rows = count_table(records)
    assert [row["split"] for row in rows] == ["train", "val", "test"]
    test_row = rows[2]
    assert test_row == {
        "split": "test",
        "images": 2,
        "patients": 2,
        "NORMAL": 1,
        "PNEUMONIA": 1,
        "normal": 1,
        "bacteria": 0,
        "virus": 1,
    }
    total = sum(int(row["images"]) for row in rows)
    assert total == sum(len(v) for v in records.values())
    text = format_count_table(rows)
    assert text.splitlines()[0].split() == list(test_row)


def test_write_split_csv_writes_one_row_per_image(tmp_path: Path) -> None:
    records = synthetic(with_test=True)
    splits = make_splits(records, SplitConfig("patient"))
    target = tmp_path / "out" / "splits.csv"
    write_split_csv(target, splits)
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SPLIT_CSV_COLUMNS
    assert Counter(row["split"] for row in rows) == {k: len(v) for k, v in splits.items()}
    first_val = next(row for row in rows if row["split"] == "val")
    record = splits["val"][0]
    assert first_val["file"] == str(record.path)
    assert first_val["label"] == record.class_name
    assert first_val["patient"] == record.patient
    assert {row["source_split"] for row in rows} == {"train", "val", "test"}


def real_records() -> dict[str, list[Record]]:
    return discover(require(REAL_224))


@pytest.mark.real_data
def test_real_patient_and_kfold_splits_keep_patients_apart() -> None:
    records = real_records()
    duplicates = find_duplicates(records["train"] + records["val"])
    pool = sorted(paths(records["train"] + records["val"]))
    overall = pneumonia_share(records["train"] + records["val"])

    patient = make_splits(records, SplitConfig("patient"), duplicates)
    assert patient_overlap(patient) == {}
    assert len(patient["val"]) == pytest.approx(0.2 * len(pool), rel=0.02)

    folds = [make_splits(records, SplitConfig("kfold", fold=k), duplicates) for k in range(5)]
    assert sorted(p for fold in folds for p in paths(fold["val"])) == pool
    sizes = np.array([len(fold["val"]) for fold in folds])
    assert sizes.max() - sizes.min() <= 0.02 * sizes.mean()
    for fold in folds:
        assert patient_overlap(fold) == {}
        assert pneumonia_share(fold["val"]) == pytest.approx(overall, abs=0.01)
        virus = sum(r.subtype == "virus" for r in fold["val"]) / len(fold["val"])
        assert virus == pytest.approx(1345 / len(pool), abs=0.01)

    again = make_splits(records, SplitConfig("kfold", fold=2), duplicates)
    assert paths(again["val"]) == paths(folds[2]["val"])
    official = make_splits(records, SplitConfig("official"))
    assert paths(official["val"]) == paths(records["val"])


@pytest.mark.real_data
def test_real_holdout_is_identical_across_folds() -> None:
    records = real_records()
    results = [
        make_splits(records, SplitConfig("kfold", fold=k, holdout_fraction=0.15)) for k in range(5)
    ]
    holdouts = {tuple(paths(result["test"])) for result in results}
    assert len(holdouts) == 1
    for result in results:
        assert patient_overlap(result) == {}


@pytest.mark.parametrize("big_class", [0, 1])
@pytest.mark.parametrize("seed", range(8))
def test_kfold_keeps_each_class_within_its_largest_group_per_fold(
    big_class: int, seed: int
) -> None:
    # One 3-film patient of one class, two 1-film patients of the other, two folds. Balancing
    # totals alone would put both small patients opposite the big one (class counts 0 and 2
    # per fold); per class, each fold may differ by at most that class's largest group.
    small_class = 1 - big_class
    folder = {0: ("NORMAL", "IM-{:04d}-{:04d}"), 1: ("PNEUMONIA", "person{}_bacteria_{}")}

    def films(label: int, patient: int, count: int) -> list[Record]:
        name, pattern = folder[label]
        return [
            make_record(
                Path("/data/train", name, pattern.format(patient, k) + ".jpeg"), label, "train"
            )
            for k in range(count)
        ]

    pool = films(big_class, 1, 3) + films(small_class, 2, 1) + films(small_class, 3, 1)
    groups = build_groups(pool, by_patient=True)
    folds = assign_folds(groups, 2, np.random.default_rng(seed))
    per_fold = {label: [0, 0] for label in (0, 1)}
    for group, fold in zip(groups, folds, strict=True):
        for record in group:
            per_fold[record.label][fold] += 1
    assert sorted(per_fold[big_class]) == [0, 3]
    assert per_fold[small_class] == [1, 1]

"""Named sources (data.sources): every film carries its source, and the splits stay
patient-grouped and stratified within each source, with training-only sources (source_roles)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from helpers.two_sources import train_on_two_sources

from cxrnet.data.records import Record, make_record
from cxrnet.data.sources import resolve_data_root, tag_source, train_only_sources
from cxrnet.data.split_groups import build_groups
from cxrnet.data.split_report import patient_overlap
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.user_errors import DataError


def source_films(name: str, patients: int, seed: int, pneumonia: float) -> dict[str, list[Record]]:
    """Records (no files) of one source, 1-4 films per patient; patient keys p0, p1 ... repeat
    in every source (two sites number their patients alike)."""
    rng = random.Random(seed)
    records: dict[str, list[Record]] = {"train": []}
    for number in range(patients):
        label = int(rng.random() < pneumonia)
        for film in range(rng.randint(1, 4)):
            path = Path("/data", name, f"p{number}_{film}.png")
            subtype = "bacteria" if label else "normal"
            records["train"].append(make_record(path, label, "train", f"p{number}", subtype))
    return tag_source(records, Path("/data", name), name)


def two_sources() -> dict[str, list[Record]]:
    public = source_films("kermany", 150, seed=1, pneumonia=0.75)
    site = source_films("site", 60, seed=2, pneumonia=0.4)
    return {"train": public["train"] + site["train"]}


def by_source(records: list[Record]) -> Counter:
    return Counter(r.metadata["source"] for r in records)


def assert_patient_grouped(splits: dict[str, list[Record]]) -> None:
    """No (source, patient) in two splits."""
    assert patient_overlap(splits) == {}
    where = {}
    for split, records in splits.items():
        for record in records:
            key = (record.metadata["source"], record.patient)
            assert where.setdefault(key, split) == split, key


@pytest.mark.parametrize("split", ["patient", "stratified"])
def test_a_re_split_is_stratified_within_each_source(split: str) -> None:
    records = two_sources()
    splits = make_splits(records, SplitConfig(split, val_fraction=0.25))
    if split == "patient":
        assert_patient_grouped(splits)
    whole = by_source(records["train"])
    val = by_source(splits["val"])
    for source in ("kermany", "site"):
        assert abs(val[source] / whole[source] - 0.25) < 0.05, (source, val, whole)
        # Each source keeps its own share of pneumonia in val.
        films = [r for r in records["train"] if r.metadata["source"] == source]
        in_val = [r for r in splits["val"] if r.metadata["source"] == source]
        share = sum(r.label for r in films) / len(films)
        assert abs(sum(r.label for r in in_val) / len(in_val) - share) < 0.08


def test_the_same_patient_key_in_two_sources_is_two_patients() -> None:
    groups = build_groups(two_sources()["train"], by_patient=True)
    assert all(len({r.metadata["source"] for r in group}) == 1 for group in groups)
    assert len(groups) == 150 + 60


def test_folds_and_holdout_are_patient_grouped_within_each_source() -> None:
    records = two_sources()
    held: set[Path] | None = None
    for fold in range(5):
        config = SplitConfig("kfold", num_folds=5, fold=fold, holdout_fraction=0.2)
        splits = make_splits(records, config)
        assert_patient_grouped(splits)
        test = {r.path for r in splits["test"]}
        assert held is None or test == held  # one holdout for every fold
        held = test
        assert set(by_source(splits["test"])) == {"kermany", "site"}
        assert set(by_source(splits["val"])) == {"kermany", "site"}


def test_a_training_only_source_is_never_in_val_or_test_and_the_other_is_split() -> None:
    records = two_sources()
    public = sum(r.metadata["source"] == "kermany" for r in records["train"])
    roles = train_only_sources({"kermany": "train", "site": "split"})
    assert roles == ("kermany",)
    val_folds: list[set[Path]] = []
    for fold in range(5):
        config = SplitConfig("kfold", num_folds=5, fold=fold, train_only_sources=roles)
        splits = make_splits(records, config)
        assert_patient_grouped(splits)
        assert by_source(splits["val"]) == Counter({"site": len(splits["val"])})
        assert by_source(splits["train"])["kermany"] == public
        val_folds.append({r.path for r in splits["val"]})
    # The site's films are split 5-fold: each in exactly one fold's val.
    site = {r.path for r in records["train"] if r.metadata["source"] == "site"}
    assert sorted(p for fold in val_folds for p in fold) == sorted(site)
    holdout = SplitConfig("patient", holdout_fraction=0.2, train_only_sources=roles)
    splits = make_splits(records, holdout)
    assert set(by_source(splits["test"])) == {"site"}
    assert set(by_source(splits["val"])) == {"site"}


def test_source_roles_errors_name_the_setting() -> None:
    records = two_sources()
    with pytest.raises(DataError, match=r"data.source_roles names source\(s\) \['kaggle'\]"):
        make_splits(records, SplitConfig("patient", train_only_sources=("kaggle",)))
    with pytest.raises(DataError, match=r"data.source_roles.site='val'"):
        train_only_sources({"site": "val"})
    with pytest.raises(DataError, match="every source training-only"):
        make_splits(records, SplitConfig("patient", train_only_sources=("kermany", "site")))


def test_a_training_only_sources_test_films_train_too(caplog: pytest.LogCaptureFixture) -> None:
    records = two_sources()
    public = [r for r in records["train"] if r.metadata["source"] == "kermany"]
    site = [r for r in records["train"] if r.metadata["source"] == "site"]
    given = {"train": public[5:] + site[5:], "test": public[:5] + site[:5]}
    splits = make_splits(given, SplitConfig("patient", train_only_sources=("kermany",)))
    assert splits["test"] == site[:5]
    assert {r.path for r in public} <= {r.path for r in splits["train"]}
    assert "5 test film(s) of the training-only source(s) ['kermany'] train too" in caplog.text


def test_a_film_keeps_its_manifest_source_unless_a_named_source_contradicts_it() -> None:
    film = make_record(Path("/m/a.png"), 1, "train", metadata={"source": "rsna"})
    bare = make_record(Path("/m/b.png"), 0, "train")
    tagged = tag_source({"train": [film, bare]}, Path("/m/films.csv"), None)["train"]
    assert [r.metadata["source"] for r in tagged] == ["rsna", "films"]
    folder = tag_source({"train": [bare]}, Path("/data/chest_xray"), None)["train"]
    assert folder[0].metadata == {"source": "chest_xray"}
    assert tag_source({"train": [film]}, Path("/m/films.csv"), "rsna")["train"] == [film]
    with pytest.raises(DataError, match=r"source='rsna' in its source column.*names it 'site'"):
        tag_source({"train": [film]}, Path("/m/films.csv"), "site")


def test_root_and_sources_together_are_an_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.root=/x and data.sources=\{'a': '/y'\}"):
        resolve_data_root("/x", None, tmp_path, {"a": "/y"})
    assert resolve_data_root(None, None, tmp_path, {"a": "/y"}) is None


@pytest.mark.slow
def test_cxrnet_train_on_two_named_sources_writes_the_source_to_split_csv(tmp_path: Path) -> None:
    done, roots, rows = train_on_two_sources(
        tmp_path, ["data.source_balance=equal", "data.split=patient"]
    )
    public, site = roots["public"], roots["site"]
    printed = done.stdout + done.stderr
    assert "images per split, source public:" in printed
    assert "images per split, source site:" in printed
    seen = Counter((row["split"], row["source"]) for row in rows)
    assert {source for _, source in seen} == {"public", "site"}
    assert all(
        seen[(split, source)] > 0
        for split in ("train", "val", "test")
        for source in ("public", "site")
    )
    for row in rows:
        assert Path(row["file"]).is_relative_to(public if row["source"] == "public" else site)
    # Patient keys repeat across the two sources; within each, no patient is in train and val
    # (the test folders are each source's own, never re-split).
    splits: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        splits.setdefault((row["source"], row["patient"]), set()).add(row["split"])
    assert all(not {"train", "val"} <= in_splits for in_splits in splits.values())

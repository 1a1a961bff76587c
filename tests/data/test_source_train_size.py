"""data.source_train_size: per source, how many training films train (a count or a fraction),
whole patients, stratified, nested across sizes; the rest is the split ``unused``."""

from __future__ import annotations

import csv
import itertools
import logging
import random
from collections import Counter
from pathlib import Path

import pytest
from helpers.datamodule import make_dm
from helpers.two_sources import train_on_two_sources

from cxrnet.data.manifest import read_manifest
from cxrnet.data.records import UNUSED_SPLIT, Record, make_record
from cxrnet.data.sources import tag_source, unnamed_source
from cxrnet.data.split_report import patient_overlap, write_split_csv
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from cxrnet.user_errors import DataError

SUBTYPES = ("normal", "bacteria", "virus")


def source_films(name: str, patients: int, seed: int) -> list[Record]:
    """Records (no files) of one source: 1-3 films per patient, normal / bacteria / virus."""
    rng = random.Random(seed)
    films = []
    for number in range(patients):
        subtype = rng.choices(SUBTYPES, weights=(0.3, 0.45, 0.25))[0]
        for film in range(rng.randint(1, 3)):
            path = Path("/data", name, f"p{number}_{film}.png")
            films.append(
                make_record(path, int(subtype != "normal"), "train", f"p{number}", subtype)
            )
    return tag_source({"train": films}, Path("/data", name), name)["train"]


def two_sources() -> dict[str, list[Record]]:
    return {"train": source_films("public", 120, seed=1) + source_films("site", 90, seed=2)}


def of(records: list[Record], source: str) -> list[Record]:
    return [r for r in records if r.metadata["source"] == source]


def paths(records: list[Record]) -> set[Path]:
    return {r.path for r in records}


def strata(records: list[Record]) -> Counter:
    return Counter((r.label, r.subtype) for r in records)


def sized(size: object, **config: object) -> dict[str, list[Record]]:
    return make_splits(
        two_sources(), SplitConfig(**{"split": "patient", **config, "source_train_size": size})
    )


def test_a_count_keeps_about_that_many_films_per_stratum_and_leaves_the_rest_unused() -> None:
    whole = sized(None)
    splits = sized({"site": 30})
    site_train = of(whole["train"], "site")
    kept = of(splits["train"], "site")
    assert abs(len(kept) - 30) <= 3, len(kept)
    # Each (class, subtype) keeps about its share of the source's training films.
    for stratum, count in strata(site_train).items():
        assert abs(strata(kept)[stratum] - 30 * count / len(site_train)) <= 2.5, stratum
    # The rest is listed as unused, not dropped; nothing else moves.
    assert paths(kept) | paths(splits[UNUSED_SPLIT]) == paths(site_train)
    assert not paths(kept) & paths(splits[UNUSED_SPLIT])
    assert {r.metadata["source"] for r in splits[UNUSED_SPLIT]} == {"site"}
    assert of(splits["train"], "public") == of(whole["train"], "public")
    assert splits["val"] == whole["val"]
    assert UNUSED_SPLIT not in whole


def test_zero_keeps_none_of_the_sources_films_which_still_validate() -> None:
    whole = sized(None)
    splits = sized({"site": 0})
    assert of(splits["train"], "site") == []
    assert paths(splits[UNUSED_SPLIT]) == paths(of(whole["train"], "site"))
    assert splits["val"] == whole["val"]  # the site's films still choose the checkpoint


def test_whole_patients_and_byte_identical_copies_stay_together() -> None:
    records = two_sources()
    site = of(records["train"], "site")
    # Two patients' films that are byte-identical: one unit, kept or left out together.
    copies = [[site[0], site[-1]]]
    for size in (5, 12, 30, 60):
        config = SplitConfig("stratified", val_fraction=0.2, source_train_size={"site": size})
        splits = make_splits(records, config, duplicates=copies)
        assert patient_overlap({"train": splits["train"], "unused": splits[UNUSED_SPLIT]}) == {}
        sides = {
            split for split, items in splits.items() for r in items if r.path in paths(copies[0])
        }
        assert len(sides) == 1, (size, sides)


@pytest.mark.parametrize(
    "sizes", [(3, 8, 15, 30, 60, 100_000), (0.05, 0.2, 0.5, 0.9, 1.0)], ids=["counts", "fractions"]
)
def test_a_smaller_size_keeps_a_subset_of_a_larger_sizes_films(sizes: tuple) -> None:
    for split, fold in (("patient", 0), ("kfold", 2)):
        kept = [
            paths(of(sized({"site": s}, split=split, fold=fold)["train"], "site")) for s in sizes
        ]
        assert all(len(small) < len(large) for small, large in itertools.pairwise(kept))
        assert all(small <= large for small, large in itertools.pairwise(kept)), split


def test_every_count_keeps_a_subset_of_the_next_counts_films() -> None:
    records = two_sources()
    config = {"split": "kfold", "fold": 1}
    total = len(of(make_splits(records, SplitConfig(**config))["train"], "site"))
    kept = [
        paths(
            of(
                make_splits(records, SplitConfig(**config, source_train_size={"site": n}))["train"],
                "site",
            )
        )
        for n in range(1, total + 2)
    ]
    assert all(small <= large for small, large in itertools.pairwise(kept))
    assert len(kept[-1]) == total


def test_a_fraction_keeps_that_share_of_each_stratum_and_one_keeps_all() -> None:
    whole = of(sized(None)["train"], "site")
    half = of(sized({"site": 0.5})["train"], "site")
    for stratum, count in strata(whole).items():
        assert abs(strata(half)[stratum] - count / 2) <= 2, stratum
    everything = sized({"site": 1.0})
    assert of(everything["train"], "site") == whole
    assert UNUSED_SPLIT not in everything


def test_the_subset_is_reproducible_and_follows_the_seed_and_the_fold() -> None:
    records = two_sources()

    def kept(**config: object) -> set[Path]:
        # public trains only (source_roles): its training films are the same in every fold, so
        # only the stream can change which of them are kept.
        full = {"source_train_size": {"public": 40}, "train_only_sources": ("public",), **config}
        return paths(of(make_splits(records, SplitConfig(**full))["train"], "public"))

    first = kept(split="kfold", fold=0)
    assert first == kept(split="kfold", fold=0)
    assert first != kept(split="kfold", fold=1)
    assert first != kept(split="kfold", fold=0, split_seed=1)
    # Outside k-fold the fold setting plays no part.
    assert kept(split="patient", fold=0) == kept(split="patient", fold=3)


def test_a_training_only_source_and_a_holdout_are_subset_after_the_split() -> None:
    records = two_sources()
    config = SplitConfig(
        "patient",
        holdout_fraction=0.2,
        train_only_sources=("public",),
        source_train_size={"public": 25, "site": 0.5},
    )
    splits = make_splits(records, config)
    assert abs(len(of(splits["train"], "public")) - 25) <= 3
    assert not of(splits["val"] + splits["test"], "public")
    plain = make_splits(
        records, SplitConfig("patient", holdout_fraction=0.2, train_only_sources=("public",))
    )
    assert splits["test"] == plain["test"] and splits["val"] == plain["val"]


def test_a_size_above_the_sources_films_keeps_all_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="cxrnet.data.splits"):
        splits = sized({"site": 100_000})
    assert of(splits["train"], "site") == of(sized(None)["train"], "site")
    assert UNUSED_SPLIT not in splits
    assert "data.source_train_size.site=100000" in caplog.text
    assert "all of them train" in caplog.text


def test_an_unknown_source_is_an_error_listing_the_sources() -> None:
    with pytest.raises(DataError, match=r"data.source_train_size names source\(s\) \['clinic'\]"):
        sized({"clinic": 10})
    with pytest.raises(DataError, match=r"the sources are \['public', 'site'\]"):
        sized({"clinic": 10})


@pytest.mark.parametrize("size", [-1, -3, True, "10", 1.5, 2.0, 0.0, None])
def test_a_bad_size_is_an_error_naming_the_setting(size: object) -> None:
    with pytest.raises(DataError, match=r"data\.source_train_size\.site="):
        SplitConfig("patient", source_train_size={"site": size})


def test_a_setting_that_is_not_a_mapping_is_an_error_naming_it() -> None:
    with pytest.raises(DataError, match=r"data\.source_train_size must"):
        SplitConfig("patient", source_train_size="site")  # type: ignore[arg-type]
    assert SplitConfig("patient", source_train_size=None).source_train_size == ()


def test_training_without_a_class_after_subsetting_names_the_setting() -> None:
    site = {"train": source_films("site", 40, seed=3)}
    expected = r"the train split has no .* source_train_size \{'site': 1\}"
    with pytest.raises(DataError, match=expected):
        make_splits(site, SplitConfig("patient", source_train_size={"site": 1}))


def test_split_csv_lists_unused_films_and_reads_back_as_the_films_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    splits = sized({"site": 20})
    write_split_csv(tmp_path / "split.csv", splits)
    with (tmp_path / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert Counter(row["split"] for row in rows)[UNUSED_SPLIT] == len(splits[UNUSED_SPLIT])
    with caplog.at_level(logging.INFO, logger="cxrnet.data.manifest"):
        back = read_manifest(tmp_path / "split.csv", check_files=False)
    assert {split: paths(items) for split, items in back.items()} == {
        split: paths(items) for split, items in splits.items() if split != UNUSED_SPLIT
    }
    assert f"{len(splits[UNUSED_SPLIT])} row(s) with split=unused" in caplog.text


def test_the_datamodule_never_decodes_unused_films(tmp_path: Path) -> None:
    """A rank that receives splits with ``unused`` films (DDP) decodes only the others: the
    unused films here do not exist, and decoding them would fail."""
    root = generate_synthetic(tmp_path / "data", SyntheticSpec(n_train=8, n_val=4, n_test=4))
    dm = make_dm(root, source_train_size={unnamed_source(root): 6})
    dm.setup("fit")
    received = {split: list(records) for split, records in dm.resolved_splits.items()}
    received[UNUSED_SPLIT] = [make_record(tmp_path / "gone.png", 1, "train", "ghost", "virus")]
    again = make_dm(root)
    again._load_splits(received, "fit")
    assert set(again.datasets) == {"train", "val", "test"}
    assert [r.path for r in again.unused] == [tmp_path / "gone.png"]
    assert {row["split"] for row in again.counts()} == {"train", "val", "test", UNUSED_SPLIT}


@pytest.mark.slow
def test_cxrnet_train_trains_on_the_sized_films_and_lists_the_rest_as_unused(
    tmp_path: Path,
) -> None:
    done, _, rows = train_on_two_sources(tmp_path, ["data.source_train_size={site: 10}"])
    printed = done.stdout + done.stderr
    site_table = printed.split("images per split, source site:")[1][:600]
    assert f"\n{UNUSED_SPLIT} " in site_table.replace("  ", " ").replace("\n ", "\n"), site_table
    seen = Counter((row["split"], row["source"]) for row in rows)
    # About 10: whole patients (a synthetic patient has up to four films) in each of three
    # strata, so each stratum's count may miss its share by up to two films.
    assert 4 <= seen[("train", "site")] <= 16, seen
    site_train = site_table.split("\n")[2].split()
    assert site_train[:2] == ["train", str(seen[("train", "site")])], site_table
    assert seen[("train", "site")] + seen[(UNUSED_SPLIT, "site")] == 32
    assert seen[("train", "public")] == 32 and seen[(UNUSED_SPLIT, "public")] == 0

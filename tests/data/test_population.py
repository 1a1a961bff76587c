"""A model card's title, banner and limits come from the films a run used (issue 32 item 2)."""

from __future__ import annotations

from pathlib import Path

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.population import (
    KERMANY_LIMITS,
    SYNTHETIC,
    describe_data,
    describe_run_data,
    source_kinds,
)
from cxrnet.data.public.nih import POLICY as NIH
from cxrnet.data.records import Record


def film(source: str, i: int, label: int, subtype: str = "", age: str = "") -> Record:
    meta = {"source": source, **({"age": age} if age else {})}
    kind = subtype or ("normal" if label == 0 else "unknown")
    return Record(
        Path(f"/{source}/{i}.png"), label, kind, f"{source}{i}", "train", tuple(meta.items())
    )


def kermany(n: int) -> list[Record]:
    return [film("kermany", i, i % 2, "bacteria" if i % 2 else "normal") for i in range(n)]


def test_synthetic_films_are_named_so_in_the_title_and_a_banner() -> None:
    films = [film("synthetic", i, i % 2, "bacteria" if i % 2 else "normal") for i in range(40)]
    described = describe_data({"synthetic": SYNTHETIC}, {"train": films})
    assert described.title == "SYNTHETIC films (not patients)"
    assert described.banner.startswith("**Synthetic films, not patients.**")
    # Kermany-style names, but the generator's: none of the Kermany dataset's limits.
    assert not set(KERMANY_LIMITS) & set(described.limits)
    assert any(limit.startswith("Synthetic films:") for limit in described.limits)


def test_kermany_films_carry_that_dataset_s_limits_and_the_val_size() -> None:
    val = kermany(16)
    described = describe_data({}, {"train": kermany(100), "val": val}, min_val_per_class=20)
    assert described.title == "kermany (paediatric, Kermany et al., 116 films)"
    assert described.banner == ""
    assert described.limits[0] == (
        "The val split has 16 films (8 NORMAL, 8 PNEUMONIA), fewer than "
        "data.min_val_per_class=20 of a class: the checkpoint and threshold chosen on it are "
        "too uncertain to use. Use a patient-grouped split (data.split=patient) or a held-out set."
    )
    assert described.limits[1:] == KERMANY_LIMITS
    # A val split large enough has no such line.
    enough = describe_data({}, {"val": kermany(40)}, min_val_per_class=20)
    assert not any(limit.startswith("The val split") for limit in enough.limits)


def test_several_sources_are_each_named_with_their_counts_ages_and_limits() -> None:
    adults = [film("rsna_adult", i, i % 2, age=str(20 + i)) for i in range(30)]
    nih = [film("nih", i, 0, age=f"{30 + i:03d}Y") for i in range(5)]
    splits = {"train": kermany(10) + adults[:20] + nih, "val": adults[20:]}
    described = describe_data({"nih": NIH.dataset}, splits, labelled={NIH.dataset: NIH.labelled})
    assert described.title == (
        "kermany (paediatric, Kermany et al., 10 films) and "
        "nih (NIH ChestX-ray14, 5 films, ages 30-34) and rsna_adult (30 films, ages 20-49)"
    )
    assert [f"kermany: {limit}" for limit in KERMANY_LIMITS] == list(described.limits[:3])
    assert described.limits[3] == f"nih: NIH ChestX-ray14, labelled {NIH.labelled}."
    assert "One source" not in " ".join(described.limits)


def test_one_site_without_ages_says_what_it_cannot_tell() -> None:
    site = [film("site", i, i % 2) for i in range(12)]
    described = describe_data({}, {"test": site})
    assert described.title == "site (12 films)"
    assert described.limits == (
        "no ages recorded: nothing here is known per age group.",
        "One source (site): no evidence about other hospitals, devices or populations.",
    )


def test_a_run_s_settings_name_its_synthetic_and_public_sources(
    synthetic_root: Path, tmp_path: Path
) -> None:
    settings = ChestXRayDataModule(
        sources={"quick": str(synthetic_root), "nih": {"format": "nih", "root": str(tmp_path)}}
    ).settings
    assert source_kinds(settings) == {"quick": SYNTHETIC, "nih": "NIH ChestX-ray14"}
    described = describe_run_data(settings, {})
    assert described.title == "nih (NIH ChestX-ray14) and quick (SYNTHETIC)"
    assert f"nih: NIH ChestX-ray14, labelled {NIH.labelled}." in described.limits

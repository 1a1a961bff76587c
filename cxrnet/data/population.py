"""What a run's films are, said from the data actually used: the model card's title, a banner
no reader of a synthetic run can miss, and the limits that follow from the sources, their ages
and the size of the val split (not one dataset's limits printed on every card).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrnet.data.data_settings import DataSettings
from cxrnet.data.dicom_header import AGE, years_of_age
from cxrnet.data.film_report import small_val_counts
from cxrnet.data.records import CLASS_NAMES, Record
from cxrnet.data.sources import source_name, unnamed_source
from cxrnet.data.synthetic import MARKER_NAME

SYNTHETIC = "synthetic"
KERMANY = "Kermany"  # the Guangzhou paediatric films, known by their file names

SYNTHETIC_BANNER = (
    "**Synthetic films, not patients.** Every film scored here was drawn by cxrnet's own "
    "generator (`cxrnet-synthetic`, the quick start's data): these numbers show that the "
    "pipeline runs from folders to this report, and say nothing about chest X-rays, patients "
    "or any model's clinical use."
)
SYNTHETIC_LIMIT = (
    "Synthetic films: the classes differ by a drawn pattern, not by disease; no number here "
    "transfers to real films."
)
KERMANY_LIMITS = (
    "Single centre (Guangzhou), paediatric patients aged 1-5, anterior-posterior films: no "
    "evidence about adults, other hospitals or other devices.",
    "Normal and pneumonia films differ in original size and aspect ratio; squashing to a "
    "square can leave a shortcut a network may learn (data.resize=letterbox avoids it).",
    "Labels come from the dataset's folder names, graded by two physicians; no radiology "
    "reports or follow-up.",
)


@dataclass(frozen=True)
class DataDescription:
    """The words a model card takes from its data."""

    title: str  # what the films are: "SYNTHETIC films", "paediatric films (Kermany) and ..."
    banner: str  # a paragraph under the title ("" when there is nothing to warn of)
    limits: tuple[str, ...]


def describe_run_data(
    settings: DataSettings, splits: Mapping[str, Sequence[Record]]
) -> DataDescription:
    """``describe_data`` for a data module's settings and the splits it holds."""
    labelled = {
        public.policy.dataset: public.policy.labelled
        for public in settings.public_sources
        if public is not None
    }
    return describe_data(source_kinds(settings), splits, settings.min_val_per_class, labelled)


def source_kinds(settings: DataSettings) -> dict[str, str]:
    """Each configured source's name (as its films carry it) and what it is, where cxrnet
    knows: a public dataset's name, or ``SYNTHETIC`` for a folder the generator wrote."""
    kinds: dict[str, str] = {}
    sources = zip(settings.sources, settings.source_names, settings.public_sources, strict=True)
    for origin, name, public in sources:
        label = name or unnamed_source(origin)
        if public is not None:
            kinds[label] = public.policy.dataset
        elif is_synthetic(origin):
            kinds[label] = SYNTHETIC
    return kinds


def is_synthetic(origin: Path | str) -> bool:
    """A folder ``cxrnet-synthetic`` (or the quick start) generated: it holds the marker."""
    return (Path(origin) / MARKER_NAME).is_file()


def describe_data(
    kinds: Mapping[str, str],
    splits: Mapping[str, Sequence[Record]],
    min_val_per_class: int = 0,
    labelled: Mapping[str, str] | None = None,
) -> DataDescription:
    """The title, banner and limits for films of ``splits`` (every split a card counts; none
    for a card that has only its sources) from sources of ``kinds`` (``source_kinds``).
    ``labelled``: how each public dataset was labelled, by its name (``LabelPolicy.labelled``)."""
    films: dict[str, list[Record]] = defaultdict(list)
    for records in splits.values():
        for record in records:
            films[source_name(record)].append(record)
    names = sorted(set(films) | set(kinds))
    kind = {name: kinds.get(name) or _kind_of_films(films.get(name, ())) for name in names}
    synthetic = bool(names) and all(kind[name] == SYNTHETIC for name in names)
    # Among real sources a generated one is marked in the title; all generated, the title is.
    parts = [_population(name, kind[name], films.get(name, ()), not synthetic) for name in names]
    title = " and ".join(parts) or "chest films"
    if synthetic:
        title = "SYNTHETIC films (not patients)" + (f": {title}" if len(names) > 1 else "")
    limits: list[str] = []
    if any(kind[name] == SYNTHETIC for name in names):
        limits.append(SYNTHETIC_LIMIT)
    limits += _val_limits(splits.get("val", ()), min_val_per_class)
    several = len(names) > 1
    for name in names:
        prefix = f"{name}: " if several else ""
        if kind[name] == KERMANY:
            limits += [prefix + limit for limit in KERMANY_LIMITS]
        elif kind[name] and kind[name] != SYNTHETIC:
            how = (labelled or {}).get(kind[name], "")
            limits.append(f"{prefix}{kind[name]}" + (f", labelled {how}." if how else "."))
        if kind[name] not in (SYNTHETIC, KERMANY) and films.get(name) and not _ages(films[name]):
            limits.append(f"{prefix}no ages recorded: nothing here is known per age group.")
    real = [name for name in names if kind[name] != SYNTHETIC]
    if len(real) == 1 and kind[real[0]] != KERMANY:
        limits.append(
            f"One source ({real[0]}): no evidence about other hospitals, devices or populations."
        )
    return DataDescription(title, SYNTHETIC_BANNER if synthetic else "", tuple(limits))


def _kind_of_films(films: Sequence[Record]) -> str:
    # Films the generator wrote, listed by a manifest: its folder holds the marker, a few levels
    # up (root/split/CLASS/film).
    if films and any(is_synthetic(folder) for folder in films[0].path.parents[:4]):
        return SYNTHETIC
    # The Kermany set names its pneumonia films personN_bacteria_M / personN_virus_M: the only
    # films whose subtype comes from the file name.
    if any(record.subtype in ("bacteria", "virus") for record in films):
        return KERMANY
    return ""


def _population(name: str, kind: str, films: Sequence[Record], mark: bool = False) -> str:
    what = [f"{len(films):,} films"] if films else []
    if kind == SYNTHETIC:
        what = ["SYNTHETIC", *what] if mark else what
        return f"{name} ({', '.join(what)})" if what else name
    if kind == KERMANY:
        what.insert(0, "paediatric, Kermany et al.")
    elif kind:
        what.insert(0, kind)
    ages = _ages(films)
    if ages:
        what.append(f"ages {min(ages):g}-{max(ages):g}")
    return f"{name} ({', '.join(what)})" if what else name


def _ages(films: Sequence[Record]) -> list[float]:
    ages = []
    for record in films:
        for column, value in record.meta:
            if column == AGE and (years := years_of_age(value)) is not None:
                ages.append(years)
    return ages


def _val_limits(val: Sequence[Record], minimum: int) -> list[str]:
    if not val:
        return []
    counts = small_val_counts([record.label for record in val], CLASS_NAMES, minimum)
    if counts is None:
        return []
    return [
        f"The val split has {len(val)} films ({counts}), fewer than data.min_val_per_class="
        f"{minimum} of a class: the checkpoint and threshold chosen on it are too uncertain to "
        "use. Use a patient-grouped split (data.split=patient) or a held-out set."
    ]

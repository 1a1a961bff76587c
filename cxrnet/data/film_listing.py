"""Finding the films of every source (folders and manifests), with the files they leave out.

What ``ChestXRayDataModule.setup`` (and ``cxrnet-cache``) lists before anything is split or
decoded: the records per split, each film's facts from one stat (or from the image cache's
index, when ``data.verify_files=false`` and the cache lists exactly these films), the files
ignored with their reasons, and the films of classes other than NORMAL/PNEUMONIA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.cache_listing import trusted_facts
from cxrnet.data.data_settings import DataSettings
from cxrnet.data.discovery import discover_folders
from cxrnet.data.files import Facts
from cxrnet.data.manifest import read_manifest
from cxrnet.data.other_classes import OtherFilm
from cxrnet.data.public.listing import read_public
from cxrnet.data.records import Record
from cxrnet.data.sources import combine_records, tag_source
from cxrnet.data.splits import SplitConfig
from cxrnet.user_errors import DataError

log = logging.getLogger("cxrnet.data.datamodule")


@dataclass
class Listing:
    """The films found: records per split, the facts of each (None when nothing was stat'ed),
    the files ignored with their reasons, and the films of other classes."""

    records: dict[str, list[Record]]
    facts: Facts | None
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    others: list[OtherFilm] = field(default_factory=list)


def list_films(settings: DataSettings, facts: Facts | None) -> Listing:
    """Records from every source; ``facts`` None stats no film (names only), else it is filled
    with each film's facts."""
    parts = []
    ignored: list[tuple[Path, str]] = []
    # Only a test set keeps films of other classes; training data lists them as ignored
    # (folders) or refuses them (manifest rows, naming each line: a misspelt label must not
    # drop a film from training), unless data.other_classes=ignore lists those too.
    scored = settings.unsplit == "test"
    ignoring = not scored and settings.other_classes == "ignore"
    others: list[OtherFilm] | None = [] if scored or ignoring else None
    # data.task=findings trains on the films of OTHER_ABNORMAL and reads every film's findings.
    findings = settings.task == "findings"
    sources = zip(settings.sources, settings.source_names, settings.public_sources, strict=True)
    for source, name, public in sources:
        if public is not None:
            found = read_public(
                public,
                settings.task,
                settings.uncertain,
                scored,
                facts,
                skip_missing=settings.on_bad_image == "skip",
                cache_dir=settings.cache_dir,
                name=name,
            )
            parts.append(tag_source(found.records, source, name))
            ignored.extend(found.ignored)
            if others is not None:  # a public reader has other-class films only when scored
                others.extend(found.others)
            continue
        _check_source_exists(source, name)
        if source.suffix.lower() == ".csv":
            manifest = read_manifest(
                source,
                settings.unsplit,
                others,
                facts,
                check_files=facts is not None,
                others_any_split=ignoring,
                finding_classes=findings,
            )
            parts.append(tag_source(manifest, source, name))
            continue
        unsplit = None if settings.unsplit == "train" else settings.unsplit
        result = discover_folders(source, unsplit, facts, findings)
        parts.append(tag_source(result.records, source, name))
        ignored.extend(result.ignored)
        if others is not None:
            others.extend(result.others)
    if ignoring:
        ignored.extend(
            (film.path, f"class {film.class_name}: neither NORMAL nor PNEUMONIA "
             "(data.other_classes=ignore)")
            for film in others or []
        )  # fmt: skip
        others = []
    return Listing(combine_records(*parts), facts, ignored, others or [])


def _check_source_exists(source: Path, name: str | None) -> None:
    """A source that is not there, named by the setting that gave it: ``data.sources.<name>``
    for a named source (the user never wrote ``data.root``), ``data.root`` otherwise."""
    if source.exists():
        return
    setting = f"data.sources.{name}" if name is not None else "data.root"
    what = "manifest" if source.suffix.lower() == ".csv" else "folder"
    raise DataError(
        f"{setting}={source}: no such {what}; point {setting} at the {what} as it is on this "
        "machine (docs/datasets.md says where each public dataset comes from and how to write "
        "a site's manifest)"
    )


def find_films(settings: DataSettings, walk: Callable[[Facts | None], Listing]) -> Listing:
    """``walk`` (``list_films`` of these settings) with each film's facts from one stat, or
    from the image cache's index when ``verify_files`` is off and the cache lists exactly
    these films."""
    if not settings.verify_files and settings.cache_dir is not None:
        listing = walk(None)
        films = sorted(
            (record for records in listing.records.values() for record in records),
            key=lambda record: str(record.path),
        )
        trusted = trusted_facts(films, settings.decode, settings.cache_dir)
        if trusted is not None:
            log.info(
                "data.verify_files=false: %d films taken as the image cache recorded them "
                "(no file stat'ed; a film edited in place since would keep its old pixels)",
                len(trusted),
            )
            listing.facts = trusted
            return listing
        log.info("data.verify_files=false, but no image cache lists these films: checking")
    return walk({})


def scored_as_given(
    found: dict[str, list[Record]], split: SplitConfig, root: Path
) -> dict[str, list[Record]]:
    """Data without training films (an external test set): its splits as they are, as no
    split setting can carve anything from films that were never training data."""
    if split.holdout_fraction > 0:
        raise DataError(
            f"data.holdout_fraction={split.holdout_fraction} carves a test set "
            f"from training films and {root} has none; set data.holdout_fraction=0"
        )
    log.info(
        "%s holds no training films: scored as given (%s)",
        root,
        ", ".join(f"{name} {len(records)}" for name, records in found.items()),
    )
    return dict(found)

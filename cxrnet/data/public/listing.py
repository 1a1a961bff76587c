"""A public dataset's films as the run uses them: records per split, the films of other classes
(scored as their own group), and every film left out, with the reason.

What the task takes from a film (``cxrnet.data.public.policy`` says which class it is):

- ``binary`` (and ``subtype``): NORMAL and PNEUMONIA films. OTHER_ABNORMAL films are scored as
  their own group when the data is a test set, and listed as ignored when it trains.
- ``findings``: every film with a class or a present finding, with all the findings its
  dataset labels.

A film the labels list that is not on disk stops the run, naming the dataset, the count and the
first one; with ``data.on_bad_image=skip`` each is listed as ignored instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.bulk import collector_paused
from cxrnet.data.files import Facts, RealFolders, path_facts
from cxrnet.data.findings import Uncertain
from cxrnet.data.other_classes import OtherFilm, other_film
from cxrnet.data.public import listing_cache
from cxrnet.data.public.formats import PublicSource
from cxrnet.data.public.listing_cache import listing_key
from cxrnet.data.public.policy import (
    PNEUMONIA,
    PublicFilm,
    Skipped,
    film_class,
    is_abnormal,
    left_out_reason,
)
from cxrnet.data.records import (
    OTHER_ABNORMAL,
    SOURCE_COLUMN,
    SPLIT_NAMES,
    Record,
    make_record,
)
from cxrnet.user_errors import DataError


@dataclass
class PublicListing:
    """Records per split, films of other classes, and the films left out with the reason."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    others: list[OtherFilm] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Use:
    """How this run uses a dataset's films: the task, uncertain labels, test data or training."""

    task: str
    uncertain: Uncertain
    scored: bool  # the data is a test set (cxrnet-eval): other classes are scored
    # The source's name, written into each film's metadata here (``sources.tag_source`` would
    # otherwise copy every record once more to add it).
    name: str | None = None

    def metadata(self, film: PublicFilm) -> dict[str, str]:
        return {**film.metadata, SOURCE_COLUMN: self.name} if self.name else dict(film.metadata)

    def outcome(self, film: PublicFilm, source: PublicSource) -> Record | OtherFilm | str:
        """The film's record, its OtherFilm, or why it is left out."""
        policy = source.policy
        if not film.frontal and source.views == "frontal":
            view = film.metadata.get("view", "unknown")
            return f"view {view}: frontal films only (the source's views=all reads it)"
        klass = film_class(policy, film.values, film.normal, self.uncertain)
        # The dataset's own patient ID: splits and reports key patients by source as well.
        patient = film.patient
        if self.task == "findings":
            if klass is None and not is_abnormal(film.values):
                return left_out_reason(policy, film.values, self.uncertain)
            return self._record(film, patient, int(klass == PNEUMONIA), findings=True)
        if klass is None:
            return left_out_reason(policy, film.values, self.uncertain)
        if klass == OTHER_ABNORMAL:
            if self.scored:
                return other_film(film.path, OTHER_ABNORMAL, patient, self.metadata(film))
            return (
                f"class {OTHER_ABNORMAL}: data.task={self.task} trains NORMAL against PNEUMONIA "
                "(data.task=findings trains on it)"
            )
        return self._record(film, patient, int(klass == PNEUMONIA), findings=False)

    def _record(self, film: PublicFilm, patient: str, label: int, findings: bool) -> Record:
        return make_record(
            film.path,
            label,
            film.split,
            patient=patient,
            subtype="unknown" if label else "normal",
            metadata=self.metadata(film),
            findings=tuple(sorted(film.values.items())) if findings else (),
        )


def read_public(
    source: PublicSource,
    task: str,
    uncertain: Uncertain,
    scored: bool,
    facts: Facts | None,
    skip_missing: bool,
    cache_dir: Path | None = None,
    name: str | None = None,
) -> PublicListing:
    """The films of ``source`` this run uses; ``facts`` None stats no film (a warm start that
    trusts the image cache), else it receives each film's facts and a missing film is reported.
    With ``cache_dir``, the listing is kept there and a later start with the same label files
    reads it back instead of parsing them (``listing_cache``). ``name``: the source's name,
    each film's ``source``."""
    use = _Use(task, uncertain, scored, name)
    with collector_paused():
        stored = None
        if cache_dir is not None:
            key = listing_key(source, (task, uncertain, scored, name), source.policy.files)
            stored = cache_dir / listing_cache.FOLDER / f"{key}.json"
        listing = _stored(stored)
        parsed = listing is None
        if listing is None:
            listing = _parse(source, use)
        checked = _checked(source, listing, facts, skip_missing)
        # Kept only once the films check out: a start that fails leaves nothing in the cache.
        if parsed and stored is not None:
            listing_cache.store(stored, listing.records, listing.others, listing.ignored)
        return checked


def _stored(path: Path | None) -> PublicListing | None:
    """The listing kept at ``path``; None where there is none (or none to trust)."""
    if path is None:
        return None
    try:
        records, others, ignored = listing_cache.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return PublicListing(records, others, ignored)


def _parse(source: PublicSource, use: _Use) -> PublicListing:
    """Every film the label files list, as this run uses it: a record, another class's film, or
    left out with the reason. No film is stat'ed here."""
    listing = PublicListing()
    for film in source.films():
        if isinstance(film, Skipped):
            listing.ignored.append((film.path, film.reason))
            continue
        outcome = use.outcome(film, source)
        if isinstance(outcome, str):
            listing.ignored.append((film.path, outcome))
        elif isinstance(outcome, OtherFilm):
            listing.others.append(outcome)
        else:
            listing.records.setdefault(outcome.source_split, []).append(outcome)
    order = [split for split in SPLIT_NAMES if split in listing.records]
    listing.records = {split: listing.records[split] for split in order}
    return listing


def _checked(
    source: PublicSource, listing: PublicListing, facts: Facts | None, skip_missing: bool
) -> PublicListing:
    """``listing`` with each film's facts in ``facts`` (when given: one stat each), a missing
    film reported or, skipping, left out; a ``DataError`` when no film is left to use."""
    if facts is not None:
        missing: list[Path] = []
        real_folders = RealFolders()

        def present(path: Path) -> bool:
            try:
                facts[path] = path_facts(path, real_folders)
            except OSError:
                missing.append(path)
                return False
            return True

        listing = PublicListing(
            {
                split: [r for r in items if present(r.path)]
                for split, items in listing.records.items()
            },
            [film for film in listing.others if present(film.path)],
            list(listing.ignored),
        )
        _report_missing(source, missing, skip_missing, listing)
        listing.records = {split: items for split, items in listing.records.items() if items}
    if not listing.records and not listing.others:
        raise DataError(
            f"{source.policy.dataset}: none of the films under {source.root} is usable by "
            f"this run ({len(listing.ignored)} left out; first: "
            f"{listing.ignored[0][1] if listing.ignored else 'none listed'})"
        )
    return listing


def _report_missing(
    source: PublicSource, missing: list[Path], skip: bool, listing: PublicListing
) -> None:
    if not missing:
        return
    if skip:
        reason = "listed in the dataset's label files but not on disk (data.on_bad_image=skip)"
        listing.ignored.extend((path, reason) for path in missing)
        return
    first = os.fspath(missing[0])
    raise DataError(
        f"{source.policy.dataset}: {len(missing)} film(s) its label files list are not under "
        f"{source.root} (first: {first}); download them, point the source's root at the "
        "download, or set data.on_bad_image=skip to leave them out, listed in ignored.csv"
    )

"""What the data module reports once its films are split and decoded: the counts (per source
too), the duplicate check, the ignored and skipped files, and the run folder's CSVs.

``counts.csv``, ``split.csv``, ``duplicates.csv``, ``skipped.csv`` and ``ignored.csv`` go to the
run folder; a CSV with nothing to list is not written, so a file's presence means findings.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxrnet.data.duplicates import DuplicateReport
from cxrnet.data.records import PATH_ERRORS, Record
from cxrnet.data.split_report import by_source, count_table, format_count_table, write_split_csv
from cxrnet.user_errors import DataError

log = logging.getLogger("cxrnet.data.datamodule")

# The ignored files the log names one by one when no run folder's ignored.csv lists them.
IGNORED_SHOWN = 10


def ignored_reasons(ignored: Sequence[tuple[Path, str]]) -> list[tuple[str, int]]:
    """The files left out counted per reason (its text before any parenthesis), most first: what
    the log and the model card say of ignored.csv."""
    return Counter(reason.split(" (")[0] for _, reason in ignored).most_common()


def report_films(
    splits: Mapping[str, list[Record]],
    duplicates: DuplicateReport | None,
    ignored: Sequence[tuple[Path, str]],
    skipped: Sequence[tuple[Record, str]],
    report_dir: Path | None,
) -> None:
    """Log the counts and what was left out, and write the CSVs into ``report_dir`` (when
    given). ``duplicates`` None: this process received its splits and checked nothing."""
    counts = count_table(splits)
    log.info("images per split:\n%s", format_count_table(counts))
    sources = by_source(splits)
    if len(sources) > 1:  # the same counts per source: one table can hide a source's lack
        for name, own in sources.items():
            log.info("images per split, source %s:\n%s", name, format_count_table(count_table(own)))
    if duplicates is not None:
        log.info("%s", duplicates.summary())
    # Hundreds of films of another class (tens of thousands in a public dataset) would bury the
    # log: with a run folder, one line counts them per reason and names ignored.csv, which
    # lists every one; without one, the first few are named and the rest counted.
    shown = [] if report_dir is not None else ignored[:IGNORED_SHOWN]
    for path, reason in shown:
        log.warning("ignored %s: %s", path, reason)
    if len(shown) < len(ignored):
        reasons = ignored_reasons(ignored[len(shown) :])
        where = (
            f"every one listed in {report_dir / 'ignored.csv'}"
            if report_dir is not None
            else "a data module with a report_dir lists every one in ignored.csv"
        )
        log.warning(
            "ignored %d %sfile(s) (%s): %s",
            len(ignored) - len(shown),
            "more " if shown else "",
            "; ".join(f"{count} {why}" for why, count in reasons),
            where,
        )
    for record, reason in skipped:
        log.warning("skipped %s: %s", record.path, reason)
    if report_dir is None:
        return
    report_dir.mkdir(parents=True, exist_ok=True)
    write_csv(report_dir / "counts.csv", counts)
    write_split_csv(report_dir / "split.csv", splits)
    within = duplicates.within if duplicates is not None else {}
    write_csv(
        report_dir / "duplicates.csv",
        [
            {"group": number, "split": split, "file": str(record.path)}
            for split, groups in within.items()
            for number, group in enumerate(groups)
            for record in group
        ],
    )
    write_csv(
        report_dir / "skipped.csv",
        [{"file": str(r.path), "reason": reason} for r, reason in skipped],
    )
    write_csv(
        report_dir / "ignored.csv",
        [{"file": str(path), "reason": reason} for path, reason in ignored],
    )


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows``; an empty report is not written, so a file's presence means findings."""
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def small_val_counts(labels: Sequence[int], class_names: Sequence[str], minimum: int) -> str | None:
    """The val films per class ("8 NORMAL, 8 PNEUMONIA") when a class has fewer than
    ``minimum`` (data.min_val_per_class); None when each has enough. What the start's warning
    and the model card's limit both say."""
    per_class = [list(labels).count(i) for i in range(len(class_names))]
    if min(per_class) >= minimum:
        return None
    return ", ".join(f"{n} {name}" for n, name in zip(per_class, class_names, strict=True))


def warn_small_val(
    labels: Sequence[int], class_names: Sequence[str], minimum: int, split: str
) -> None:
    """The official Kaggle val split has 8+8 films: one seed of experiment=best kept epoch 0
    of 6 because val AUROC there was 0.94 and never higher (issue 20 row 15)."""
    counts = small_val_counts(labels, class_names, minimum)
    if counts is None:
        return
    log.warning(
        "the val split (data.split=%s) has %s films, fewer than data.min_val_per_class=%d "
        "of each class: the checkpoint and the threshold chosen on it cannot tell epochs "
        "apart at this size; use data.split=patient (a patient-grouped data.val_fraction of "
        "train+val) or add val films",
        split,
        counts,
        minimum,
    )


def check_classes_kept(
    split: str,
    root: Path,
    labels: Sequence[int],
    kept: Sequence[int],
    class_names: Sequence[str],
    skipped: Sequence[tuple[Record, str]],
) -> None:
    """No class of ``split`` (its films' ``labels``) lost to the ``skipped`` files (the
    ``kept`` films' labels remain); else training would run every epoch and only then fail (no
    AUROC, no threshold, no class weight)."""
    # Only classes that skipping removed: a split may lack one to begin with (a small
    # sample), which the existing checks report or accept.
    lost = set(labels) - set(kept)
    missing = [name for i, name in enumerate(class_names) if i in lost]
    if not missing:
        return
    named = [f"{record.path} ({reason})" for record, reason in skipped]
    raise DataError(
        f"split {split!r} from {root} has no {' or '.join(missing)} images after "
        f"skipping {len(labels) - len(kept)} unreadable file(s): {'; '.join(named[:5])}"
        f"{' ...' if len(named) > 5 else ''}; fix or replace those files"
    )

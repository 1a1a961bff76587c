"""A small sample of ``../shared/data/rsna_adult`` (films from another hospital, with opacity
boxes and an OTHER_ABNORMAL class) as an external site's manifest, written outside the checkout.

The films stay where they are (read-only, never copied into the repository): the manifest names
them by absolute path. Skips where ``../shared/data`` is absent (``real_films.require``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from helpers.real_films import SHARED_DATA, require

RSNA_ADULT = SHARED_DATA / "rsna_adult"


def rsna_rows() -> list[dict[str, str]]:
    """labels.csv as rows: file,label,rsna_class,patient_id,age,sex,view,boxes."""
    with (require(RSNA_ADULT) / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def rsna_sample(out: Path, per_class: dict[str, int]) -> Path:
    """A manifest at ``out`` of the first ``per_class[label]`` films of each label (in the
    order of labels.csv), with every column of labels.csv and absolute paths."""
    rows = rsna_rows()
    chosen = []
    for label, count in per_class.items():
        chosen += [row for row in rows if row["label"] == label][:count]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in chosen:
            writer.writerow(row | {"file": str(RSNA_ADULT / row["file"])})
    return out

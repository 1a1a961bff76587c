"""What one image is: file, label, pneumonia subtype and patient, derived from the real naming."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrnet.user_errors import DataError

CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
# Abnormal films without pneumonia: trained by data.task=findings, scored as their own group by
# the other tasks (cxrnet.data.other_classes).
OTHER_ABNORMAL = "OTHER_ABNORMAL"
# Findings that are not a disease (a tube, a pacemaker): a film with only these is still NORMAL.
DEVICE_FINDINGS: frozenset[str] = frozenset({"support_devices"})
SUBTYPE_NAMES: tuple[str, str, str] = ("normal", "bacteria", "virus")
# The one spelling of what a film does not say: a pneumonia film's kind, its source beside films
# that name theirs, a subgroup column it lacks.
UNKNOWN = "unknown"
UNKNOWN_SUBTYPE = UNKNOWN
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
# The training films data.source_train_size left out: counted and listed in split.csv, never
# decoded, trained or scored; a manifest's rows of this split are not read.
UNUSED_SPLIT = "unused"
# The metadata column naming where a film came from (data.sources, a manifest's source column),
# and what a film without one counts as beside films with one.
SOURCE_COLUMN = "source"
UNKNOWN_SOURCE = UNKNOWN
# Films PIL decodes, and DICOM files by name. A DICOM file may also have no suffix, or a UID as
# its name ("1.2.840.113619.2.55.3.1234" ends in ".1234"): is_dicom reads its preamble.
PIL_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png"})
DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES: frozenset[str] = PIL_SUFFIXES | DICOM_SUFFIXES
# Part 10 files: 128 bytes of preamble, then these four.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_AT = 128
# The error handler for every text file that lists image paths (cache index, split and report
# CSVs, manifests). File names are bytes on Linux and need not be UTF-8; Python keeps the odd
# bytes as surrogates, which this handler writes back (and reads) as the same bytes.
PATH_ERRORS = "surrogateescape"

# Normal films: "IM-0115-0001", "IM-0429-0001-0002" and "NORMAL2-IM-1427-0001". The prefix is
# part of the key because each prefix numbers its own series (IM-0395 and NORMAL2-IM-0395 are
# different children).
_NORMAL_PATIENT = re.compile(r"^(?P<patient>(?:NORMAL\d*-)?IM-\d+)(?:-\d+)*(?:[_ ].*)?$", re.I)
# Pneumonia films: "person1_bacteria_1", "person447_virus_921_1". The person number runs
# separately per kind, so person1_bacteria and person1_virus are two different children.
_PNEUMONIA_PATIENT = re.compile(
    r"^(?P<patient>person\d+_(?P<kind>bacteria|virus))(?=[_\-. ]|$)", re.IGNORECASE
)
# "person12.jpeg" without a kind: the number alone is the best key there is.
_PERSON_ONLY = re.compile(r"^(?P<patient>person\d+)(?=[_\-. ]|$)", re.IGNORECASE)
# A kind anywhere in a foreign name, as a whole word ("covid_virus_3.png", "bacteria-17.jpg").
_KIND_WORD = re.compile(r"(?:^|[_\-. ])(?P<kind>bacteria|virus)(?=[_\-. ]|$)", re.IGNORECASE)

_KNOWN_SUBTYPES = frozenset((*SUBTYPE_NAMES, UNKNOWN_SUBTYPE))


@dataclass(frozen=True)
class Record:
    """One image file and what is known about it."""

    path: Path
    label: int  # index into CLASS_NAMES: 0 normal, 1 pneumonia
    subtype: str  # one of SUBTYPE_NAMES; "unknown" for pneumonia files without a kind
    patient: str
    source_split: str  # folder (or manifest split) it came from, before any re-splitting
    # Further facts about the film (a manifest's extra columns, DICOM header fields: view, age,
    # sex, source, boxes ...) as sorted (column, value) pairs: a tuple keeps the record frozen
    # and hashable. Read it through ``metadata``.
    meta: tuple[tuple[str, str], ...] = ()
    # The findings its source labels (``cxrnet.data.findings``: name and 1, 0 or -1 uncertain)
    # beyond what NORMAL/PNEUMONIA says; read by data.task=findings only.
    findings: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        # Records are built from user files and CSVs; a bad one must fail here, not as a
        # shape error deep inside a training step.
        if self.label not in (0, 1):
            raise DataError(
                f"{self.path}: label must be 0 (NORMAL) or 1 (PNEUMONIA), got {self.label!r}"
            )
        if self.subtype not in _KNOWN_SUBTYPES:
            raise DataError(
                f"{self.path}: subtype must be one of {sorted(_KNOWN_SUBTYPES)}, "
                f"got {self.subtype!r}"
            )
        if (self.label == 0) != (self.subtype == "normal"):
            raise DataError(
                f"{self.path}: subtype {self.subtype!r} contradicts label "
                f"{CLASS_NAMES[self.label]}; only NORMAL images have subtype 'normal'"
            )

    @property
    def class_name(self) -> str:
        """NORMAL or PNEUMONIA; OTHER_ABNORMAL for a film without pneumonia that has some other
        finding (data.task=findings trains on those)."""
        if self.label == 0 and any(
            value == 1 for name, value in self.findings if name not in DEVICE_FINDINGS
        ):
            return OTHER_ABNORMAL
        return CLASS_NAMES[self.label]

    @property
    def finding_values(self) -> dict[str, float]:
        """The findings its source labels, by name (``cxrnet.data.findings``)."""
        return dict(self.findings)

    @property
    def is_normal(self) -> bool:
        """A NORMAL film: absent of every finding it does not name."""
        return self.class_name == CLASS_NAMES[0]

    @property
    def metadata(self) -> dict[str, str]:
        """The film's further columns by name (empty when there are none)."""
        return dict(self.meta)


def subtype_from_name(filename: str, label: int) -> str:
    """``normal`` for label 0; ``bacteria``/``virus`` from the name, else ``unknown``."""
    if label == 0:
        return "normal"
    stem = _stem(filename)
    match = _PNEUMONIA_PATIENT.match(stem) or _KIND_WORD.search(stem)
    return match.group("kind").lower() if match else UNKNOWN_SUBTYPE


def patient_from_name(filename: str) -> str:
    """Patient key from a Kermany file name; an unknown naming falls back to the file stem.

    The fallback makes every such file its own patient: grouping then does nothing for it,
    which is the honest result when the name says nothing about the patient.
    """
    stem = _stem(filename)
    for pattern in (_NORMAL_PATIENT, _PNEUMONIA_PATIENT, _PERSON_ONLY):
        match = pattern.match(stem)
        if match:
            return match.group("patient").lower()
    return stem.lower()


_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


def _stem(filename: str) -> str:
    """``Path(filename).stem`` without building a Path (a warm start asks it per film, twice)."""
    name = filename
    for separator in _SEPARATORS:
        name = name.rstrip(separator).rpartition(separator)[2]
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def make_record(
    path: Path,
    label: int,
    source_split: str,
    patient: str | None = None,
    subtype: str | None = None,
    metadata: Mapping[str, str] | None = None,
    findings: tuple[tuple[str, float], ...] = (),
) -> Record:
    """A Record with subtype and patient taken from the file name unless given."""
    path = path if isinstance(path, Path) else Path(path)
    return Record(
        path=path,
        label=label,
        subtype=subtype if subtype else subtype_from_name(path.name, label),
        patient=patient if patient else patient_from_name(path.name),
        source_split=source_split,
        meta=tuple(sorted((metadata or {}).items())),
        findings=findings,
    )


def metadata_columns(records: Sequence[Record]) -> dict[str, tuple[str, ...]]:
    """Every metadata column any record has, as one value per record ("" where it lacks it)."""
    names = sorted({name for record in records for name, _ in record.meta})
    rows = [record.metadata for record in records]
    return {name: tuple(row.get(name, "") for row in rows) for name in names}


def subtype_counts(records: Iterable[Record]) -> dict[str, int]:
    """Images per subtype: every name in SUBTYPE_NAMES (zeros included), ``unknown`` if any."""
    counts = Counter(record.subtype for record in records)
    result = {name: counts.get(name, 0) for name in SUBTYPE_NAMES}
    if counts.get(UNKNOWN_SUBTYPE):
        result[UNKNOWN_SUBTYPE] = counts[UNKNOWN_SUBTYPE]
    return result


def check_subtypes(records: Iterable[Record], limit: int = 20) -> None:
    """Raise a DataError listing PNEUMONIA files whose kind (bacteria/virus) is unknown.

    The three-class task needs a kind for every pneumonia image; guessing one would teach the
    model a wrong label, so the files are named for the user to fix.
    """
    unknown = sorted(str(record.path) for record in records if record.subtype == UNKNOWN_SUBTYPE)
    if not unknown:
        return
    listed = "\n  ".join(unknown[:limit])
    more = f"\n  ... and {len(unknown) - limit} more" if len(unknown) > limit else ""
    raise DataError(
        f"{len(unknown)} PNEUMONIA image(s) have no subtype (bacteria or virus) in their name:\n"
        f"  {listed}{more}\n"
        "The three-class task needs one for each: rename them to include '_bacteria_' or "
        "'_virus_' (as in person1_virus_6.jpeg), give a subtype column in a CSV manifest, or "
        "leave them out."
    )


def has_dicom_preamble(path: Path) -> bool:
    """Whether ``path`` starts like a DICOM Part 10 file (``DICM`` after 128 bytes)."""
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(_DICOM_MAGIC_AT + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_MAGIC_AT:] == _DICOM_MAGIC


def is_dicom(path: Path) -> bool:
    """A DICOM file: named ``.dcm`` / ``.dicom``, or with another name and the DICOM preamble."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    return suffix not in PIL_SUFFIXES and has_dicom_preamble(path)


def is_image_file(path: Path) -> bool:
    """A film cxrnet reads: a JPEG, PNG or DICOM name, or a DICOM file found by its preamble."""
    return path.suffix.lower() in IMAGE_SUFFIXES or has_dicom_preamble(path)

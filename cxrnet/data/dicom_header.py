"""The few DICOM header fields a film carries into its record: patient, view, age and sex.

Only four elements are ever read (``PatientID``, ``ViewPosition``, ``PatientAge``,
``PatientSex``), with ``specific_tags`` and without the pixels: a patient's name, birth date or
any other element is never parsed, so it cannot reach a record, a CSV, a log or W&B. A value
that does not follow the DICOM format for its element is left out rather than guessed, and it is
never quoted in a message (it could be anything a scanner was typed into).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.records import DICOM_SUFFIXES, is_dicom

# The record's column names for the header fields (the patient goes to Record.patient).
VIEW, AGE, SEX = "view", "age", "sex"
PATIENT = "patient"
_TAGS = ("PatientID", "ViewPosition", "PatientAge", "PatientSex")
# PatientAge is an Age String (PS3.5 6.2): three digits and D, W, M or Y.
_AGE = re.compile(r"^\s*(?P<number>\d{1,3})\s*(?P<unit>[DWMY]?)\s*$", re.IGNORECASE)
_DAYS_PER_YEAR = 365.25
_YEARS_PER_UNIT = {"Y": 1.0, "M": 1 / 12, "W": 7 / _DAYS_PER_YEAR, "D": 1 / _DAYS_PER_YEAR}
_SEXES = frozenset({"M", "F", "O"})


@dataclass(frozen=True)
class DicomHeader:
    """What a film's header says: the patient ID and the ``view``/``age``/``sex`` columns."""

    patient: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)


def age_in_years(value: str) -> str | None:
    """A DICOM Age String as years: ``045Y`` -> ``45``, ``006M`` -> ``0.5``, ``010W`` ->
    ``0.19``, ``003D`` -> ``0.01`` (two decimals below a year); a bare number is read as years.
    None for anything else."""
    match = _AGE.match(value)
    if match is None:
        return None
    years = int(match.group("number")) * _YEARS_PER_UNIT[(match.group("unit") or "Y").upper()]
    if years == int(years):
        return str(int(years))
    return f"{years:.2f}".rstrip("0").rstrip(".")


def years_of_age(value: str) -> float | None:
    """A film's age in years as a number: a plain number, or a DICOM Age String (045Y, 018M,
    006W, 003D); None when it is missing, negative or unreadable."""
    text = value.strip()
    match = _AGE.match(text)
    if match is not None:
        return int(match.group("number")) * _YEARS_PER_UNIT[(match.group("unit") or "Y").upper()]
    try:
        years = float(text)
    except ValueError:
        return None
    return years if math.isfinite(years) and years >= 0 else None


def _text(dataset: object, keyword: str) -> str:
    try:
        value = getattr(dataset, keyword, None)
        return "" if value is None else str(value).strip()
    except Exception:  # one malformed element loses that field only
        return ""


def read_header(path: Path) -> DicomHeader:
    """The header fields of the DICOM file ``path``; an empty header when it cannot be read
    (decoding the film then reports the file, with its reason, as any bad image)."""
    import pydicom  # here: reading records of JPEG data sets never needs it

    try:
        with warnings.catch_warnings():
            # pydicom's warnings about a malformed element can quote its value
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=list(_TAGS),
                force=Path(path).suffix.lower() in DICOM_SUFFIXES,
            )
            values = {keyword: _text(dataset, keyword) for keyword in _TAGS}
    except MemoryError:
        raise
    except Exception:
        return DicomHeader()
    fields: dict[str, str] = {}
    if values["ViewPosition"]:
        fields[VIEW] = values["ViewPosition"].upper()
    age = age_in_years(values["PatientAge"])
    if age is not None:
        fields[AGE] = age
    sex = values["PatientSex"].upper()
    if sex in _SEXES:
        fields[SEX] = sex
    return DicomHeader(values["PatientID"] or None, fields)


def header_of(path: Path) -> DicomHeader:
    """``read_header`` for a DICOM file, an empty header for any other film."""
    return read_header(path) if is_dicom(Path(path)) else DicomHeader()

"""What the subgroup report groups films by: the metadata columns and how each film falls in one.

``report.subgroups`` and ``report.age_bands`` checked (with ``report.shortcut_flag``) before any
data is read; a film's age read as years (a plain number or a DICOM age) and cut into bands;
each film's category in a column, derived ``age_band`` included; and the order a table lists
the categories in. The tables and the shortcut check themselves are in ``subgroups``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from cxrnet.data.dicom_header import years_of_age as age_in_years
from cxrnet.data.records import UNKNOWN
from cxrnet.user_errors import ConfigError

# The category of a film that lacks the column (or, for age bands, has no readable age),
# ``UNKNOWN``: counted as a group of its own, never dropped.
AGE = "age"
AGE_BAND = "age_band"
DEFAULT_AGE_BANDS = (18.0, 40.0, 65.0)


# --- settings ------------------------------------------------------------------------------


def check_subgroup_settings(
    subgroups: Any, age_bands: Any, shortcut_flag: Any
) -> tuple[tuple[str, ...], tuple[float, ...], float]:
    """``report.subgroups``, ``report.age_bands`` and ``report.shortcut_flag`` as plain values,
    or a ``ConfigError`` naming the setting and the fix. Needs no data, so preflight runs it."""
    subgroups = () if subgroups is None else subgroups  # report.subgroups=null: none
    if isinstance(subgroups, str) or not _is_sequence(subgroups):
        raise ConfigError(
            f"report.subgroups={subgroups!r} must be a list of metadata column names, e.g. "
            "report.subgroups=[view,sex,age_band]"
        )
    names = tuple(str(name) for name in subgroups)
    bad = [name for name in names if not name or "/" in name or "=" in name]
    if bad or len(set(names)) != len(names):
        raise ConfigError(
            f"report.subgroups={list(names)} must name each column once, without '/' or '=' "
            "(they separate the parts of a metric's name)"
        )
    if isinstance(age_bands, str) or not _is_sequence(age_bands):
        raise ConfigError(
            f"report.age_bands={age_bands!r} must be a list of ages in years, e.g. [18, 40, 65]"
        )
    try:
        edges = tuple(float(edge) for edge in age_bands)
    except (TypeError, ValueError):
        edges = ()
    if (
        not edges
        or not all(math.isfinite(edge) for edge in edges)
        or any(b <= a for a, b in pairwise(edges))
    ):
        raise ConfigError(
            f"report.age_bands={list(age_bands)} must be increasing ages in years (at least "
            "one), e.g. [18, 40, 65] for <18, 18-39, 40-64 and 65+"
        )
    try:
        flag = float(shortcut_flag)
    except (TypeError, ValueError):
        flag = math.nan
    if not 0.5 <= flag <= 1.0:
        raise ConfigError(
            f"report.shortcut_flag={shortcut_flag!r} must be an AUROC between 0.5 and 1 (a "
            "column at or above it is flagged as a possible shortcut); the default is 0.7"
        )
    return names, edges, flag


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) or (
        hasattr(value, "__iter__") and not isinstance(value, Mapping)
    )


# --- columns -------------------------------------------------------------------------------


def band_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """The bands ``edges`` cut ages into, youngest first: [18, 40, 65] gives <18, 18-39, 40-64
    and 65+ (whole-year edges read as completed years; others as ``a-<b``)."""
    labels = [f"<{edges[0]:g}"]
    for low, high in pairwise(edges):
        whole = float(low).is_integer() and float(high).is_integer()
        labels.append(f"{low:g}-{high - 1:g}" if whole else f"{low:g}-<{high:g}")
    labels.append(f"{edges[-1]:g}+")
    return tuple(labels)


def age_bands(ages: Sequence[str], edges: Sequence[float]) -> tuple[str, ...]:
    """The band of every film's age (``band_labels``); ``UNKNOWN`` where it has none."""
    labels = band_labels(edges)
    years = [age_in_years(age) for age in ages]
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), [y or 0.0 for y in years], "right")
    return tuple(UNKNOWN if y is None else labels[i] for y, i in zip(years, index, strict=True))


def present_columns(columns: Mapping[str, Sequence[str]]) -> list[str]:
    """The columns at least one film has a value in."""
    return sorted(name for name, values in columns.items() if any(values))


def check_subgroup_columns(names: Sequence[str], present: Sequence[str]) -> None:
    """Every column of ``report.subgroups`` is one some film has (``age_band`` needs ``age``);
    a ``ConfigError`` naming the missing column and the ones the films have otherwise."""
    available = set(present)
    for name in names:
        if name in available or (name == AGE_BAND and AGE in available):
            continue
        derived = f" (derived from the films' {AGE} column)" if name == AGE_BAND else ""
        raise ConfigError(
            f"report.subgroups names {name!r}{derived}, which no film has; the films' columns "
            f"are {sorted(available) or 'none'}: name one of them, or add the column to the "
            "manifest"
        )


def table_values(
    columns: Mapping[str, Sequence[str]], name: str, n: int, edges: Sequence[float]
) -> tuple[str, ...]:
    """Column ``name`` as one category per film (``UNKNOWN`` where a film lacks it, or all
    ``UNKNOWN`` when these films lack the column another split has); ``age_band`` is derived
    from ``age`` by ``edges`` unless the films carry it themselves."""
    raw = columns.get(name, ())
    if name == AGE_BAND and not any(raw) and any(columns.get(AGE, ())):
        return age_bands(columns[AGE], edges)
    return tuple(value.strip() or UNKNOWN for value in (raw if any(raw) else ("",) * n))


def numeric_values(values: Sequence[str]) -> np.ndarray | None:
    """The column as numbers (NaN where missing) when every value given is a number or a
    DICOM age; None for a categorical column."""
    numbers = [age_in_years(value) if value.strip() else math.nan for value in values]
    if any(number is None for number in numbers) or all(map(math.isnan, numbers)):
        return None
    return np.asarray(numbers, dtype=np.float64)


# --- table order ---------------------------------------------------------------------------


def category_order(categories: Sequence[str], column: str, edges: Sequence[float]) -> list[str]:
    """Categories as a table lists them: age bands youngest first, others sorted, numbers by
    value; ``UNKNOWN`` last."""
    bands = band_labels(edges) if column == AGE_BAND else ()

    def key(category: str) -> tuple[int, int, float, str]:
        if category == UNKNOWN:
            return (2, 0, 0.0, "")
        if category in bands:
            return (0, bands.index(category), 0.0, "")
        number = age_in_years(category)
        return (1, 0, number if number is not None else math.inf, category)

    return sorted(set(categories), key=key)

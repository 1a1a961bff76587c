"""Which validation films choose the decision threshold: ``threshold.films``.

The checkpoint is chosen on the whole val split, which must be large enough to tell epochs
apart. The threshold can be chosen on part of it: films like those the model will score (the
official val films, a site's own films) can be the better calibration set even when too few to
choose epochs, as a threshold chosen on films like the training films can move far on films
from elsewhere. ``threshold.films`` maps a column to the value(s) a film must have: the record's
``source_split``, ``subtype`` or ``patient``, or a metadata column (``Record.metadata``:
``source``, ``view`` ...). ``null`` (the default) or ``{}``: every val film. Named ``films``,
not ``on``: YAML 1.1 (PyYAML, so OmegaConf) reads a key ``on`` in a config file as true.
``threshold.source=<site>`` is shorthand for ``threshold.films={source: <site>}``: the threshold
chosen on the deployment site's val films when a run trains on several sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxrnet.data.records import CLASS_NAMES, Record
from cxrnet.user_errors import ConfigError

# The record's own fields a filter may name; anything else is a metadata column.
RECORD_COLUMNS: tuple[str, ...] = ("source_split", "subtype", "patient")


def _value(record: Record, column: str) -> str | None:
    if column in RECORD_COLUMNS:
        return str(getattr(record, column))
    return record.metadata.get(column)


@dataclass(frozen=True)
class ThresholdFilms:
    """``threshold.films`` as (column, accepted values) pairs; empty: every val film."""

    on: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_setting(cls, values: Mapping[str, Any] | None) -> ThresholdFilms:
        """The ``threshold.films`` setting: a mapping of column to a value or a list of values."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError(
                "threshold.films must map a column to a value, e.g. "
                f"threshold.films={{source_split: val}}, or be null for every val film; got "
                f"{values!r}"
            )
        pairs = []
        for column, accepted in sorted(values.items(), key=lambda item: str(item[0])):
            listed = (
                accepted
                if isinstance(accepted, Sequence) and not isinstance(accepted, str)
                else [accepted]
            )
            if not listed or any(isinstance(v, (Mapping, list, tuple)) for v in listed):
                raise ConfigError(
                    f"threshold.films.{column}={accepted!r}: give the value (or a list of "
                    f"values) a film's {column} must have"
                )
            pairs.append((str(column), tuple(str(v) for v in listed)))
        return cls(tuple(pairs))

    @classmethod
    def from_config(cls, films: Mapping[str, Any] | None, source: Any = None) -> ThresholdFilms:
        """``threshold.films``, or its shorthand ``threshold.source`` (a source or a list of
        them): ``threshold.source=site`` is ``threshold.films={source: site}``."""
        if source is None:
            return cls.from_setting(films)
        if films:
            raise ConfigError(
                f"threshold.source={source} and threshold.films={films} both say which val films "
                "choose the threshold; set one of them (threshold.source=<site> is "
                "threshold.films={source: <site>})"
            )
        return cls.from_setting({"source": source})

    @property
    def setting(self) -> str:
        """As the user writes it: ``{source_split: val}``."""
        parts = [
            f"{column}: {values[0] if len(values) == 1 else '[' + ', '.join(values) + ']'}"
            for column, values in self.on
        ]
        return "{" + ", ".join(parts) + "}"

    @property
    def chosen_on(self) -> str:
        """Where the threshold was chosen, as ``OperatingPoint.chosen_on`` states it."""
        return "val" if not self.on else f"val (threshold.films={self.setting})"

    def matches(self, record: Record) -> bool:
        return all(_value(record, column) in accepted for column, accepted in self.on)

    def select(self, records: Sequence[Record], labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """A mask over ``records`` (the val split, in prediction order) of the films that choose
        the threshold. A column no film has, a subset without films or without one of the two
        classes, is a ``ConfigError`` naming ``threshold.films``, before anything is chosen."""
        if not self.on:
            return np.ones(len(records), dtype=bool)
        available = {*RECORD_COLUMNS, *(name for record in records for name, _ in record.meta)}
        for column, _ in self.on:
            if column not in available:
                raise ConfigError(
                    f"threshold.films={self.setting}: no val film has a column {column!r}; the "
                    f"columns are {sorted(available)}"
                )
        mask = np.array([self.matches(record) for record in records], dtype=bool)
        present = Counter(int(label) for label in np.asarray(labels)[mask])
        missing = [name for index, name in enumerate(CLASS_NAMES) if not present.get(index)]
        if missing:
            seen = {
                column: sorted({str(_value(r, column)) for r in records}) for column, _ in self.on
            }
            what = "no val film" if not mask.any() else f"no {' or '.join(missing)} val film"
            raise ConfigError(
                f"threshold.films={self.setting} matches {what} ({int(mask.sum())} of "
                f"{len(records)} val films match; their values: {seen}), and a threshold needs "
                "films of both classes: keep such films in val (data.keep_in_val=[val] keeps "
                "the val folder's films there in a re-split), or set threshold.films=null to "
                "choose on every val film"
            )
        return mask

    def describe(self, records: Sequence[Record], labels: Sequence[int] | np.ndarray) -> str:
        """Which films chose the threshold and how many of each class, for the model card."""
        if not self.on:
            return "the same val split"
        mask = self.select(records, labels)
        counts = Counter(int(label) for label in np.asarray(labels)[mask])
        per_class = ", ".join(f"{counts.get(i, 0)} {name}" for i, name in enumerate(CLASS_NAMES))
        return (
            f"the {int(mask.sum())} films of that val split with threshold.films={self.setting} "
            f"({per_class})"
        )

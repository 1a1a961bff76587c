"""Which films a model has already seen: the ones that trained it, chose its checkpoint or chose
its threshold, so that no external report scores them as if they were new.

A film is known by the digest of its decoded pixels at the model's own preprocessing (what the
network saw), so a copy under another name or path is the same film; and by its patient, where
both sides name one in the same source. The checkpoint carries the digests and patients of each
role (``SeenFilms``, written at training); ``cxrnet-eval`` and ``cxrnet-predict`` compare the
films they score with them (``match``), and ``data.seen_films`` says what is done with a match:
``exclude`` (the default) leaves it out of every number and counts it, ``keep`` scores it with
the rest and says so, ``error`` stops.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from cxrnet.data.records import Record
from cxrnet.data.sources import source_of
from cxrnet.user_errors import ConfigError

SeenPolicy = Literal["error", "exclude", "keep"]
SEEN_POLICIES: tuple[str, ...] = ("error", "exclude", "keep")
# The roles, in the order a film that had several is named by (val films chose the checkpoint,
# and most of them the threshold too).
ROLES = ("threshold", "checkpoint", "trained")
ROLE_WORDS = {
    "trained": "trained the model",
    "checkpoint": "chose its checkpoint",
    "threshold": "chose its threshold",
}


def pixel_digest(image: np.ndarray) -> str:
    """The digest of a decoded film (its shape and uint8 pixels)."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(str(array.shape).encode(), digest_size=10)
    digest.update(array.tobytes())
    return digest.hexdigest()


def patient_key(record: Record) -> str | None:
    """The film's patient within its source; None where the patient is only the file's own name
    (a film without a patient ID is its own patient, and names nothing to compare)."""
    if not record.patient or record.patient == record.path.stem:
        return None
    return f"{source_of(record)}/{record.patient}"


@dataclass(frozen=True)
class SeenFilms:
    """Per role, the pixel digests and patient keys of the films that had it."""

    digests: Mapping[str, frozenset[str]] = field(default_factory=dict)
    patients: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, roles: Mapping[str, Iterable[tuple[Record, np.ndarray]]]) -> SeenFilms:
        """From each role's films and their decoded images."""
        digests: dict[str, set[str]] = {}
        patients: dict[str, set[str]] = {}
        for role, films in roles.items():
            for record, image in films:
                digests.setdefault(role, set()).add(pixel_digest(image))
                if (key := patient_key(record)) is not None:
                    patients.setdefault(role, set()).add(key)
        return cls(
            {role: frozenset(v) for role, v in digests.items()},
            {role: frozenset(v) for role, v in patients.items()},
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain, sorted lists: what a checkpoint stores."""
        return {
            "digests": {role: sorted(v) for role, v in self.digests.items()},
            "patients": {role: sorted(v) for role, v in self.patients.items()},
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> SeenFilms | None:
        if not values:
            return None
        return cls(
            {str(r): frozenset(map(str, v)) for r, v in (values.get("digests") or {}).items()},
            {str(r): frozenset(map(str, v)) for r, v in (values.get("patients") or {}).items()},
        )

    def union(self, other: SeenFilms) -> SeenFilms:
        """Every film either model saw, role by role (a fold ensemble's members)."""

        def merged(a: Mapping[str, frozenset[str]], b: Mapping[str, frozenset[str]]) -> dict:
            return {role: a.get(role, frozenset()) | b.get(role, frozenset()) for role in {*a, *b}}

        return SeenFilms(merged(self.digests, other.digests), merged(self.patients, other.patients))

    def role_of_digest(self, digest: str) -> str:
        """The role of the film with these pixels (``ROLES`` order); "" for a new one."""
        return next((role for role in ROLES if digest in self.digests.get(role, ())), "")

    def role_of(self, record: Record, image: np.ndarray) -> str:
        """The role the film had (``ROLES`` order), by its pixels, else by its patient; ""."""
        if role := self.role_of_digest(pixel_digest(image)):
            return role
        key = patient_key(record)
        if key is not None:
            for role in ROLES:
                if key in self.patients.get(role, ()):
                    return role
        return ""


@dataclass(frozen=True)
class SeenCheck:
    """What the comparison found among the films scored, and what was done with it."""

    roles: tuple[str, ...]  # per film scored: its role, "" when new
    policy: str
    checked: bool = True  # False: the checkpoint stores no seen films (trained before they were)

    @cached_property
    def counts(self) -> Counter[str]:
        return Counter(role for role in self.roles if role)

    @property
    def n_seen(self) -> int:
        return sum(self.counts.values())

    def describe_counts(self) -> str:
        return ", ".join(f"{self.counts[r]} {ROLE_WORDS[r]}" for r in ROLES if self.counts[r])

    def sentence(self) -> str:
        """The report's sentence about the site, written from what was checked."""
        n = len(self.roles)
        if not self.checked:
            return (
                "Whether the model saw any of these films was not checked: its checkpoint "
                "stores no record of its training films (trained by an older cxrnet)."
            )
        if not self.n_seen:
            return (
                f"None of these {n} films was seen by the model: none matches, by its pixels "
                "or its patient, a film that trained it, chose its checkpoint or its threshold."
            )
        what = f"{self.n_seen} of these {n} films were seen by the model ({self.describe_counts()})"
        if self.policy == "exclude":
            return (
                f"{what}: they are left out of every number below (data.seen_films=exclude), "
                f"which are of the other {n - self.n_seen}."
            )
        return (
            f"{what} and are scored with the rest (data.seen_films=keep): the numbers below are "
            "optimistic for a new site."
        )

    def metrics(self) -> dict[str, float]:
        values = {f"site/seen/{role}": float(self.counts[role]) for role in ROLES}
        return values | {
            "site/seen/total": float(self.n_seen),
            "site/seen/checked": 1.0 * self.checked,
        }


def check_policy(policy: str) -> SeenPolicy:
    if policy not in SEEN_POLICIES:
        raise ConfigError(
            f"data.seen_films={policy!r}: choose exclude (leave films the model saw out of the "
            "numbers, the default), keep (score them, said in the report) or error"
        )
    return policy  # type: ignore[return-value]


def seen_error(check: SeenCheck, where: str) -> str:
    """The message of ``data.seen_films=error``."""
    return (
        f"{check.n_seen} of the {len(check.roles)} films in {where} were seen by the model "
        f"({check.describe_counts()}); data.seen_films=error stops here: use "
        "data.seen_films=exclude to score the others, or keep to score them all"
    )


def roles_of(
    seen: SeenFilms, records: Sequence[Record], images: np.ndarray, rows: Sequence[int]
) -> tuple[str, ...]:
    """Each record's role, its decoded image at ``images[rows[i]]``."""
    return tuple(seen.role_of(r, images[row]) for r, row in zip(records, rows, strict=True))

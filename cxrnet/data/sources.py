"""Where the data comes from, decided once for every entry point: the configured sources (one
root, a list, or named ``data.sources``), or the built-in synthetic dataset, generated on first
use; and which source each film comes from (its ``source`` metadata)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cxrnet.data.public.formats import FORMATS, public_source
from cxrnet.data.records import SOURCE_COLUMN, SPLIT_NAMES, UNKNOWN_SOURCE, Record
from cxrnet.data.synthetic import SyntheticSpec, ensure_synthetic
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)

DataRoot = str | list[str]
# data.source_roles: a source split as data.split says, or used for training only.
SOURCE_ROLES: tuple[str, ...] = ("split", "train")


def resolve_data_root(
    root: str | Path | Sequence[str | Path] | None,
    synthetic: Mapping[str, Any] | None,
    cache_dir: str | Path,
    sources: Mapping[str, Any] | None = None,
) -> DataRoot | None:
    """``root`` as given (a folder, a manifest, or a list of either); None when named
    ``sources`` replace it; or, when neither is set, the synthetic dataset described by
    ``synthetic`` under ``cache_dir/synthetic``."""
    if sources:
        if root:
            raise DataError(
                f"data.root={root} and data.sources={dict(sources)} are both set; set one: "
                "data.root=null to use the named sources, or data.sources=null"
            )
        return None
    if root:
        if isinstance(root, (str, Path)):
            return str(root)
        return [str(source) for source in root]
    spec = SyntheticSpec(**dict(synthetic or {}))
    generated = ensure_synthetic(Path(cache_dir) / "synthetic", spec)
    log.info("data.root not set: using the built-in synthetic dataset at %s", generated)
    return str(generated)


def named_sources(sources: Mapping[str, Any]) -> dict[str, Path]:
    """``data.sources`` checked: each name a non-empty word, each a folder or manifest path, or
    a public dataset (``cxrnet.data.public.formats.public_source``: its root here)."""
    if not isinstance(sources, Mapping) or not sources:
        raise DataError(
            f"data.sources must map a name to a folder or manifest (data.sources={{kermany: "
            f"<folder>, site: <manifest.csv>}}), got {sources!r}"
        )
    checked: dict[str, Path] = {}
    for name, path in sources.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise DataError(f"data.sources: source name {name!r} must be a non-empty word")
        public = public_source(name, path)
        if public is not None:
            checked[name] = public.root
            continue
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise DataError(
                f"data.sources.{name}={path!r} must be one folder or CSV manifest, or a public "
                f"dataset {{format: <{' | '.join(FORMATS)}>, root: <folder>}}; give each "
                "further folder its own name"
            )
        checked[name] = Path(path).expanduser().absolute()
    return checked


def unnamed_source(origin: Path) -> str:
    """The source of a film from an unnamed root: its manifest's stem or its folder's name."""
    return origin.stem if origin.suffix.lower() == ".csv" else origin.name


def tag_source(
    records: Mapping[str, Sequence[Record]], origin: Path, name: str | None
) -> dict[str, list[Record]]:
    """Every record with its ``source`` metadata: ``name`` for a named source, else a
    manifest's own ``source`` value, else ``unnamed_source(origin)``.

    A named manifest whose ``source`` column says otherwise is an error: one of the two names
    would be silently dropped, and a column with several values would make them one source.
    """
    tagged: dict[str, list[Record]] = {}
    for split, items in records.items():
        out = []
        for record in items:
            given = source_of(record)
            if name is not None and given and given != name:
                raise DataError(
                    f"{origin}: the film {record.path} has source={given!r} in its source "
                    f"column, but data.sources names it {name!r}; rename the source to "
                    f"{given!r}, give the manifest in data.root (its column then names the "
                    "sources), or rename the column"
                )
            source = name if name is not None else given or unnamed_source(origin)
            if given != source:
                meta = {**record.metadata, SOURCE_COLUMN: source}
                record = replace(record, meta=tuple(sorted(meta.items())))
            out.append(record)
        tagged[split] = out
    return tagged


def source_of(record: Record) -> str:
    """The film's source ("" for a record never tagged, as in a library call on bare records).

    Read from the record's few metadata pairs directly: ``record.metadata`` builds a dict, and
    a warm start asks for every film's source several times (seconds at 377,000 films)."""
    for name, value in record.meta:
        if name == SOURCE_COLUMN:
            return value
    return ""


def source_name(record: Record) -> str:
    """The film's source as per-source metrics and monitors name it: ``unknown`` for a film
    without one."""
    return source_of(record) or UNKNOWN_SOURCE


def train_only_sources(roles: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The sources ``data.source_roles`` keeps for training (sorted); a role is train or split."""
    if not roles:
        return ()
    if not isinstance(roles, Mapping):
        raise DataError(
            f"data.source_roles must map source names to a role ({' | '.join(SOURCE_ROLES)}), "
            f"e.g. data.source_roles={{kermany: train}}; got {roles!r}"
        )
    for name, role in roles.items():
        if role not in SOURCE_ROLES:
            raise DataError(
                f"data.source_roles.{name}={role!r}: a role is split (split as data.split says) "
                "or train (training only: never in val or test)"
            )
    return tuple(sorted(str(name) for name, role in roles.items() if role == "train"))


# The clashes an error names one by one.
_CLASHES_LISTED = 20


def combine_records(*parts: Mapping[str, Sequence[Record]]) -> dict[str, list[Record]]:
    """Concatenate record sets split by split (manifests, folders or both).

    The same file in two parts is an error: it would count twice, or leak across splits.
    """
    combined: dict[str, list[Record]] = {}
    # Keyed by text, as paths compare (case folded where the system folds it): a Path hashes a
    # tuple of its parts. One set operation per part and split, and a loop only to name the
    # clashes: a public dataset is hundreds of thousands of films.
    seen: dict[str, str] = {}
    clashes: list[str] = []
    for part in parts:
        for split, items in part.items():
            keys = [os.path.normcase(record.path.absolute()) for record in items]
            fresh = dict.fromkeys(keys, split)
            if len(fresh) == len(keys) and seen.keys().isdisjoint(fresh):
                seen.update(fresh)
                combined.setdefault(split, []).extend(items)
                continue
            for record, key in zip(items, keys, strict=True):
                if key in seen:
                    clashes.append(f"{record.path} (in {seen[key]} and {split})")
                    continue
                seen[key] = split
                combined.setdefault(split, []).append(record)
    if clashes:
        listed = "\n  ".join(clashes[:_CLASHES_LISTED])
        raise DataError(
            f"{len(clashes)} file(s) appear in more than one of the combined sources:\n  "
            f"{listed}\nList each file in one source only."
        )
    known = [s for s in SPLIT_NAMES if s in combined]
    return {split: combined[split] for split in [*known, *sorted(set(combined) - set(known))]}

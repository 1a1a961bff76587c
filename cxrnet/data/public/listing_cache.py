"""A public dataset's listing kept beside the image cache, so a second start reads its films back
instead of parsing the label files (and the DICOM headers of RSNA and VinDr) again.

The key is everything the listing depends on: the dataset, its root and views, the task, the
uncertain policy, whether the data is scored as a test set, the name, size and modification
time of every label file the reader may read, and the code that reads them (the source of the
readers, the policy and the records), so a cxrnet whose readers changed parses again. A label
file edited, replaced or added gives another key, and the files are parsed again. The films
themselves are trusted as the image cache trusts them: their facts are still stat'ed unless
``data.verify_files=false``.

Stored as JSON (plain data, nothing a load could execute), written whole or not at all.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from cxrnet.data.files import PathBuilder
from cxrnet.data.other_classes import OtherFilm
from cxrnet.data.public.formats import PublicSource
from cxrnet.data.public.tables import find_label_file
from cxrnet.data.records import Record
from cxrnet.publish import write_text

_VERSION = 2
FOLDER = "public_listings"


def listing_key(source: PublicSource, use: Sequence[object], label_files: Sequence[str]) -> str:
    """The name of a listing: ``<use>-<content>``, a digest of the source and the run's use of
    it, then one of the label files' stats and the code reading them. A source read the same
    way has one listing: a new one replaces the others of its use (``store``)."""
    stats = []
    for name in label_files:
        path = find_label_file(source.policy.dataset, source.root, (name,), required=False)
        if path is not None:
            info = path.stat()
            stats.append([str(path), info.st_size, info.st_mtime_ns])
    purpose = json.dumps([source.as_setting(), [str(u) for u in use]])
    content = json.dumps([_VERSION, _code(), stats])
    return f"{_digest(purpose)}-{_digest(content)}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _code() -> str:
    """A digest of the code a listing comes from: every module of ``cxrnet.data.public`` and
    the records and findings modules it builds on (read once per process)."""
    here = Path(__file__).resolve().parent
    files = [*sorted(here.glob("*.py")), here.parent / "records.py", here.parent / "findings.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load(stored: Path) -> tuple[dict[str, list[Record]], list[OtherFilm], list[tuple[Path, str]]]:
    """The listing stored at ``stored``; FileNotFoundError (or ValueError) where there is none to
    trust, and the caller parses the label files."""
    data = json.loads(stored.read_text(encoding="utf-8"))  # ASCII: json.dumps escapes the rest
    if data.get("version") != _VERSION:
        raise ValueError("another version")
    path = PathBuilder()
    records = {
        # Column by column: map builds a split's hundred thousand records without a Python
        # frame per film (the warm start of a public dataset is mostly this and its paths).
        split: list(
            map(
                Record,
                path.many(rows["path"]),
                rows["label"],
                rows["subtype"],
                rows["patient"],
                repeat(split),
                map(_items, rows["meta"]),
                map(_items, rows["findings"]),
            )
        )
        for split, rows in data["records"].items()
    }
    rows = data["others"]
    others = list(
        map(
            OtherFilm,
            path.many(rows["path"]),
            rows["class"],
            rows["patient"],
            map(_items, rows["meta"]),
        )
    )
    rows = data["ignored"]
    ignored = list(
        zip(path.many(rows["path"]), map(rows["reasons"].__getitem__, rows["reason"]), strict=True)
    )
    return records, others, ignored


def store(
    path: Path,
    records: dict[str, list[Record]],
    others: Sequence[OtherFilm],
    ignored: Sequence[tuple[Path, str]],
) -> None:
    """The listing at ``path``, written whole; a cache that cannot be written is only slower.
    Stored in columns, and each reason for leaving a film out once."""
    reasons = list(dict.fromkeys(reason for _, reason in ignored))
    number = {reason: i for i, reason in enumerate(reasons)}
    data: dict[str, Any] = {
        "version": _VERSION,
        "records": {
            split: {
                "path": [str(r.path) for r in items],
                "label": [r.label for r in items],
                "subtype": [r.subtype for r in items],
                "patient": [r.patient for r in items],
                "meta": [dict(r.meta) for r in items],
                "findings": [dict(r.findings) for r in items],
            }
            for split, items in records.items()
        },
        "others": {
            "path": [str(f.path) for f in others],
            "class": [f.class_name for f in others],
            "patient": [f.patient for f in others],
            "meta": [dict(f.meta) for f in others],
        },
        "ignored": {
            "path": [str(p) for p, _ in ignored],
            "reason": [number[reason] for _, reason in ignored],
            "reasons": reasons,
        },
    }
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(data, separators=(",", ":")))
        # The listings this one replaces (label files edited, another cxrnet): tens of MB each
        # for a large dataset, never to be read again.
        purpose = path.name.split("-")[0]
        for older in path.parent.glob(f"{purpose}-*.json"):
            if older != path:
                older.unlink(missing_ok=True)


def _items(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(values.items())

"""The films a checkpoint saw, recorded when it is trained and looked for when it scores
(``cxrnet.data.seen_films`` says how a film is known)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.dataset import XRayDataset
from cxrnet.data.records import PATH_ERRORS, Record
from cxrnet.data.seen_films import (
    ROLE_WORDS,
    SeenCheck,
    SeenFilms,
    check_policy,
    roles_of,
    seen_error,
)
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)
SEEN_CSV = "seen_films.csv"
# The split an evaluation reports as new films: a site's films, or a run's held-out test split.
SCORED_SPLIT = "test"


def seen_in_training(
    datamodule: ChestXRayDataModule, threshold_records: Sequence[Record]
) -> SeenFilms:
    """The films that trained the model (train), chose its checkpoint (val) and its threshold
    (``threshold_records``, the val films that chose it), by their decoded pixels."""
    chosen = {record.path for record in threshold_records}
    val = _films(datamodule, "val")
    return SeenFilms.of(
        {
            "trained": _films(datamodule, "train"),
            "checkpoint": val,
            "threshold": [(record, image) for record, image in val if record.path in chosen],
        }
    )


def _films(datamodule: ChestXRayDataModule, split: str) -> list[tuple[Record, np.ndarray]]:
    dataset = datamodule.datasets.get(split)
    if dataset is None:
        return []
    records = datamodule.split_records[split]
    return [(r, dataset.images[row]) for r, row in zip(records, dataset.indices, strict=True)]


def check_seen_films(
    datamodule: ChestXRayDataModule,
    seen: SeenFilms | None,
    policy: str,
    output_dir: Path | None,
) -> SeenCheck | None:
    """Compare the films of the scored split with ``seen`` and apply ``policy``
    (``data.seen_films``): leave the seen ones out of the split (exclude), keep them (keep), or
    stop (error, a ``DataError``). Every seen film is listed in ``seen_films.csv``. None when the
    data has no such split."""
    policy = check_policy(policy)
    dataset = datamodule.datasets.get(SCORED_SPLIT)
    if dataset is None:
        return None
    records = datamodule.split_records[SCORED_SPLIT]
    if seen is None:
        log.warning(
            "the checkpoint stores no record of its training films (an older cxrnet): whether "
            "it saw any of these films is not checked"
        )
        return SeenCheck(("",) * len(records), policy, checked=False)
    check = SeenCheck(roles_of(seen, records, dataset.images, dataset.indices), policy)
    if not check.n_seen:
        return check
    if output_dir is not None:
        _write_seen(output_dir / SEEN_CSV, records, check.roles)
    if policy == "error":
        raise DataError(seen_error(check, f"the {SCORED_SPLIT} split of {datamodule.root}"))
    log.warning("%s", check.sentence())
    if policy == "exclude":
        _leave_out(datamodule, [not role for role in check.roles])
    return check


def _leave_out(datamodule: ChestXRayDataModule, keep: Sequence[bool]) -> None:
    """The scored split without the films ``keep`` marks False."""
    mask = np.asarray(keep, dtype=bool)
    if not mask.any():
        raise DataError(
            f"every film of the {SCORED_SPLIT} split was seen by the model: nothing new is left "
            "to score (data.seen_films=keep scores them anyway, said in the report)"
        )
    old = datamodule.datasets[SCORED_SPLIT]
    datamodule.split_records[SCORED_SPLIT] = [
        record
        for record, kept in zip(datamodule.split_records[SCORED_SPLIT], mask, strict=True)
        if kept
    ]
    datamodule.datasets[SCORED_SPLIT] = XRayDataset(
        old.images,
        old.labels.numpy()[mask],
        old.indices[mask],
        transform=old.transform,
        targets=None if old.targets is None else old.targets.numpy()[mask],
    )


def _write_seen(path: Path, records: Sequence[Record], roles: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "role"])
        writer.writerows(
            [str(r.path), ROLE_WORDS[role]] for r, role in zip(records, roles, strict=True) if role
        )


def seen_films_at(path: Path) -> SeenFilms | None:
    """The films the model at ``path`` saw: a checkpoint's own, every member's for a fold
    ensemble (``ensemble.json``); None where that is not recorded (an exported ONNX file, a
    checkpoint of an older cxrnet, an ensemble with such a member)."""
    from cxrnet.models.checkpoint import load_checkpoint, seen_films_of
    from cxrnet.models.ensemble_manifest import is_manifest, read_manifest

    if is_manifest(path):
        union: SeenFilms | None = None
        for member in read_manifest(path).members:
            seen = seen_films_at(path.parent / member)
            if seen is None:
                return None
            union = seen if union is None else union.union(seen)
        return union
    if path.suffix != ".ckpt":
        return None
    return seen_films_of(load_checkpoint(path))

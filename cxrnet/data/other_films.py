"""Decoding the films of other classes an external site lists (``cxrnet-eval`` scores them as
their own groups; ``cxrnet.data.other_classes`` says what they are).

Apart from ``other_classes``, which the light readers (discovery, manifests) import, so that
listing films never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cxrnet.data.cache import load_images
from cxrnet.data.dataset import XRayDataset
from cxrnet.data.decode import DecodeParams
from cxrnet.data.other_classes import OtherFilm
from cxrnet.data.records import Record
from cxrnet.user_errors import DataError


@dataclass
class LoadedOthers:
    """The films of other classes that decoded, in their dataset's order, and those that did
    not, with their reasons."""

    films: list[OtherFilm]
    dataset: XRayDataset
    skipped: list[tuple[Record, str]]


def load_others(
    others: Sequence[OtherFilm],
    listed: Iterable[Record],
    root: Path,
    params: DecodeParams,
    cache_dir: Path | None,
    workers: int,
    on_bad_image: Literal["error", "skip"],
) -> LoadedOthers:
    """Decode the films of other classes like the test films; unreadable ones follow
    ``on_bad_image``. A film listed both as NORMAL/PNEUMONIA (``listed``) and as another class
    is an error: it would be scored twice, under two truths."""
    paths = {str(film.path) for film in others}
    clashes = sorted(paths & {str(record.path) for record in listed})
    if clashes:
        raise DataError(
            f"{len(clashes)} file(s) are listed both as NORMAL/PNEUMONIA and as another "
            f"class under {root} (first: {clashes[0]}); list each film once"
        )
    records = sorted((film.decoding_record() for film in others), key=lambda r: str(r.path))
    loaded = load_images(
        records, params, cache_dir=cache_dir, num_workers=workers, on_bad_image=on_bad_image
    )
    position = {record.path: i for i, record in enumerate(loaded.records)}
    kept = [film for film in others if film.path in position]
    dataset = XRayDataset(
        loaded.images,
        [0] * len(kept),  # placeholders: these films have neither class
        [position[film.path] for film in kept],
    )
    return LoadedOthers(kept, dataset, loaded.skipped)

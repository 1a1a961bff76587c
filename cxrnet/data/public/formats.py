"""The public datasets cxrnet reads as downloaded, by the name a source gives as its ``format``:
``data.sources={nih: {format: nih, root: /data/nih}, site: mine.csv}``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cxrnet.data.public import chexpert, mimic, nih, padchest, rsna, vindr
from cxrnet.data.public.policy import LabelPolicy, PublicFilm, Skipped
from cxrnet.user_errors import DataError

Reader = Callable[[Path], Iterable[PublicFilm | Skipped]]
FORMATS: Mapping[str, tuple[Reader, LabelPolicy]] = {
    "nih": (nih.read, nih.POLICY),
    "chexpert": (chexpert.read, chexpert.POLICY),
    "mimic": (mimic.read, mimic.POLICY),
    "rsna": (rsna.read, rsna.POLICY),
    "padchest": (padchest.read, padchest.POLICY),
    "vindr": (vindr.read, vindr.POLICY),
}
# views: frontal (PA and AP films; lateral ones are listed as ignored) or all.
VIEWS: tuple[str, ...] = ("frontal", "all")
_KEYS = ("format", "root", "views")


@dataclass(frozen=True)
class PublicSource:
    """A public dataset as a source: its format, the folder it was downloaded to, the views."""

    format: str
    root: Path
    views: str = "frontal"

    @property
    def policy(self) -> LabelPolicy:
        return FORMATS[self.format][1]

    def films(self) -> Iterable[PublicFilm | Skipped]:
        """Every film its label files list, as its reader finds them."""
        if not self.root.is_dir():
            raise DataError(
                f"{self.policy.dataset}: {self.root} is not a folder; set the source's root to "
                "the folder the dataset was downloaded to"
            )
        return FORMATS[self.format][0](self.root)

    def as_setting(self) -> dict[str, str]:
        """The source as a checkpoint stores it (the root absolute)."""
        return {"format": self.format, "root": str(self.root), "views": self.views}


def public_source(name: str, value: Any) -> PublicSource | None:
    """``data.sources.<name>`` as a public dataset, when it is a mapping; None for a folder or
    manifest path. Every key and value is checked here, naming the setting."""
    if not isinstance(value, Mapping):
        return None
    unknown = sorted(str(key) for key in value if key not in _KEYS)
    if unknown:
        raise DataError(
            f"data.sources.{name}: unknown key(s) {unknown}; a public dataset is "
            f"{{format: <{' | '.join(FORMATS)}>, root: <folder>, views: frontal | all}}"
        )
    format_ = value.get("format")
    if format_ not in FORMATS:
        raise DataError(
            f"data.sources.{name}.format={format_!r}: choose one of {', '.join(FORMATS)} "
            "(or give the source as a folder or CSV manifest path)"
        )
    root = value.get("root")
    if not isinstance(root, (str, Path)) or not str(root).strip():
        raise DataError(
            f"data.sources.{name}.root={root!r}: give the folder the {format_} download is in"
        )
    views = value.get("views", "frontal")
    if views not in VIEWS:
        raise DataError(
            f"data.sources.{name}.views={views!r}: choose frontal (PA and AP films) or all"
        )
    return PublicSource(str(format_), Path(root).expanduser().absolute(), str(views))

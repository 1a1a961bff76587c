"""Labelled films of classes cxrnet does not train on (an external site's ``OTHER_ABNORMAL``
folder or manifest rows): scored by ``cxrnet-eval`` and reported as their own group (what
fraction the model flags), never in AUROC or sensitivity, which are NORMAL against PNEUMONIA.

They are kept apart from ``Record`` (whose label is NORMAL or PNEUMONIA) so that no metric or
split can take them for either class by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cxrnet.data.records import Record, make_record, patient_from_name


@dataclass(frozen=True)
class OtherFilm:
    """One film of another class: its file, the class as the data names it, its patient."""

    path: Path
    class_name: str
    patient: str
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.meta)

    def decoding_record(self) -> Record:
        """A record to decode the film with (the image cache takes records); its label is a
        placeholder that nothing reads, as these films never reach a split or a metric."""
        return make_record(self.path, 0, "other", patient=self.patient, metadata=self.metadata)


def other_film(
    path: Path,
    class_name: str,
    patient: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> OtherFilm:
    return OtherFilm(
        Path(path),
        class_name,
        patient or patient_from_name(Path(path).name),
        tuple(sorted((metadata or {}).items())),
    )

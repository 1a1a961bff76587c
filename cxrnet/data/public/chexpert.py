"""CheXpert (Irvin et al. 2019, Stanford): 224,316 films of 65,240 patients, 14 observations
labelled by the CheXpert labeler as 1, 0, -1 (uncertain) or blank (not mentioned).

Layout: ``CheXpert-v1.0/`` or ``CheXpert-v1.0-small/`` holding ``train.csv`` and ``valid.csv``
and the films at ``{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg``. The CSVs'
paths start with the folder's name; either name is read under either folder, so a CSV of the
small download works beside the full one's films. MIMIC-CXR-JPG labels its studies with the
same observations (``cxrnet.data.public.mimic``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from cxrnet.data.files import PathBuilder
from cxrnet.data.findings import NEGATIVE, POSITIVE, UNCERTAIN
from cxrnet.data.public.policy import LabelPolicy, PublicFilm
from cxrnet.data.public.tables import Row, bad_value, find_label_file, read_rows

DATASET = "CheXpert"
# The labeler's 14 observations, shared by MIMIC-CXR-JPG.
OBSERVATIONS: Mapping[str, str] = {
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Fracture": "fracture",
    "Lung Lesion": "lung_lesion",
    "Lung Opacity": "lung_opacity",
    "Pleural Effusion": "effusion",
    "Pleural Other": "pleural_other",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "support_devices",
}
NO_FINDING = "No Finding"
UNCERTAIN_NOTE = (
    "-1 is uncertain (data.uncertain), blank is unlabelled (masked); "
    "Support Devices alone does not make a film abnormal"
)
POLICY = LabelPolicy(
    DATASET,
    OBSERVATIONS,
    NO_FINDING,
    UNCERTAIN_NOTE + "; frontal films only unless views=all",
    unmentioned_absent=True,
    labelled=(
        "by the CheXpert labeler from the radiology reports (uncertain mentions as -1); "
        "Stanford Hospital"
    ),
    files=("train.csv", "valid.csv"),
)
_VALUES = {"1.0": POSITIVE, "1": POSITIVE, "0.0": NEGATIVE, "0": NEGATIVE}
_VALUES |= {"-1.0": UNCERTAIN, "-1": UNCERTAIN}
_SPLITS = (("train.csv", "train"), ("valid.csv", "val"))
_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", NO_FINDING, *OBSERVATIONS)
_SEXES = {"Male": "M", "Female": "F"}


def observation_values(dataset: str, path: Path, row: Row) -> tuple[dict[str, float], bool]:
    """A row's labelled observations (blank ones left out) and whether it says No Finding."""
    values: dict[str, float] = {}
    for column in (NO_FINDING, *OBSERVATIONS):
        cell = row[column]
        if not cell:
            continue
        if cell not in _VALUES:
            raise bad_value(dataset, path, row, column, "1.0, 0.0, -1.0 or blank")
        if column != NO_FINDING:
            values[OBSERVATIONS[column]] = _VALUES[cell]
    return values, row[NO_FINDING] in ("1.0", "1")


def _film_path(root: Path, listed: str, path: PathBuilder) -> Path:
    """The film a CSV path names, under ``root`` whichever download the CSV came from: its
    first part is the download's folder name, which ``root`` replaces."""
    relative = listed.replace("\\", "/")
    if relative.startswith("CheXpert"):
        relative = relative.partition("/")[2]
    return path(f"{root}/{relative}")


def read(root: Path) -> Iterator[PublicFilm]:
    """Every film of ``train.csv`` and ``valid.csv`` under ``root`` (the download's folder, or
    the folder holding it)."""
    for name, split in _SPLITS:
        path = find_label_file(DATASET, root, (name,), required=split == "train")
        if path is None:
            continue
        film_path = PathBuilder()  # each study's folder parsed once
        for row in read_rows(DATASET, path, _COLUMNS):
            values, normal = observation_values(DATASET, path, row)
            parts = row["Path"].replace("\\", "/").split("/")
            patient = next((p for p in parts if p.startswith("patient")), None)
            study = next((p for p in parts if p.startswith("study")), None)
            if patient is None or study is None:
                raise bad_value(
                    DATASET, path, row, "Path", "a path .../patientNNNNN/studyN/<view>.jpg"
                )
            metadata = {"study": f"{patient}/{study}"}
            if row["Frontal/Lateral"] not in ("Frontal", "Lateral"):
                raise bad_value(DATASET, path, row, "Frontal/Lateral", "Frontal or Lateral")
            if row["Frontal/Lateral"] == "Lateral":
                metadata["view"] = "LATERAL"
            else:
                metadata["view"] = row["AP/PA"] or "FRONTAL"
            if row["Sex"] in _SEXES:
                metadata["sex"] = _SEXES[row["Sex"]]
            if row["Age"]:
                if not row["Age"].isdigit():
                    raise bad_value(DATASET, path, row, "Age", "an age in years")
                metadata["age"] = row["Age"]
            film = _film_path(path.parent, row["Path"], film_path)
            frontal = row["Frontal/Lateral"] == "Frontal"
            yield PublicFilm(film, patient, split, values, normal, metadata, frontal)

"""MIMIC-CXR-JPG 2.0.0 (Johnson et al. 2019, PhysioNet): 377,110 JPEGs of 227,827 studies of
65,379 patients, each study labelled by the CheXpert labeler from its report.

Layout (as PhysioNet ships it): ``mimic-cxr-2.0.0-chexpert.csv.gz`` (labels per study),
``mimic-cxr-2.0.0-metadata.csv.gz`` (each image's ``ViewPosition``),
``mimic-cxr-2.0.0-split.csv.gz`` (the official train / validate / test split), and the films at
``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``. Every image of a study has the study's labels.
MIMIC-CXR-JPG carries no age or sex (those are in MIMIC-IV).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrnet.data.files import PathBuilder
from cxrnet.data.public.chexpert import NO_FINDING, OBSERVATIONS, UNCERTAIN_NOTE, observation_values
from cxrnet.data.public.policy import LabelPolicy, PublicFilm, Skipped
from cxrnet.data.public.tables import bad_value, find_label_file, read_rows

DATASET = "MIMIC-CXR-JPG"
_PREFIX = "mimic-cxr-2.0.0-"
POLICY = LabelPolicy(
    DATASET,
    OBSERVATIONS,
    NO_FINDING,
    UNCERTAIN_NOTE + "; labels are per study; view from the metadata's ViewPosition, PA and AP "
    "frontal",
    unmentioned_absent=True,
    labelled=(
        "by the CheXpert labeler from the radiology reports, one set per study; Beth Israel "
        "Deaconess Medical Center, Boston, mostly emergency and intensive care"
    ),
    files=(_PREFIX + "chexpert.csv", _PREFIX + "metadata.csv", _PREFIX + "split.csv"),
)
_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_FRONTAL = frozenset({"PA", "AP"})


def read(root: Path) -> Iterator[PublicFilm | Skipped]:
    """Every image of the metadata file under ``root``, with its study's labels."""
    labels_path = find_label_file(DATASET, root, (_PREFIX + "chexpert.csv",))
    meta_path = find_label_file(DATASET, root, (_PREFIX + "metadata.csv",))
    split_path = find_label_file(DATASET, root, (_PREFIX + "split.csv",), required=False)
    assert labels_path is not None and meta_path is not None
    studies: dict[str, tuple[dict[str, float], bool]] = {}
    label_columns = ("subject_id", "study_id", NO_FINDING, *OBSERVATIONS)
    for row in read_rows(DATASET, labels_path, label_columns):
        studies[row["study_id"]] = observation_values(DATASET, labels_path, row)
    split: dict[str, str] = {}
    if split_path is not None:
        for row in read_rows(DATASET, split_path, ("dicom_id", "split")):
            if row["split"] not in _SPLITS:
                raise bad_value(DATASET, split_path, row, "split", " or ".join(_SPLITS))
            split[row["dicom_id"]] = _SPLITS[row["split"]]
    columns = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    files = root / "files"
    path = PathBuilder()  # each study's folder parsed once: 377,110 paths
    for row in read_rows(DATASET, meta_path, columns):
        subject, study = row["subject_id"], row["study_id"]
        if not subject.isdigit() or not study.isdigit():
            raise bad_value(DATASET, meta_path, row, "subject_id", "a number (and study_id too)")
        film = path(f"{files}/p{subject[:2]}/p{subject}/s{study}/{row['dicom_id']}.jpg")
        if study not in studies:
            yield Skipped(film, f"study {study} has no row in {labels_path.name}")
            continue
        values, normal = studies[study]
        view = row["ViewPosition"].upper()
        metadata = {"study": study, "view": view or "unknown"}
        film_split = split.get(row["dicom_id"], "train")
        yield PublicFilm(film, subject, film_split, values, normal, metadata, view in _FRONTAL)

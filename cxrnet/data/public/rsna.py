"""The RSNA Pneumonia Detection Challenge (2018; NIH films relabelled by radiologists of the RSNA
and the Society of Thoracic Radiology): 26,684 training films, one per patient, as DICOM.

Layout (as Kaggle ships it): ``stage_2_train_labels.csv`` (a row per opacity box, ``Target`` 1,
or one row with ``Target`` 0), ``stage_2_detailed_class_info.csv`` (each film's class: ``Lung
Opacity``, ``No Lung Opacity / Not Normal`` or ``Normal``) and the films at
``stage_2_train_images/<patientId>.dcm``. View, age and sex come from each film's DICOM header
(the four fields ``cxrnet.data.dicom_header`` reads); the unlabelled ``stage_2_test_images`` are
not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cxrnet.data.dicom_header import header_of
from cxrnet.data.findings import NEGATIVE, POSITIVE
from cxrnet.data.public.policy import LabelPolicy, PublicFilm
from cxrnet.data.public.tables import bad_value, find_label_file, read_rows
from cxrnet.user_errors import DataError

DATASET = "RSNA Pneumonia Detection Challenge"
POLICY = LabelPolicy(
    DATASET,
    {"Lung Opacity": "pneumonia"},
    "Normal",
    "'No Lung Opacity / Not Normal' is pneumonia absent with other_finding present; opacity "
    "boxes kept; view, age and sex from the DICOM header",
    labelled="opacity boxes drawn by radiologists on films of NIH ChestX-ray14",
    files=("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"),
)
_OTHER = "No Lung Opacity / Not Normal"
_CLASSES = {
    "Lung Opacity": ({"pneumonia": POSITIVE}, False),
    _OTHER: ({"pneumonia": NEGATIVE, "other_finding": POSITIVE}, False),
    "Normal": ({}, True),
}
_IMAGES = "stage_2_train_images"
_BOX = ("x", "y", "width", "height")


def read(root: Path) -> Iterator[PublicFilm]:
    """Every film of ``stage_2_train_labels.csv`` under ``root``, with its class and boxes."""
    labels_path = find_label_file(DATASET, root, ("stage_2_train_labels.csv",))
    class_path = find_label_file(DATASET, root, ("stage_2_detailed_class_info.csv",))
    assert labels_path is not None and class_path is not None
    classes: dict[str, str] = {}
    for row in read_rows(DATASET, class_path, ("patientId", "class")):
        if row["class"] not in _CLASSES:
            raise bad_value(DATASET, class_path, row, "class", " or ".join(map(repr, _CLASSES)))
        classes[row["patientId"]] = row["class"]
    boxes: dict[str, list[str]] = {}
    targets: dict[str, str] = {}
    for row in read_rows(DATASET, labels_path, ("patientId", *_BOX, "Target")):
        patient = row["patientId"]
        if row["Target"] not in ("0", "1"):
            raise bad_value(DATASET, labels_path, row, "Target", "0 or 1")
        targets[patient] = row["Target"]
        if row["Target"] == "1":
            try:
                numbers = [float(row[column]) for column in _BOX]
            except ValueError:
                raise bad_value(DATASET, labels_path, row, "x", "a box x y width height") from None
            boxes.setdefault(patient, []).append(" ".join(f"{n:g}" for n in numbers))
    images = root / _IMAGES if (root / _IMAGES).is_dir() else root
    for patient, target in targets.items():
        klass = classes.get(patient)
        if klass is None:
            raise DataError(
                f"{DATASET}: patient {patient} of {labels_path} has no class in {class_path}; "
                "use the two files of one download"
            )
        if (target == "1") != (klass == "Lung Opacity"):
            raise DataError(
                f"{DATASET}: patient {patient} has Target {target} in {labels_path} but class "
                f"{klass!r} in {class_path}; use the two files of one download"
            )
        film = images / f"{patient}.dcm"
        header = header_of(film)
        metadata = {**header.fields}
        if patient in boxes:
            metadata["boxes"] = ";".join(boxes[patient])
        values, normal = _CLASSES[klass]
        frontal = metadata.get("view", "PA") in ("PA", "AP")
        yield PublicFilm(film, patient, "train", dict(values), normal, metadata, frontal)

"""VinDr-CXR (Nguyen et al. 2022, Hospital 108 and Hanoi Medical University): 18,000 PA films as
DICOM, each training film read by three radiologists (the test films by a consensus of five).

Two layouts are read:

- PhysioNet's VinDr-CXR 1.0.0: ``annotations/image_labels_{train,test}.csv`` (a 0/1 column per
  label and reader, the global labels ``Pneumonia``, ``COPD`` ... included),
  ``annotations/annotations_{train,test}.csv`` (boxes) and ``{train,test}/<image_id>.dicom``.
- Kaggle's VinBigData challenge: ``train.csv`` (a row per reader and box; the 14 local labels
  and ``No finding``, no pneumonia label) and ``train/<image_id>.dicom``.

The readers are combined by majority: a label is present when more than half of the film's
readers mark it, and the film is normal when more than half say ``No finding``. VinDr-CXR has no
patient IDs: each film is its own patient. View, age and sex come from the DICOM header.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.dicom_header import header_of
from cxrnet.data.findings import NEGATIVE, POSITIVE
from cxrnet.data.public.policy import LabelPolicy, PublicFilm
from cxrnet.data.public.tables import Row, bad_value, find_label_file, read_rows

DATASET = "VinDr-CXR"
LABELS: Mapping[str, str] = {
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Emphysema": "emphysema",
    "Infiltration": "infiltration",
    "Lung Opacity": "lung_opacity",
    "Nodule/Mass": "lung_lesion",
    "Pleural effusion": "effusion",
    "Pleural thickening": "pleural_thickening",
    "Pneumothorax": "pneumothorax",
    "Pulmonary fibrosis": "fibrosis",
    "Rib fracture": "fracture",
    "Clavicle fracture": "fracture",
    **dict.fromkeys(
        (
            "Aortic enlargement", "Calcification", "Enlarged PA", "ILD", "Lung cavity",
            "Lung cyst", "Mediastinal shift", "Other lesion", "COPD", "Lung tumor",
            "Tuberculosis", "Other disease", "Other diseases",
        ),
        "other_finding",
    ),
}  # fmt: skip
NO_FINDING = "No finding"
POLICY = LabelPolicy(
    DATASET,
    LABELS,
    NO_FINDING,
    "a label is present when more than half of the film's readers mark it, absent otherwise; "
    "normal when more than half say 'No finding'; Kaggle's VinBigData files have no pneumonia "
    "label, so their abnormal films are left out of the binary task",
    labelled="by three radiologists per training film; hospitals in Hanoi",
    files=(
        "image_labels_train.csv",
        "image_labels_test.csv",
        "annotations_train.csv",
        "annotations_test.csv",
        "train.csv",
    ),
)
_BOX = ("x_min", "y_min", "x_max", "y_max")


@dataclass
class _Reads:
    """What a film's readers marked: each reader's labels, and the boxes drawn."""

    readers: dict[str, set[str]] = field(default_factory=dict)
    boxes: list[str] = field(default_factory=list)

    def mark(self, reader: str, label: str) -> None:
        self.readers.setdefault(reader, set()).add(label)

    def values(self, labelled: set[str]) -> tuple[dict[str, float], bool]:
        """Each labelled finding present or absent by majority; normal by majority."""
        votes = Counter(label for labels in self.readers.values() for label in labels)
        half = len(self.readers) / 2
        values = {finding: NEGATIVE for finding in labelled}
        for label, count in votes.items():
            if label != NO_FINDING and count > half:
                values[LABELS[label]] = POSITIVE
        return values, votes[NO_FINDING] > half


def _label(path: Path, row: Row, column: str) -> str:
    if row[column] != NO_FINDING and row[column] not in LABELS:
        raise bad_value(DATASET, path, row, column, f"{NO_FINDING!r} or one of {list(LABELS)}")
    return row[column]


def _box(path: Path, row: Row) -> str | None:
    if not row["x_min"]:
        return None
    try:
        x0, y0, x1, y1 = (float(row[c]) for c in _BOX)
    except ValueError:
        raise bad_value(DATASET, path, row, "x_min", "box corners x_min .. y_max") from None
    return f"{LABELS[row['class_name']]} {x0:g} {y0:g} {x1 - x0:g} {y1 - y0:g}"


def _kaggle(path: Path) -> dict[str, _Reads]:
    reads: dict[str, _Reads] = {}
    for row in read_rows(DATASET, path, ("image_id", "class_name", "rad_id", *_BOX)):
        label = _label(path, row, "class_name")
        film = reads.setdefault(row["image_id"], _Reads())
        film.mark(row["rad_id"], label)
        if label != NO_FINDING and (box := _box(path, row)) is not None:
            film.boxes.append(box)
    return reads


def _physionet(labels_path: Path, boxes_path: Path | None) -> dict[str, _Reads]:
    reads: dict[str, _Reads] = {}
    for row in read_rows(DATASET, labels_path, ("image_id", NO_FINDING)):
        reader = row.cells.get("rad_ID") or row.cells.get("rad_id") or "consensus"
        film = reads.setdefault(row["image_id"], _Reads())
        film.readers.setdefault(reader, set())
        for column, cell in row.cells.items():
            if column in LABELS or column == NO_FINDING:
                if cell not in ("0", "1", "0.0", "1.0"):
                    raise bad_value(DATASET, labels_path, row, column, "0 or 1")
                if cell.startswith("1"):
                    film.mark(reader, column)
    if boxes_path is not None:
        for row in read_rows(DATASET, boxes_path, ("image_id", "class_name", *_BOX)):
            label = _label(boxes_path, row, "class_name")
            box = _box(boxes_path, row) if label != NO_FINDING else None
            if box is not None and row["image_id"] in reads:
                reads[row["image_id"]].boxes.append(box)
    return reads


def read(root: Path) -> Iterator[PublicFilm]:
    """Every film of either layout's label files under ``root``."""
    parts: list[tuple[str, dict[str, _Reads], set[str]]] = []
    for split in ("train", "test"):
        labels = find_label_file(DATASET, root, (f"image_labels_{split}.csv",), required=False)
        if labels is not None:
            boxes = find_label_file(DATASET, root, (f"annotations_{split}.csv",), required=False)
            parts.append((split, _physionet(labels, boxes), set(LABELS.values())))
    if not parts:
        kaggle = find_label_file(DATASET, root, ("train.csv", "image_labels_train.csv"))
        assert kaggle is not None
        labelled = {name for name in LABELS.values() if name != "pneumonia"}
        parts.append(("train", _kaggle(kaggle), labelled))
    for split, reads, labelled in parts:
        for image_id, film_reads in reads.items():
            path = root / split / f"{image_id}.dicom"
            values, normal = film_reads.values(labelled)
            header = header_of(path)
            metadata = dict(header.fields)
            if film_reads.boxes:
                metadata["finding_boxes"] = ";".join(film_reads.boxes)
            # VinDr-CXR is PA films only; a header without a view is taken as frontal.
            frontal = metadata.get("view", "PA") in ("PA", "AP")
            yield PublicFilm(path, image_id, split, values, normal, metadata, frontal)

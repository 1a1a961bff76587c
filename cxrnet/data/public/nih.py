"""NIH ChestX-ray14 as downloaded from the NIH Clinical Center (Wang et al. 2017): 112,120
frontal films of 30,805 patients, labels text-mined from the reports.

Layout: ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``, either gzipped), the films in
``images_001/images/`` ... ``images_012/images/`` as the archives unpack, or in one ``images/``
folder, or beside the label file; optionally ``BBox_List_2017.csv`` (boxes of about 1,000
films) and the official ``train_val_list.txt`` / ``test_list.txt`` (patient-disjoint).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cxrnet.data.dicom_header import age_in_years
from cxrnet.data.files import child_path
from cxrnet.data.public.policy import LabelPolicy, PublicFilm
from cxrnet.data.public.tables import bad_value, find_label_file, read_rows
from cxrnet.user_errors import DataError

DATASET = "NIH ChestX-ray14"
_LABELS = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
POLICY = LabelPolicy(
    DATASET,
    {
        "Pneumonia": "pneumonia",
        "Atelectasis": "atelectasis",
        "Cardiomegaly": "cardiomegaly",
        "Consolidation": "consolidation",
        "Edema": "edema",
        "Effusion": "effusion",
        "Emphysema": "emphysema",
        "Fibrosis": "fibrosis",
        "Hernia": "hernia",
        "Infiltration": "infiltration",
        "Mass": "mass",
        "Nodule": "nodule",
        "Pleural_Thickening": "pleural_thickening",
        "Pneumothorax": "pneumothorax",
    },
    "No Finding",
    "every film labels all 14 findings (a label not listed is absent); text-mined, no uncertain "
    "values; boxes of BBox_List_2017.csv kept (pneumonia's as boxes)",
    labelled=(
        "text-mined from the radiology reports by NLP (estimated over 90% accurate), not read"
        " again by a radiologist; NIH Clinical Center, Bethesda"
    ),
    files=(*_LABELS, "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt"),
)
_COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age")
_SEX, _VIEW = "Patient Gender", "View Position"
_SEXES = {"M": "M", "F": "F"}
_VIEWS = frozenset({"PA", "AP"})
# The box list spells one finding otherwise than the labels.
_BOX_LABELS = {"Infiltrate": "Infiltration"}


def image_folders(root: Path) -> dict[str, Path]:
    """Every film's folder by file name: ``images_NNN/images/``, ``images/`` and ``root``
    itself, each listed once (no film is opened or stat'ed)."""
    folders = [root, root / "images"]
    folders += sorted(
        child / "images" if (child / "images").is_dir() else child
        for child in root.iterdir()
        if child.is_dir() and child.name.startswith("images_")
    )
    where: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.name.endswith(".png"):
                    where.setdefault(entry.name, folder)
    return where


def _official_split(root: Path) -> dict[str, str]:
    """File name -> train or test from the official lists; empty when they are absent."""
    split: dict[str, str] = {}
    for name, value in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        listed = find_label_file(DATASET, root, (name,), required=False)
        if listed is None:
            continue
        for line in listed.read_text(encoding="utf-8").splitlines():
            if line.strip():
                split[line.strip()] = value
    return split


def _boxes(root: Path) -> dict[str, list[tuple[str, str]]]:
    """File name -> (finding, "x y w h") of each box in BBox_List_2017.csv, if present."""
    path = find_label_file(DATASET, root, ("BBox_List_2017.csv",), required=False)
    if path is None:
        return {}
    boxes: dict[str, list[tuple[str, str]]] = {}
    for row in read_rows(DATASET, path, ("Image Index", "Finding Label", "Bbox [x")):
        try:
            numbers = [float(row[c]) for c in ("Bbox [x", "y", "w", "h]")]
        except (KeyError, ValueError):
            raise bad_value(DATASET, path, row, "Bbox [x", "four numbers x, y, w, h") from None
        finding = _BOX_LABELS.get(row["Finding Label"], row["Finding Label"])
        name = POLICY.findings.get(finding)
        if name is None:
            raise bad_value(DATASET, path, row, "Finding Label", f"one of {list(POLICY.findings)}")
        text = " ".join(f"{value:g}" for value in numbers)
        boxes.setdefault(row["Image Index"], []).append((name, text))
    return boxes


def read(root: Path) -> Iterator[PublicFilm]:
    """Every film of ``Data_Entry_2017*.csv`` under ``root``."""
    path = find_label_file(DATASET, root, _LABELS)
    assert path is not None
    where = image_folders(root)
    split = _official_split(root)
    boxes = _boxes(root)
    default = root / "images"  # where a film no folder holds is looked for (and reported)
    for row in read_rows(DATASET, path, _COLUMNS):
        name = row["Image Index"]
        labels = [label.strip() for label in row["Finding Labels"].split("|")]
        normal = labels == [POLICY.normal]
        unknown = [x for x in labels if x not in POLICY.findings and not normal]
        if unknown:
            allowed = f"{POLICY.normal!r} or labels of {list(POLICY.findings)} joined by '|'"
            raise bad_value(DATASET, path, row, "Finding Labels", allowed)
        values = {finding: float(label in labels) for label, finding in POLICY.findings.items()}
        film_split = split.get(name, "train")
        if split and name not in split:
            raise DataError(
                f"{DATASET}: {name} ({path} line {row.line}) is in neither train_val_list.txt "
                "nor test_list.txt; use the lists as the dataset ships them, or remove both"
            )
        metadata = {"study": f"{row['Patient ID']}_{row['Follow-up #']}"}
        age = age_in_years(row["Patient Age"])
        if age is None:
            raise bad_value(DATASET, path, row, "Patient Age", "an age in years")
        metadata["age"] = age
        if _SEX in row.cells and row[_SEX] in _SEXES:
            metadata["sex"] = _SEXES[row[_SEX]]
        if _VIEW in row.cells:
            if row[_VIEW] not in _VIEWS:
                raise bad_value(DATASET, path, row, _VIEW, "PA or AP")
            metadata["view"] = row[_VIEW]
        film_boxes = boxes.get(name, [])
        if film_boxes:
            pneumonia = [text for finding, text in film_boxes if finding == "pneumonia"]
            if pneumonia:
                metadata["boxes"] = ";".join(pneumonia)
            metadata["finding_boxes"] = ";".join(f"{f} {text}" for f, text in film_boxes)
        film = child_path(where.get(name, default), name)
        yield PublicFilm(film, row["Patient ID"], film_split, values, normal, metadata)

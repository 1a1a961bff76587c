"""PadChest (Bustos et al. 2020, Hospital San Juan, Alicante): 160,868 films of 67,625 patients
as 16-bit PNGs, labelled with 174 findings (and differential diagnoses and locations) from the
reports, a quarter by physicians and the rest by a model trained on theirs.

Layout (as BIMCV ships it): ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` (gzipped or
not) and the films at ``<ImageDir>/<ImageID>`` (``ImageDir`` 0 to 54, one folder per zip).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from cxrnet.data.files import PathBuilder
from cxrnet.data.findings import NEGATIVE, POSITIVE
from cxrnet.data.public.policy import LabelPolicy, PublicFilm, Skipped
from cxrnet.data.public.tables import Row, bad_value, find_label_file, read_rows

DATASET = "PadChest"
_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
_GROUPS: dict[str, tuple[str, ...]] = {
    "pneumonia": ("pneumonia", "atypical pneumonia"),
    "atelectasis": (
        "atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
        "atelectasis basal", "total atelectasis", "round atelectasis",
    ),
    "cardiomegaly": ("cardiomegaly",),
    "consolidation": ("consolidation",),
    "edema": ("pulmonary edema",),
    "effusion": ("pleural effusion", "loculated pleural effusion"),
    "emphysema": ("emphysema",),
    "fibrosis": ("pulmonary fibrosis",),
    "fracture": (
        "fracture", "rib fracture", "callus rib fracture", "clavicle fracture",
        "humeral fracture", "vertebral fracture",
    ),
    "hernia": ("hiatal hernia",),
    "infiltration": ("infiltrates",),
    "mass": ("mass", "pulmonary mass", "mediastinal mass", "soft tissue mass", "pleural mass"),
    "nodule": ("nodule", "multiple nodules"),
    "pleural_thickening": (
        "pleural thickening", "apical pleural thickening", "calcified pleural thickening",
    ),
    "pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "support_devices": (
        "NSG tube", "endotracheal tube", "tracheostomy tube", "chest drain tube", "pacemaker",
        "dual chamber device", "single chamber device", "electrical device", "catheter",
        "central venous catheter", "central venous catheter via jugular vein",
        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
        "reservoir central venous catheter", "ventriculoperitoneal drain tube",
        "gastrostomy tube", "nephrostomy tube", "double J stent",
    ),
}  # fmt: skip
LABELS = {label: finding for finding, labels in _GROUPS.items() for label in labels}
NORMAL_LABEL = "normal"
# Not findings of the film: a comparison with an earlier one, a blank entry, the study's quality.
_NOT_FINDINGS = frozenset({"unchanged", "", "suboptimal study"})
_EXCLUDE = "exclude"
POLICY = LabelPolicy(
    DATASET,
    {label: finding for label, finding in LABELS.items() if finding == "pneumonia"}
    | {label: finding for label, finding in LABELS.items() if finding != "pneumonia"},
    NORMAL_LABEL,
    "a label not listed is absent; every label outside cxrnet's findings (COPD signs, aortic "
    "elongation, scoliosis ...) is other_finding; 'unchanged' and 'suboptimal study' are no "
    "finding; 'exclude' films are left out; frontal = PA, AP and AP_horizontal",
    labelled=(
        "27% of the reports labelled by physicians, the rest by a network trained on them; "
        "Hospital San Juan, Alicante"
    ),
    files=(_FILE,),
)
_COLUMNS = ("ImageID", "ImageDir", "PatientID", "StudyID", "Projection", "Labels")
_FRONTAL = frozenset({"PA", "AP", "AP_horizontal"})
_SEXES = frozenset({"M", "F", "O"})


def _labels(path: Path, row: Row) -> list[str] | None:
    """The row's labels; None where PadChest has none (``nan``)."""
    cell = row["Labels"]
    if cell in ("", "nan"):
        return None
    try:
        labels = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise bad_value(DATASET, path, row, "Labels", "a list of labels such as ['normal']")
    return [label.strip() for label in labels]


def _age(row: Row) -> str | None:
    """Years between the birth year and the study's year, as torchxrayvision reads them."""
    birth, date = row.cells.get("PatientBirth", ""), row.cells.get("StudyDate_DICOM", "")
    try:
        return str(int(date[:4]) - int(float(birth)))
    except ValueError:
        return None


def read(root: Path) -> Iterator[PublicFilm | Skipped]:
    """Every film of PadChest's label file under ``root``."""
    path = find_label_file(DATASET, root, (_FILE,))
    assert path is not None
    film_path = PathBuilder()  # each ImageDir parsed once
    for row in read_rows(DATASET, path, _COLUMNS):
        film = film_path(f"{root}/{row['ImageDir']}/{row['ImageID']}")
        labels = _labels(path, row)
        if labels is None or _EXCLUDE in labels:
            why = "no labels" if labels is None else "labelled 'exclude'"
            yield Skipped(film, f"{DATASET} gives it {why}")
            continue
        findings = [label for label in labels if label not in _NOT_FINDINGS]
        normal = findings == [NORMAL_LABEL]
        values = {finding: NEGATIVE for finding in _GROUPS}
        values["other_finding"] = NEGATIVE
        for label in findings:
            if label != NORMAL_LABEL:
                values[LABELS.get(label, "other_finding")] = POSITIVE
        metadata = {"study": row["StudyID"], "view": row["Projection"]}
        if (age := _age(row)) is not None:
            metadata["age"] = age
        if row.cells.get("PatientSex_DICOM") in _SEXES:
            metadata["sex"] = row["PatientSex_DICOM"]
        frontal = row["Projection"] in _FRONTAL
        yield PublicFilm(film, row["PatientID"], "train", values, normal, metadata, frontal)

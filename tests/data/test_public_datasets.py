"""Each public dataset's reader on the dataset's real label files (torchxrayvision's copies, a few
thousand rows laid out as the dataset ships them with a tiny film at every listed path), checked
against counts computed here, independently, from the same rows: films per class, patients,
views, ages, boxes and splits. MIMIC-CXR-JPG, which torchxrayvision does not ship, is written
following PhysioNet's documentation."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers.dicom_films import write_dicom
from helpers.public_data import (
    NIH_BOXES,
    PADCHEST,
    RSNA_HEADERS,
    RSNA_LABELS,
    VINDR,
    chexpert_download,
    lay_films,
    nih_download,
    read_shipped,
    write_csv,
)

from cxrnet.data.public import listing_cache
from cxrnet.data.public.formats import PublicSource
from cxrnet.data.public.listing import PublicListing, read_public
from cxrnet.user_errors import DataError


def _read(fmt: str, root: Path, task: str = "binary", **options) -> PublicListing:
    uncertain = options.pop("uncertain", "ignore")
    views = options.pop("views", "frontal")
    return read_public(
        PublicSource(fmt, root, views), task, uncertain, False, {}, options.get("skip", False)
    )


def _records(listing: PublicListing) -> list:
    return [record for records in listing.records.values() for record in records]


# --- NIH ChestX-ray14 ----------------------------------------------------------------------


def _nih_class(labels: str) -> str:
    names = labels.split("|")
    if "Pneumonia" in names:
        return "PNEUMONIA"
    return "NORMAL" if names == ["No Finding"] else "OTHER_ABNORMAL"


def test_the_nih_reader_gives_every_film_its_class_patient_view_age_box_and_split(
    tmp_path: Path,
) -> None:
    rows = nih_download(tmp_path)
    expected = Counter(_nih_class(row["Finding Labels"]) for row in rows)
    assert expected["PNEUMONIA"] and expected["NORMAL"] and expected["OTHER_ABNORMAL"]

    binary = _read("nih", tmp_path)
    records = _records(binary)
    assert Counter(r.class_name for r in records) == {
        "NORMAL": expected["NORMAL"],
        "PNEUMONIA": expected["PNEUMONIA"],
    }
    # OTHER_ABNORMAL films train nothing in the binary task: listed, each with its reason.
    others = [path for path, why in binary.ignored if why.startswith("class OTHER_ABNORMAL")]
    assert len(others) == expected["OTHER_ABNORMAL"] == len(binary.ignored)

    findings = _records(_read("nih", tmp_path, "findings"))
    assert len(findings) == len(rows)
    by_name = {r.path.name: r for r in findings}
    for row in rows:
        record = by_name[row["Image Index"]]
        assert record.class_name == _nih_class(row["Finding Labels"])
        assert record.patient == row["Patient ID"]
        assert record.metadata["view"] == row["View Position"]
        assert record.metadata["age"] == str(int(row["Patient Age"]))
        assert record.metadata["sex"] == row["Patient Gender"]
        split = "test" if int(row["Patient ID"]) % 5 == 0 else "train"
        assert record.source_split == split
        labelled = set(row["Finding Labels"].split("|")) - {"No Finding"}
        assert {n for n, v in record.findings if v == 1} == {name.lower() for name in labelled}
    assert len({r.patient for r in findings}) == len({row["Patient ID"] for row in rows})
    views = Counter(r.metadata["view"] for r in findings)
    assert views == Counter(row["View Position"] for row in rows)

    _, box_rows = read_shipped(NIH_BOXES)
    boxed = Counter(row[0] for row in box_rows if row[0] in by_name)
    with_boxes = {r.path.name: r for r in findings if "finding_boxes" in r.metadata}
    assert set(with_boxes) == set(boxed)
    for name, count in boxed.items():
        assert len(with_boxes[name].metadata["finding_boxes"].split(";")) == count
    pneumonia_boxes = {row[0] for row in box_rows if row[0] in by_name and row[1] == "Pneumonia"}
    assert pneumonia_boxes and pneumonia_boxes == {
        r.path.name for r in findings if "boxes" in r.metadata
    }


def test_the_nih_split_keeps_each_patient_in_one_official_split(tmp_path: Path) -> None:
    nih_download(tmp_path)
    findings = _records(_read("nih", tmp_path, "findings"))
    splits_of: dict[str, set[str]] = {}
    for record in findings:
        splits_of.setdefault(record.patient, set()).add(record.source_split)
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {split for splits in splits_of.values() for split in splits} == {"train", "test"}


# --- CheXpert ------------------------------------------------------------------------------


def _chexpert_class(row: dict[str, str], uncertain: str) -> str | None:
    pneumonia = row["Pneumonia"]
    if pneumonia == "-1.0":
        pneumonia = {"ignore": None, "positive": "1.0", "negative": "0.0"}[uncertain]
        if pneumonia is None:
            return None
    if pneumonia == "1.0":
        return "PNEUMONIA"
    diseases = [c for c in row if c not in _CHEXPERT_META and c != "Support Devices"]
    if any(row[c] == "1.0" for c in diseases if c != "No Finding"):
        return "OTHER_ABNORMAL"
    return "NORMAL" if row["No Finding"] == "1.0" else None


_CHEXPERT_META = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


@pytest.mark.parametrize("uncertain", ["ignore", "positive", "negative"])
def test_the_chexpert_reader_counts_frontal_films_per_class_under_each_uncertain_policy(
    tmp_path: Path, uncertain: str
) -> None:
    header, rows = chexpert_download(tmp_path)
    frontal = [dict(zip(header, row, strict=True)) for row in rows if row[3] == "Frontal"]
    expected = Counter(_chexpert_class(row, uncertain) for row in frontal)

    # The folder holding the download, or the download's own folder: the same films.
    listing = _read("chexpert", tmp_path, uncertain=uncertain)
    again = _read("chexpert", tmp_path / "CheXpert-v1.0-small", uncertain=uncertain)
    records = _records(listing)
    assert [r.path for r in records] == [r.path for r in _records(again)]
    assert Counter(r.class_name for r in records) == {
        "NORMAL": expected["NORMAL"],
        "PNEUMONIA": expected["PNEUMONIA"],
    }
    assert {split: len(items) for split, items in listing.records.items()} == {
        "train": sum(1 for r in records if "/train/" in str(r.path)),
        "val": sum(1 for r in records if "/valid/" in str(r.path)),
    }
    reasons = Counter(why.split(":")[0] for _, why in listing.ignored)
    assert reasons["view LATERAL"] == len(rows) - len(frontal)
    assert reasons["class OTHER_ABNORMAL"] == expected["OTHER_ABNORMAL"]
    assert len(listing.ignored) == len(rows) - expected["NORMAL"] - expected["PNEUMONIA"]


def test_the_chexpert_reader_keeps_patient_study_view_age_and_the_uncertain_values(
    tmp_path: Path,
) -> None:
    header, rows = chexpert_download(tmp_path, 1500)
    listing = _read("chexpert", tmp_path, "findings", views="all")
    by_path = {str(r.path): r for r in _records(listing)}
    checked = 0
    for row in (dict(zip(header, row, strict=True)) for row in rows):
        path = str(tmp_path / "CheXpert-v1.0-small" / Path(*row["Path"].split("/")[1:]))
        record = by_path.get(path)
        if record is None:
            continue
        patient, study = row["Path"].split("/")[2:4]
        assert record.patient == patient
        assert record.metadata["study"] == f"{patient}/{study}"
        view = "LATERAL" if row["Frontal/Lateral"] == "Lateral" else row["AP/PA"]
        assert record.metadata["view"] == view
        assert record.metadata["age"] == row["Age"]
        values = record.finding_values
        assert values.get("pneumonia") == (float(row["Pneumonia"]) if row["Pneumonia"] else None)
        assert values.get("effusion") == (
            float(row["Pleural Effusion"]) if row["Pleural Effusion"] else None
        )
        checked += 1
    assert checked > 1000
    assert {r.metadata["view"] for r in by_path.values()} >= {"AP", "PA", "LATERAL"}


def test_a_chexpert_csv_of_the_full_download_reads_the_small_downloads_films(
    tmp_path: Path,
) -> None:
    header, rows = chexpert_download(tmp_path, 300)
    full = [[row[0].replace("CheXpert-v1.0-small", "CheXpert-v1.0"), *row[1:]] for row in rows]
    folder = tmp_path / "CheXpert-v1.0-small"
    write_csv(folder / "train.csv", header, full[:300])
    write_csv(folder / "valid.csv", header, full[300:])
    assert len(_records(_read("chexpert", tmp_path, views="all"))) > 0  # every film found


# --- PadChest ------------------------------------------------------------------------------


def test_the_padchest_reader_counts_classes_views_patients_and_ages(tmp_path: Path) -> None:
    header, rows = read_shipped(PADCHEST)
    rows = rows[:3000]
    name = PADCHEST.removesuffix(".gz")
    write_csv(tmp_path / name, header, rows)
    column = {name: i for i, name in enumerate(header)}
    lay_films(tmp_path / row[column["ImageDir"]] / row[column["ImageID"]] for row in rows)

    def klass(row: list[str]) -> str | None:
        cell = row[column["Labels"]]
        if cell in ("nan", ""):
            return None
        labels = {x.strip().strip("'") for x in cell.strip("[]").split(",")} - {
            "unchanged",
            "",
            "suboptimal study",
        }
        if "exclude" in labels:
            return None
        if labels & {"pneumonia", "atypical pneumonia"}:
            return "PNEUMONIA"
        if labels == {"normal"}:
            return "NORMAL"
        devices = {"NSG tube", "endotracheal tube", "pacemaker", "chest drain tube", "catheter"}
        rest = labels - {"normal"}
        if rest and not rest <= devices | {x for x in rest if "catheter" in x or "device" in x}:
            return "OTHER_ABNORMAL"
        return None

    frontal = [row for row in rows if row[column["Projection"]] in ("PA", "AP", "AP_horizontal")]
    expected = Counter(klass(row) for row in frontal)
    listing = _read("padchest", tmp_path)
    records = _records(listing)
    assert Counter(r.class_name for r in records) == {
        "NORMAL": expected["NORMAL"],
        "PNEUMONIA": expected["PNEUMONIA"],
    }
    findings = _records(_read("padchest", tmp_path, "findings", views="all"))
    views = Counter(r.metadata["view"] for r in findings)
    assert views["L"] > 0 and views["PA"] > 0
    assert len({r.patient for r in findings}) <= len({row[column["PatientID"]] for row in rows})
    ages = {r.path.name: r.metadata.get("age") for r in findings}
    for row in rows[:200]:
        name = row[column["ImageID"]]
        if name in ages and row[column["PatientBirth"]] not in ("", "nan"):
            birth = int(float(row[column["PatientBirth"]]))
            assert ages[name] == str(int(row[column["StudyDate_DICOM"]][:4]) - birth)


# --- VinDr-CXR -----------------------------------------------------------------------------


def test_the_vindr_reader_combines_three_readers_by_majority(tmp_path: Path) -> None:
    header, rows = read_shipped(VINDR)
    images = list(dict.fromkeys(row[0] for row in rows))[:1500]
    keep = set(images)
    chosen = [row for row in rows if row[0] in keep]
    write_csv(tmp_path / "train.csv", header, chosen)
    lay_films(tmp_path / "train" / f"{image}.dicom" for image in images)
    marks: dict[str, dict[str, set[str]]] = {}
    for image, label, _, reader, *_ in chosen:
        marks.setdefault(image, {}).setdefault(label, set()).add(reader)
    normal = {i for i, m in marks.items() if len(m.get("No finding", ())) >= 2}
    abnormal = {
        i for i, m in marks.items() if any(len(r) >= 2 for x, r in m.items() if x != "No finding")
    }

    binary = _read("vindr", tmp_path)
    records = _records(binary)
    # Kaggle's files label no pneumonia: only normal films reach the binary task.
    assert Counter(r.class_name for r in records) == {"NORMAL": len(normal - abnormal)}
    reasons = Counter(why for _, why in binary.ignored)
    assert reasons["abnormal, and VinDr-CXR does not say whether it has pneumonia"] == len(abnormal)
    findings = _records(_read("vindr", tmp_path, "findings"))
    assert len(findings) == len(normal | abnormal)
    assert all("pneumonia" not in r.finding_values for r in findings)
    assert all(r.patient == r.path.stem for r in findings)


def test_the_vindr_reader_reads_physionets_global_pneumonia_label(tmp_path: Path) -> None:
    columns = ["image_id", "rad_ID", "Nodule/Mass", "Pneumonia", "Other disease", "No finding"]
    rows = [
        # Two of three readers say pneumonia: PNEUMONIA.
        ["a", "R1", "0", "1", "0", "0"],
        ["a", "R2", "0", "1", "0", "0"],
        ["a", "R3", "0", "0", "0", "1"],
        # Normal by majority.
        ["b", "R1", "0", "0", "0", "1"],
        ["b", "R2", "0", "0", "0", "1"],
        ["b", "R3", "1", "0", "0", "0"],
        # A nodule by majority, no pneumonia: OTHER_ABNORMAL.
        ["c", "R1", "1", "0", "0", "0"],
        ["c", "R2", "1", "0", "0", "0"],
        ["c", "R3", "0", "0", "0", "1"],
    ]
    write_csv(tmp_path / "annotations" / "image_labels_train.csv", columns, rows)
    boxes = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    write_csv(
        tmp_path / "annotations" / "annotations_train.csv",
        boxes,
        [["c", "R1", "Nodule/Mass", "10", "20", "40", "60"]],
    )
    test = [["image_id", "Nodule/Mass", "Pneumonia", "Other disease", "No finding"]]
    write_csv(
        tmp_path / "annotations" / "image_labels_test.csv", test[0], [["d", "0", "1", "0", "0"]]
    )
    lay_films(
        tmp_path / split / f"{i}.dicom"
        for split, i in [*(("train", x) for x in "abc"), ("test", "d")]
    )
    listing = read_public(PublicSource("vindr", tmp_path), "findings", "ignore", True, {}, False)
    by_id = {r.path.stem: r for r in _records(listing)}
    assert {i: r.class_name for i, r in by_id.items()} == {
        "a": "PNEUMONIA",
        "b": "NORMAL",
        "c": "OTHER_ABNORMAL",
        "d": "PNEUMONIA",
    }
    assert by_id["d"].source_split == "test"
    assert by_id["c"].metadata["finding_boxes"] == "lung_lesion 10 20 30 40"
    assert by_id["b"].finding_values["lung_lesion"] == 0.0


# --- RSNA ----------------------------------------------------------------------------------


def _rsna_download(root: Path, patients: int = 240) -> dict[str, dict[str, str]]:
    """The first patients of the challenge's train labels, with a class-info file written from
    them (the headers file gives no class: Target 1 is Lung Opacity, and Target 0 films
    alternate Normal and No Lung Opacity / Not Normal), and DICOM films whose headers are the
    challenge's own (torchxrayvision's dicom-headers file)."""
    header, rows = read_shipped(RSNA_LABELS)
    ids = list(dict.fromkeys(row[0] for row in rows))[:patients]
    keep = set(ids)
    chosen = [row for row in rows if row[0] in keep]
    write_csv(root / "stage_2_train_labels.csv", header, chosen)
    target = {row[0]: row[5] for row in chosen}
    classes = [
        [pid, "Lung Opacity" if target[pid] == "1" else ("Normal", _OTHER)[i % 2]]
        for i, pid in enumerate(ids)
    ]
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)
    h_header, h_rows = read_shipped(RSNA_HEADERS)
    column = {name: i for i, name in enumerate(h_header)}
    headers = {
        row[column["PatientID"]]: {name: row[i] for name, i in column.items()}
        for row in h_rows
        if row[column["PatientID"]] in keep
    }
    pixels = np.zeros((8, 8), dtype=np.uint8)
    (root / "stage_2_train_images").mkdir()
    for pid in ids:
        h = headers[pid]
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            pixels,
            PatientID=pid,
            PatientAge=h["PatientAge"],
            PatientSex=h["PatientSex"],
            ViewPosition=h["ViewPosition"],
        )
    return {pid: headers[pid] | {"class": klass} for pid, klass in classes}


_OTHER = "No Lung Opacity / Not Normal"


# The challenge's headers give ages as bare numbers ("51"), which pydicom warns about.
@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_the_rsna_reader_gives_classes_boxes_and_the_dicom_headers_fields(tmp_path: Path) -> None:
    expected = _rsna_download(tmp_path)
    _, rows = read_shipped(RSNA_LABELS)
    listing = read_public(PublicSource("rsna", tmp_path), "binary", "ignore", True, {}, False)
    records = {r.path.stem: r for r in _records(listing)}
    others = {film.path.stem for film in listing.others}
    klass = {"Lung Opacity": "PNEUMONIA", "Normal": "NORMAL", _OTHER: "OTHER_ABNORMAL"}
    assert Counter(r.class_name for r in records.values()) + Counter(
        {"OTHER_ABNORMAL": len(others)}
    ) == Counter(klass[e["class"]] for e in expected.values())
    for pid, record in records.items():
        assert record.metadata["view"] == expected[pid]["ViewPosition"]
        assert record.metadata["age"] == str(int(expected[pid]["PatientAge"]))
        assert record.metadata["sex"] == expected[pid]["PatientSex"]
        boxes = [
            " ".join(f"{float(x):g}" for x in row[1:5])
            for row in rows
            if row[0] == pid and row[5] == "1"
        ]
        assert record.metadata.get("boxes", "") == ";".join(boxes)
    assert sum(1 for r in records.values() if "boxes" in r.metadata) == sum(
        1 for e in expected.values() if e["class"] == "Lung Opacity"
    )


# --- MIMIC-CXR-JPG (written following PhysioNet's documentation) --------------------------


def _mimic_download(root: Path, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    observations = [
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
        "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
        "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
    ]  # fmt: skip
    labels, metadata_rows, splits, images = [], [], [], []
    for s in range(120):
        subject = str(10000000 + s // 3 * 7)
        study = str(50000000 + s)
        kind = rng.choice(["normal", "pneumonia", "effusion", "uncertain"])
        values = dict.fromkeys(observations, "")
        if kind == "normal":
            values["No Finding"] = "1.0"
        elif kind == "pneumonia":
            values["Pneumonia"] = "1.0"
        elif kind == "effusion":
            values["Pleural Effusion"] = "1.0"
        else:
            values["Pneumonia"] = "-1.0"
        labels.append([subject, study, *values.values()])
        split = rng.choice(["train", "train", "validate", "test"])
        for view in ("PA", "LATERAL"):
            dicom = f"{study}-{view.lower()}"
            metadata_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, "1", "1"])
            splits.append([dicom, study, subject, split])
            images.append({"dicom": dicom, "subject": subject, "study": study, "view": view,
                           "split": split, "kind": kind})  # fmt: skip
    prefix = "mimic-cxr-2.0.0-"
    write_csv(root / f"{prefix}chexpert.csv.gz", ["subject_id", "study_id", *observations], labels)
    write_csv(
        root / f"{prefix}metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
         "ViewPosition", "Rows", "Columns"],
        metadata_rows,
    )  # fmt: skip
    write_csv(
        root / f"{prefix}split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], splits
    )
    lay_films(
        root / "files" / f"p{i['subject'][:2]}" / f"p{i['subject']}" / f"s{i['study']}"
        / f"{i['dicom']}.jpg"
        for i in images
    )  # fmt: skip
    return images


def test_the_mimic_reader_gives_each_image_its_studys_labels_view_and_split(
    tmp_path: Path,
) -> None:
    images = _mimic_download(tmp_path)
    listing = _read("mimic", tmp_path, "findings")
    records = {r.path.stem: r for r in _records(listing)}
    frontal = [i for i in images if i["view"] == "PA"]
    usable = [i for i in frontal if i["kind"] != "uncertain"]
    assert set(records) == {i["dicom"] for i in usable}
    names = {"train": "train", "validate": "val", "test": "test"}
    kind_class = {"normal": "NORMAL", "pneumonia": "PNEUMONIA", "effusion": "OTHER_ABNORMAL"}
    for image in usable:
        record = records[image["dicom"]]
        assert record.source_split == names[image["split"]]
        assert record.patient == image["subject"]
        assert record.metadata["view"] == "PA" and record.metadata["study"] == image["study"]
        assert record.class_name == kind_class[image["kind"]]
    laterals = [path for path, why in listing.ignored if why.startswith("view LATERAL")]
    assert len(laterals) == len(images) - len(frontal)
    uncertain = _read("mimic", tmp_path, "binary", uncertain="positive")
    pneumonia = sum(1 for r in _records(uncertain) if r.label == 1)
    assert pneumonia == sum(1 for i in frontal if i["kind"] in ("pneumonia", "uncertain"))


# --- What goes wrong ------------------------------------------------------------------------


def test_a_missing_film_stops_the_read_or_is_listed_when_skipping(tmp_path: Path) -> None:
    images = _mimic_download(tmp_path)
    used = next(i for i in images if i["view"] == "PA" and i["kind"] != "uncertain")
    gone = next(tmp_path.rglob(f"{used['dicom']}.jpg"))
    gone.unlink()
    with pytest.raises(DataError, match=r"MIMIC-CXR-JPG: 1 film\(s\).*on_bad_image=skip"):
        _read("mimic", tmp_path, "findings")
    listing = _read("mimic", tmp_path, "findings", skip=True)
    assert (gone, "listed in the dataset's label files but not on disk "
            "(data.on_bad_image=skip)") in listing.ignored  # fmt: skip


def test_a_truncated_gzip_label_file_names_the_file(tmp_path: Path) -> None:
    _mimic_download(tmp_path)
    labels = tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz"
    labels.write_bytes(labels.read_bytes()[: len(labels.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"metadata\.csv\.gz cannot be read to the end"):
        _read("mimic", tmp_path)


def test_the_docs_dataset_page_names_every_format_and_each_mapping() -> None:
    from cxrnet.data.public import chexpert, nih, vindr
    from cxrnet.data.public.formats import FORMATS

    text = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    for name in FORMATS:
        assert f"format: {name}, root:" in text, name
    for policy in (nih.POLICY, chexpert.POLICY):
        for label, finding in policy.findings.items():
            assert f"| {label} | {finding} |" in text, label
    shown = [
        line for line in text.splitlines() if line.startswith("| ") and "by a majority" in line
    ]
    mapped = {line.split(" | ")[1] for line in shown} - {"NORMAL (no finding)"}
    assert mapped and mapped <= set(vindr.LABELS.values())


@pytest.mark.real_data
@pytest.mark.slow  # 749 real films converted to DICOM (about 750 MB written)
@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_the_rsna_reader_on_the_challenges_layout_gives_rsna_adults_labels(tmp_path: Path) -> None:
    """``../shared/data/rsna_adult`` laid out as the challenge ships it (its films converted to
    DICOM, the two label files written from labels.csv) reads back as labels.csv says."""
    from helpers.rsna import RSNA_ADULT, rsna_rows
    from PIL import Image

    rows = rsna_rows()
    images = tmp_path / "stage_2_train_images"
    images.mkdir()
    boxes, classes = [], []
    for row in rows:
        pid = row["patient_id"]
        pixels = np.asarray(Image.open(RSNA_ADULT / row["file"]).convert("L"))
        write_dicom(
            images / f"{pid}.dcm",
            pixels,
            PatientID=pid,
            PatientAge=row["age"],  # bare years, as the challenge's headers give them
            PatientSex=row["sex"],
            ViewPosition=row["view"],
        )
        classes.append([pid, row["rsna_class"]])
        drawn = [box.split() for box in row["boxes"].split(";") if box.strip()]
        boxes += [[pid, *box, "1"] for box in drawn] or [[pid, "", "", "", "", "0"]]
    write_csv(tmp_path / "stage_2_detailed_class_info.csv", ["patientId", "class"], classes)
    header = ["patientId", "x", "y", "width", "height", "Target"]
    write_csv(tmp_path / "stage_2_train_labels.csv", header, boxes)

    listing = read_public(PublicSource("rsna", tmp_path), "findings", "ignore", False, {}, False)
    records = {r.patient: r for r in _records(listing)}
    assert len(records) == len(rows) == 749 and not listing.ignored
    for row in rows:
        record = records[row["patient_id"]]
        assert record.class_name == row["label"]
        assert record.path == images / f"{row['patient_id']}.dcm"
        assert record.metadata["view"] == row["view"]
        assert record.metadata["age"] == row["age"]
        assert record.metadata["sex"] == row["sex"]
        assert record.metadata.get("boxes", "") == row["boxes"]


def test_a_second_start_reads_the_kept_listing_and_a_changed_label_file_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _mimic_download(tmp_path / "mimic")
    source = PublicSource("mimic", tmp_path / "mimic")
    cache = tmp_path / "cache"

    def read(facts: dict | None) -> PublicListing:
        return read_public(source, "findings", "ignore", False, facts, False, cache_dir=cache)

    first = read({})
    (kept,) = (cache / "public_listings").iterdir()
    parsed = PublicSource.films
    monkeypatch.setattr(PublicSource, "films", lambda self: pytest.fail("parsed again"))
    for facts in ({}, None):  # a start that stats the films, and one that trusts the cache
        again = read(facts)
        assert again.records == first.records and again.ignored == first.ignored
    # A film gone since is still found missing: the films are stat'ed, only the labels kept.
    used = next(i for i in images if i["view"] == "PA" and i["kind"] != "uncertain")
    next((tmp_path / "mimic").rglob(f"{used['dicom']}.jpg")).unlink()
    with pytest.raises(DataError, match=r"1 film\(s\) its label files list are not under"):
        read({})
    # A label file edited gives another key: parsed again, and the new listing replaces the
    # old one (never to be read again); another use of the source keeps its own.
    labels = tmp_path / "mimic" / "mimic-cxr-2.0.0-split.csv.gz"
    labels.write_bytes(labels.read_bytes() + b"")
    os.utime(labels, ns=(1, 1))
    monkeypatch.setattr(PublicSource, "films", parsed)
    read_public(source, "binary", "ignore", False, None, False, cache_dir=cache)
    read(None)
    names = {p.name for p in (cache / "public_listings").iterdir()}
    assert len(names) == 2 and kept.name not in names
    (edited,) = [n for n in names if n.split("-")[0] == kept.name.split("-")[0]]
    # So does other reader code: a listing an older cxrnet kept is not trusted.
    monkeypatch.setattr(listing_cache, "_code", lambda: "another cxrnet")
    read(None)
    names_now = {p.name for p in (cache / "public_listings").iterdir()}
    assert len(names_now) == 2 and edited not in names_now

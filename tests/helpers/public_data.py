"""The public datasets' real label files, as the test dependency torchxrayvision ships them in
its ``data/`` folder (located through the installed distribution, never imported, nothing
downloaded or copied into the repository), and small laid-out downloads built from them: a
subset of the rows in the dataset's own layout, with a tiny film at every path they list."""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NIH_LABELS = "Data_Entry_2017_v2020.csv.gz"
NIH_BOXES = "BBox_List_2017.csv.gz"
CHEXPERT = "chexpert_train.csv.gz"
RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
RSNA_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
PADCHEST = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
VINDR = "vinbigdata-train.csv.gz"


def shipped(name: str) -> Path:
    """The path of torchxrayvision's copy of the label file ``name``; skips where the test
    dependency is not installed."""
    try:
        dist = metadata.distribution("torchxrayvision")
    except metadata.PackageNotFoundError:
        pytest.skip("torchxrayvision (a test dependency: pip install -e '.[test]') is absent")
    path = Path(str(dist.locate_file(f"torchxrayvision/data/{name}")))
    if not path.is_file():
        pytest.skip(f"this torchxrayvision release does not ship {name}")
    return path


def read_shipped(name: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a shipped label file (gzip or one-member zip)."""
    path = shipped(name)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode("utf-8")
    else:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """``rows`` under ``header`` as ``path`` (gzipped where the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tiny_film(index: int, suffix: str = ".png") -> bytes:
    """A 32x32 grayscale film's bytes (the smallest cxrnet decodes), different for each
    ``index``: byte-identical films in two splits would stop a run."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(index).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    return buffer.getvalue()


def lay_films(paths: Iterable[Path]) -> int:
    """A tiny film at each path (folders made), each different; the count written."""
    count = 0
    for count, path in enumerate(paths, 1):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_film(count, path.suffix))
    return count


def nih_download(root: Path, patients: int = 400) -> list[dict[str, str]]:
    """NIH's rows of the first ``patients`` patients and of every film with a box, laid out as
    images_001/images, images_002/images and a flat images/ folder, with the official lists
    (patient-disjoint, as NIH's are) written from the patient IDs."""
    header, rows = read_shipped(NIH_LABELS)
    box_header, box_rows = read_shipped(NIH_BOXES)
    boxed = {row[0] for row in box_rows[:150]}
    firsts = list(dict.fromkeys(row[3] for row in rows))[:patients]
    wanted = set(firsts) | {row[3] for row in rows if row[0] in boxed}
    chosen = [row for row in rows if row[3] in wanted]
    write_csv(root / NIH_LABELS.removesuffix(".gz"), header, chosen)
    names = {row[0] for row in chosen}
    write_csv(root / NIH_BOXES, box_header, [row for row in box_rows if row[0] in names])
    folders = [root / "images_001" / "images", root / "images_002" / "images", root / "images"]
    lay_films(folders[i % 3] / row[0] for i, row in enumerate(chosen))
    test = [row[0] for row in chosen if int(row[3]) % 5 == 0]
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    train = [row[0] for row in chosen if int(row[3]) % 5 != 0]
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    return [dict(zip(header, row, strict=True)) for row in chosen]


def chexpert_download(root: Path, rows_wanted: int = 3000) -> tuple[list[str], list[list[str]]]:
    """The first rows of CheXpert's train.csv as train.csv, the next 200 as valid.csv (their
    paths under valid/), in a CheXpert-v1.0-small folder under ``root``."""
    header, rows = read_shipped(CHEXPERT)
    train, valid = rows[:rows_wanted], rows[rows_wanted : rows_wanted + 200]
    valid = [[row[0].replace("/train/", "/valid/"), *row[1:]] for row in valid]
    folder = root / "CheXpert-v1.0-small"
    write_csv(folder / "train.csv", header, train)
    write_csv(folder / "valid.csv", header, valid)
    lay_films(folder.joinpath(*row[0].split("/")[1:]) for row in [*train, *valid])
    return header, [*train, *valid]

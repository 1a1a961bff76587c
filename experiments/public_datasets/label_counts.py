"""The label-policy table of docs/datasets.md, computed from the datasets' real label files.

For each dataset torchxrayvision ships the labels of (NIH ChestX-ray14, CheXpert, RSNA, PadChest,
VinDr-CXR's Kaggle release), every dataset label with the cxrnet finding it maps to and the
number of films the dataset itself gives that label, then the films per class under cxrnet's
policy (frontal films, data.uncertain=ignore), read by cxrnet's own readers from the label files
alone (no film is opened). Prints Markdown:

    .venv/bin/python experiments/public_datasets/label_counts.py > /tmp/label_counts.md

Needs the test dependency torchxrayvision (pip install -e '.[test]'); downloads nothing.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import sys
import tempfile
import zipfile
from collections import Counter
from importlib import metadata
from pathlib import Path

from cxrnet.data.public import chexpert, nih, padchest, rsna, vindr
from cxrnet.data.public.formats import PublicSource
from cxrnet.data.public.listing import read_public


def shipped(name: str) -> Path:
    dist = metadata.distribution("torchxrayvision")
    return Path(str(dist.locate_file(f"torchxrayvision/data/{name}")))


def rows(name: str) -> list[dict[str, str]]:
    path = shipped(name)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode()
    else:
        text = gzip.decompress(path.read_bytes()).decode()
    return list(csv.DictReader(io.StringIO(text)))


def table(title: str, counts: dict[str, str], mapping: dict[str, str], normal: str) -> list[str]:
    lines = [f"### {title}", "", "| dataset label | cxrnet | films (dataset's count) |"]
    lines.append("| --- | --- | --- |")
    lines.append(f"| {normal} | NORMAL (no finding) | {counts.get(normal, 0)} |")
    for label, finding in mapping.items():
        lines.append(f"| {label} | {finding} | {counts.get(label, 0)} |")
    return lines


def policy_counts(fmt: str, root: Path) -> str:
    listing = read_public(PublicSource(fmt, root), "binary", "ignore", True, None, False)
    classes = Counter(r.class_name for items in listing.records.values() for r in items)
    classes["OTHER_ABNORMAL"] = len(listing.others)
    reasons = Counter(why.split(":")[0].split(" (")[0] for _, why in listing.ignored)
    used = ", ".join(
        f"{name} {classes[name]:,}" for name in ("NORMAL", "PNEUMONIA", "OTHER_ABNORMAL")
    )
    out = "; ".join(f"{why} {n:,}" for why, n in reasons.most_common())
    return f"Under cxrnet's policy (frontal films, data.uncertain=ignore): {used}; left out: {out}."


def main() -> None:
    out: list[str] = []
    work = Path(tempfile.mkdtemp())
    # NIH
    entries = rows("Data_Entry_2017_v2020.csv.gz")
    counts = Counter(label for row in entries for label in row["Finding Labels"].split("|"))
    out += table("NIH ChestX-ray14", {k: f"{v:,}" for k, v in counts.items()},
                 dict(nih.POLICY.findings), "No Finding")  # fmt: skip
    (work / "nih").mkdir()
    (work / "nih" / "Data_Entry_2017_v2020.csv.gz").symlink_to(
        shipped("Data_Entry_2017_v2020.csv.gz")
    )
    out += ["", policy_counts("nih", work / "nih"), ""]
    # CheXpert
    train = rows("chexpert_train.csv.gz")
    counts = {}
    for column in ["No Finding", *chexpert.OBSERVATIONS]:
        present = sum(row[column] == "1.0" for row in train)
        uncertain = sum(row[column] == "-1.0" for row in train)
        counts[column] = f"{present:,} (+{uncertain:,} uncertain)"
    out += table("CheXpert (train.csv)", counts, dict(chexpert.OBSERVATIONS), "No Finding")
    (work / "chexpert").mkdir()
    (work / "chexpert" / "train.csv").write_bytes(
        gzip.decompress(shipped("chexpert_train.csv.gz").read_bytes())
    )
    out += ["", policy_counts("chexpert", work / "chexpert"), ""]
    # RSNA
    labels = rows("kaggle_stage_2_train_labels.csv.zip")
    target = {row["patientId"]: row["Target"] for row in labels}
    out += table("RSNA Pneumonia Detection Challenge", {
        "Lung Opacity": f"{sum(t == '1' for t in target.values()):,}",
        "Normal": "(with 'No Lung Opacity / Not Normal': "
        f"{sum(t == '0' for t in target.values()):,}; the class file is not shipped)",
    }, dict(rsna.POLICY.findings), "Normal")  # fmt: skip
    out += ["| No Lung Opacity / Not Normal | other_finding (pneumonia absent) | see Normal |", ""]
    # PadChest
    pad = rows("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
    counts = Counter()
    for row in pad:
        if row["Labels"] not in ("", "nan"):
            counts.update({label.strip() for label in ast.literal_eval(row["Labels"])})
    grouped: dict[str, list[str]] = {}
    for label, finding in padchest.LABELS.items():
        grouped.setdefault(finding, []).append(f"{label} {counts.get(label, 0):,}")
    out += ["### PadChest", "", "| cxrnet | dataset labels (films each) |", "| --- | --- |"]
    out.append(f"| NORMAL (no finding) | normal {counts['normal']:,} |")
    out += [f"| {finding} | {'; '.join(labels)} |" for finding, labels in grouped.items()]
    # Labels that are no finding of the film (padchest.py): normal, comparisons, quality.
    not_findings = {"normal", "unchanged", "", "suboptimal study", "exclude"}
    rest = {label: n for label, n in counts.items() if label not in padchest.LABELS}
    rest = {label: n for label, n in rest.items() if label not in not_findings}
    mentions = sum(rest.values())
    out.append(f"| other_finding | the other {len(rest)} labels, {mentions:,} mentions |")
    (work / "padchest").mkdir()
    (work / "padchest" / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz").symlink_to(
        shipped("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"))  # fmt: skip
    out += ["", policy_counts("padchest", work / "padchest"), ""]
    # VinDr (Kaggle)
    vin = rows("vinbigdata-train.csv.gz")
    marked: dict[tuple[str, str], set[str]] = {}
    for row in vin:
        marked.setdefault((row["image_id"], row["class_name"]), set()).add(row["rad_id"])
    anyone = Counter(label for (_, label) in marked)
    majority = Counter(label for (_, label), readers in marked.items() if len(readers) >= 2)
    counts = {
        label: f"{anyone[label]:,} by a reader, {majority[label]:,} by a majority"
        for label in anyone
    }
    known = {label: finding for label, finding in vindr.LABELS.items() if label in anyone}
    out += table("VinDr-CXR (Kaggle's VinBigData train.csv)", counts, known, "No finding")
    (work / "vindr").mkdir()
    (work / "vindr" / "train.csv").write_bytes(
        gzip.decompress(shipped("vinbigdata-train.csv.gz").read_bytes())
    )
    out += ["", policy_counts("vindr", work / "vindr"), ""]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

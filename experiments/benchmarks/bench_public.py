"""The public datasets at full size: each reader's discovery, the patient-grouped split, the cache
build at 64 px, the warm start, one epoch and the evaluation pass, with the time and peak memory
of each phase and the log-log slope against 2k / 8k / 32k subsets.

    python experiments/benchmarks/bench_public.py                       # every dataset, full size
    python experiments/benchmarks/bench_public.py --datasets mimic --sizes 2000 8000 32000 0

Label files: NIH ChestX-ray14 (112,120 rows), CheXpert (223,414) and PadChest (160,861) are the
datasets' real files (torchxrayvision's copies, a test dependency); MIMIC-CXR-JPG's 377,110
images are written here following PhysioNet's documentation (65,379 patients, 227,827 studies,
labels drawn at random). A subset is the label file's first N rows. Every listed film is a
tiny PNG (32 px, each different, so the duplicate check finds no copies), laid out where the
dataset keeps it; ``0`` as a size is the full dataset. Each dataset is read with views=all, so
every listed film is a record (MIMIC's 377,110 included).

Phases, per dataset and size (wall and this process's CPU, peak resident memory added):

- discovery: the reader on its label files with one stat per film (a first start), and
  without (``data.verify_files=false``: a warm start that trusts the cache's index);
- split: ``data.split=patient`` (patients grouped) over the films;
- first start: ``ChestXRayDataModule.setup`` from nothing (discovery, duplicate hashing,
  split, cache build at 64 px with 2 decode workers);
- warm start: ``setup`` again on the warm cache, with verify_files false (the second run of the
  same data) and true;
- one epoch at 64 px and the evaluation pass (stand-in network, Youden threshold, the report's
  1000-resample patient bootstrap), as ``bench_scale.py`` runs them.

On NIH at full size it also checks the patient split into train, val and a held-out test: no
patient in two splits, and each split's class shares within a point of the whole
(``--split-check-only`` runs that alone). Prints markdown tables; writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from bench_scale import (  # beside this script
    evaluate_splits,
    render,
    slopes,
    stand_in,
    timed,
    train_epoch,
)
from machine import run_facts
from PIL import Image

DATASETS = ("nih", "chexpert", "padchest", "mimic")
SIZES = (2_000, 8_000, 32_000, 0)
MIMIC_IMAGES, MIMIC_STUDIES, MIMIC_PATIENTS = 377_110, 227_827, 65_379
TRAIN_SIZE = 64
_SHIPPED = {
    "nih": "Data_Entry_2017_v2020.csv.gz",
    "chexpert": "chexpert_train.csv.gz",
    "padchest": "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
}


def shipped_rows(name: str) -> tuple[list[str], list[list[str]]]:
    dist = metadata.distribution("torchxrayvision")
    path = Path(str(dist.locate_file(f"torchxrayvision/data/{name}")))
    rows = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    return rows[0], rows[1:]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def lay(paths: list[Path]) -> None:
    """A 32 px PNG at each path, each different."""
    made: set[Path] = set()
    rng = np.random.default_rng(0)
    for path in paths:
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(buffer, "PNG")
        path.write_bytes(buffer.getvalue())


def mimic_rows(n_images: int) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """MIMIC-CXR-JPG's three label files for ``n_images`` images, in MIMIC's proportions."""
    rng = random.Random(0)
    observations = [
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
        "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
        "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
    ]  # fmt: skip
    patients = max(1, round(n_images * MIMIC_PATIENTS / MIMIC_IMAGES))
    studies = max(1, round(n_images * MIMIC_STUDIES / MIMIC_IMAGES))
    two_views = MIMIC_IMAGES / MIMIC_STUDIES - 1  # the share of studies with a second image
    labels, meta, split = [], [], []
    s = 0
    while len(meta) < n_images:
        subject = str(10_000_000 + s * patients // studies)
        study = str(50_000_000 + s)
        values = dict.fromkeys(observations, "")
        draw = rng.random()
        if draw < 0.35:
            values["No Finding"] = "1.0"
        elif draw < 0.43:
            values["Pneumonia"] = "1.0"
        elif draw < 0.51:
            values["Pneumonia"] = "-1.0"
        else:
            values[rng.choice(observations[:8])] = "1.0"
        labels.append([subject, study, *values.values()])
        kind = rng.choice(["train"] * 98 + ["validate", "test"])
        second = rng.random() < two_views and len(meta) + 2 <= n_images
        for view in ("PA", "LATERAL") if second else (rng.choice(["PA", "AP"]),):
            dicom = f"{study}-{len(meta)}"
            meta.append([dicom, subject, study, view])
            split.append([dicom, study, subject, kind])
        s += 1
    return labels, meta, split


def lay_dataset(name: str, root: Path, size: int) -> int:
    """The download of ``name`` (its first ``size`` rows; 0: all) under ``root``; the rows."""
    if (root / "done").is_file():
        return int((root / "done").read_text())
    if root.exists():
        shutil.rmtree(root)
    if name == "mimic":
        labels, meta, split = mimic_rows(size or MIMIC_IMAGES)
        prefix = "mimic-cxr-2.0.0-"
        observations = [
            "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
            "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
            "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
        ]  # fmt: skip
        write_csv(root / f"{prefix}chexpert.csv", ["subject_id", "study_id", *observations], labels)
        write_csv(root / f"{prefix}metadata.csv", ["dicom_id", "subject_id", "study_id",
                                                   "ViewPosition"], meta)  # fmt: skip
        write_csv(
            root / f"{prefix}split.csv", ["dicom_id", "study_id", "subject_id", "split"], split
        )
        lay([
            root / "files" / f"p{m[1][:2]}" / f"p{m[1]}" / f"s{m[2]}" / f"{m[0]}.jpg"
            for m in meta
        ])  # fmt: skip
        count = len(meta)
    else:
        header, rows = shipped_rows(_SHIPPED[name])
        rows = rows[:size] if size else rows
        column = {c: i for i, c in enumerate(header)}
        if name == "nih":
            write_csv(root / "Data_Entry_2017_v2020.csv", header, rows)
            # The archives' layout: 12 folders images_001 ... images_012, each with images/.
            step = max(1, len(rows) // 12 + 1)
            paths = [
                root / f"images_{i // step + 1:03d}" / "images" / row[0]
                for i, row in enumerate(rows)
            ]
        elif name == "chexpert":
            folder = root / "CheXpert-v1.0-small"
            write_csv(folder / "train.csv", header, rows)
            paths = [folder.joinpath(*row[0].split("/")[1:]) for row in rows]
        else:
            write_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", header, rows)
            paths = [root / row[column["ImageDir"]] / row[column["ImageID"]] for row in rows]
        lay(paths)
        count = len(rows)
    (root / "done").write_text(str(count))
    return count


def one(name: str, root: Path, cache: Path, n: int, rows: list[dict[str, Any]]) -> Any:
    """Every phase of one dataset at one size; the warm data module."""

    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.data.public.formats import PublicSource
    from cxrnet.data.public.listing import read_public
    from cxrnet.data.splits import SplitConfig, make_splits

    source = PublicSource(name, root, "all")

    def listed(facts: dict | None) -> Any:
        return read_public(source, "binary", "ignore", False, facts, False)

    def add(phase: str, run: Any) -> Any:
        row, result = timed(phase, n, run)
        rows.append(row | {"dataset": name, "films": n})
        return result

    found = add("discovery (one stat per film)", lambda: listed({}))
    add("discovery (verify_files=false)", lambda: listed(None))
    add("split (patient)", lambda: make_splits(found.records, SplitConfig("patient", 0.2)))
    shutil.rmtree(cache, ignore_errors=True)

    def setup(verify: bool) -> ChestXRayDataModule:
        dm = ChestXRayDataModule(
            sources={name: {"format": name, "root": str(root), "views": "all"}},
            image_size=TRAIN_SIZE,
            batch_size=256,
            eval_batch_size=512,
            num_workers=0,
            decode_workers=2,
            cache_dir=cache,
            split="patient",
            verify_files=verify,
        )
        dm.setup("fit")
        return dm

    add(f"first start (cache build at {TRAIN_SIZE} px, 2 workers)", lambda: setup(True))
    dm = add("warm start (verify_files=false)", lambda: setup(False))
    add("warm start (verify_files=true)", lambda: setup(True))
    net = stand_in()
    rows.append(fresh_warm_start(name, root, cache, n, verify=False))
    rows.append(fresh_warm_start(name, root, cache, n, verify=True))
    add(f"one epoch at {TRAIN_SIZE} px", lambda: train_epoch(dm, net))

    def evaluate() -> Any:
        return evaluate_splits(dm, net, [s for s in ("val", "test") if s in dm.split_records])

    add("evaluation (val + test, threshold, bootstrap 1000)", evaluate)
    return dm


_FRESH = """
import json, sys, time
from cxrnet.data.datamodule import ChestXRayDataModule
import cxrnet.data.dicom, cv2  # imported by the decoder's fingerprint: not the start's work
name, root, cache, verify = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "true"
start = time.perf_counter()
dm = ChestXRayDataModule(
    sources={name: {"format": name, "root": root, "views": "all"}}, image_size=64,
    batch_size=256, eval_batch_size=512, num_workers=0, decode_workers=2, cache_dir=cache,
    split="patient", verify_files=verify,
)
dm.setup("fit")
print(json.dumps({"wall_s": time.perf_counter() - start}))
"""


def fresh_warm_start(name: str, root: Path, cache: Path, n: int, verify: bool) -> dict[str, Any]:
    """The second run as a user starts it: a new process, every cache warm (the setup timed,
    its imports not)."""
    done = subprocess.run(
        [sys.executable, "-c", _FRESH, name, str(root), str(cache), str(verify).lower()],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = json.loads(done.stdout.strip().splitlines()[-1])["wall_s"]
    phase = f"warm start, a new process (verify_files={str(verify).lower()})"
    return {"phase": phase, "n": n, "films": n, "dataset": name, "wall_s": wall, "cpu_s": None,
            "peak_mb": None, "added_mb": None}  # fmt: skip


def split_check(root: Path) -> dict[str, Any]:
    """NIH at full size split by patient into train, val and a held-out test (0.2 each, as
    ``data.split=patient data.holdout_fraction=0.2``): no patient in two splits, and each
    split's class shares against the whole."""
    from cxrnet.data.public.formats import PublicSource
    from cxrnet.data.public.listing import read_public
    from cxrnet.data.splits import SplitConfig, make_splits

    found = read_public(PublicSource("nih", root), "binary", "ignore", False, None, False)
    config = SplitConfig("patient", val_fraction=0.2, holdout_fraction=0.2)
    splits = {name: items for name, items in make_splits(found.records, config).items() if items}
    patients = {name: {r.patient for r in records} for name, records in splits.items()}
    names = list(patients)
    shared = sum(
        len(patients[a] & patients[b]) for i, a in enumerate(names) for b in names[i + 1 :]
    )
    every = [r for records in splits.values() for r in records]
    whole = Counter(r.class_name for r in every)
    shares = {
        name: {
            klass: 100 * sum(r.class_name == klass for r in records) / len(records)
            for klass in whole
        }
        for name, records in splits.items()
    }
    whole_share = {klass: 100 * count / len(every) for klass, count in whole.items()}
    return {
        "patients_in_two_splits": shared,
        "films": {name: len(records) for name, records in splits.items()},
        "patients": {name: len(ids) for name, ids in patients.items()},
        "class_share_pct": shares,
        "whole_share_pct": whole_share,
        "largest_gap_points": max(
            abs(shares[name][klass] - whole_share[klass]) for name in shares for klass in whole
        ),
    }


def fresh_only(args: argparse.Namespace) -> None:
    """The new-process warm starts (and NIH's split check) on what an earlier run left in
    ``--work``, merged into ``--out``'s rows; prints every table again."""
    saved = json.loads(args.out.read_text())
    kept = [row for row in saved["rows"] if not row["phase"].startswith("warm start, a new")]
    for name in args.datasets:
        for size in args.sizes:
            root = args.work / name / str(size or "full")
            n = lay_dataset(name, root, size)
            cache = args.work / "cache" / name / str(size)
            # One start untimed first: a kept listing's key includes the readers' code, so after
            # a code change the first start parses the label files again (a cold start).
            fresh_warm_start(name, root, cache, n, True)
            for verify in (False, True):
                kept.append(fresh_warm_start(name, root, cache, n, verify))
                print(kept[-1], file=sys.stderr)
    saved["rows"] = kept
    saved["checks"]["nih_split"] = split_check(args.work / "nih" / "full")
    saved["fresh_machine"] = run_facts()
    args.out.write_text(json.dumps(saved, indent=2))
    report(kept, saved["checks"], args.datasets)


def report(rows: list[dict[str, Any]], checks: dict[str, Any], datasets: list[str]) -> None:
    """Each dataset's table and the checks, as Markdown."""
    tables = []
    for name in datasets:
        mine = [row for row in rows if row["dataset"] == name]
        tables.append(f"### {name}\n\n{render(mine, slopes(mine))}")
    print("\n\n".join(tables))
    if checks:
        print("\n" + json.dumps(checks, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench_public")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument(
        "--split-check-only", action="store_true", help="only NIH's split check (laid out)"
    )
    parser.add_argument(
        "--fresh-only",
        action="store_true",
        help="only the new-process warm starts and NIH's split check, on the data and caches "
        "an earlier run left in --work, merged into --out",
    )
    args = parser.parse_args()
    if args.split_check_only:
        root = args.work / "nih" / "full"
        lay_dataset("nih", root, 0)
        print(json.dumps(split_check(root), indent=2))
        return
    if args.fresh_only:
        fresh_only(args)
        return
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    for name in args.datasets:
        for size in args.sizes:
            root = args.work / name / str(size or "full")
            n = lay_dataset(name, root, size)
            print(f"{name}: {n:,} films laid out in {root}", file=sys.stderr)
            one(name, root, args.work / "cache" / name / str(size), n, rows)
            if name == "nih" and size == 0:
                checks["nih_split"] = split_check(root)
    args.out.write_text(
        json.dumps({"machine": run_facts(), "rows": rows, "checks": checks}, indent=2)
    )
    report(rows, checks, args.datasets)


if __name__ == "__main__":
    main()

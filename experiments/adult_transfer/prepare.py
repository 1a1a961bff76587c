"""The study's manifests: which films each run may see, written once into ``<out>/manifests``.

- ``peds_train.csv`` / ``peds_test.csv``: the pediatric films (``chest_xray_224`` train+val)
  split by cxrnet's own patient-grouped holdout (``data.holdout_fraction=0.2
  data.holdout_seed=19``, the held-out set of the other studies). Every model trains on
  ``peds_train`` at most; ``peds_test`` only scores, so each model's pediatric performance is
  measured on children it never saw.
- ``adult.csv``: the adult NORMAL and PNEUMONIA films with their age, sex, view and RSNA class.
  Runs re-split it by ``data.split=kfold`` (5 patient-grouped folds stratified by class): the
  same folds in every arm, because the other sources are training-only or test-only and do not
  enter the fold assignment.
- ``other_train_<k>.csv`` / ``other_val_<k>.csv``: the OTHER_ABNORMAL films in 5 patient groups
  of their own. Fold ``k``'s model is scored on group ``k`` (the flag rate, pooled over folds,
  counts every film once with a model that never trained on it); the arm that trains with them
  as negatives trains on the other four groups only. ``other_findings_<k>.csv``: the same four
  groups as OTHER_ABNORMAL films, for the findings arms (``data.task=findings``).

Nothing here is committed: the manifests name films in ``../shared`` and live under ``--out``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.split_report import write_split_csv
from cxrnet.publish import write_file

NUM_FOLDS = 5
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 19  # the held-out set of experiments/cv_studies and val_rebalancing
OTHER_SEED = 7
OTHER_CLASS = "OTHER_ABNORMAL"
ADULT_COLUMNS = ("path", "label", "patient_id", "age", "sex", "view", "rsna_class")


def manifests_dir(out: Path) -> Path:
    return out / "manifests"


def _write_rows(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    write_file(path, write)


def _drop_column(path: Path, column: str) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [name for name in reader.fieldnames or () if name != column]
        rows = list(reader)
    _write_rows(path, columns, rows)


def pediatric_manifests(pediatric_root: Path, folder: Path, cache_dir: Path) -> None:
    """``peds_train.csv`` and ``peds_test.csv`` from cxrnet's own holdout of train+val."""
    if (folder / "peds_test.csv").is_file() and (folder / "peds_train.csv").is_file():
        return
    data = ChestXRayDataModule(
        root=pediatric_root,
        image_size=64,
        split="official",
        holdout_fraction=HOLDOUT_FRACTION,
        holdout_seed=HOLDOUT_SEED,
        cache_dir=cache_dir / "images",
    )
    data.setup("fit")
    splits = data.resolved_splits
    write_split_csv(folder / "peds_train.csv", {k: splits[k] for k in ("train", "val")})
    write_split_csv(folder / "peds_test.csv", {"test": splits["test"]})
    # The runs name these sources themselves (peds, peds_test); the folder name split.csv
    # records as each film's source would contradict those names.
    for name in ("peds_train.csv", "peds_test.csv"):
        _drop_column(folder / name, "source")


def _adult_rows(rsna_dir: Path) -> list[dict[str, str]]:
    labels = rsna_dir / "labels.csv"
    if not labels.is_file():
        raise SystemExit(f"--rsna {rsna_dir} has no labels.csv: point it at rsna_adult/")
    with labels.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = str((rsna_dir / row["file"]).resolve())
    return rows


def adult_manifests(rsna_dir: Path, folder: Path) -> None:
    """``adult.csv`` (NORMAL, PNEUMONIA) and the OTHER_ABNORMAL groups per fold."""
    rows = _adult_rows(rsna_dir)
    binary = [row for row in rows if row["label"] != OTHER_CLASS]
    _write_rows(folder / "adult.csv", ADULT_COLUMNS, binary)
    others = sorted((row for row in rows if row["label"] == OTHER_CLASS), key=lambda r: r["path"])
    # Each film is its own patient here (labels.csv), so a permutation of films groups by patient.
    order = np.random.default_rng(OTHER_SEED).permutation(len(others))
    group = {int(index): position % NUM_FOLDS for position, index in enumerate(order)}
    for fold in range(NUM_FOLDS):
        held = [row for i, row in enumerate(others) if group[i] == fold]
        # As negatives: labelled NORMAL for training, their RSNA class kept to tell them apart.
        trained = [{**row, "label": "NORMAL"} for i, row in enumerate(others) if group[i] != fold]
        _write_rows(folder / f"other_val_{fold}.csv", ADULT_COLUMNS, held)
        _write_rows(folder / f"other_train_{fold}.csv", ADULT_COLUMNS, trained)
        # As films with another finding (data.task=findings): their own class kept.
        findings = [row for i, row in enumerate(others) if group[i] != fold]
        _write_rows(folder / f"other_findings_{fold}.csv", ADULT_COLUMNS, findings)


def prepare(pediatric_root: Path, rsna_dir: Path, out: Path, cache_dir: Path) -> Path:
    folder = manifests_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    pediatric_manifests(pediatric_root, folder, cache_dir)
    adult_manifests(rsna_dir, folder)
    return folder

"""How well the film's size alone predicts the label: the shortcut squashing may teach.

    python experiments/cv_studies/shortcut.py ../shared/data/originals --out logs/cv_studies

Reads the original films (``<root>/**/{NORMAL,PNEUMONIA}/*``), and scores width, height and
aspect ratio as if they were a classifier's output: AUROC for pneumonia (a value below 0.5 means
the smaller value predicts pneumonia; 1 - AUROC is then shown as its strength), with a patient
bootstrap interval. Squashing keeps the aspect ratio in the anatomy's distortion, letterboxing in
the width of the padding, so a size signal survives either resize.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import write_outputs  # noqa: E402

from cxrnet.data.records import patient_from_name  # noqa: E402
from cxrnet.evaluation.bootstrap import PatientDraws, bootstrap_weighted  # noqa: E402
from cxrnet.evaluation.curves import RankedScores, auroc  # noqa: E402

CLASSES = ("NORMAL", "PNEUMONIA")


def film_sizes(root: Path) -> list[tuple[str, str, int, int]]:
    """(file, label, width, height) of every film under ``root``; an unreadable file is an error."""
    rows = []
    for path in sorted(root.rglob("*")):
        if path.parent.name not in CLASSES or not path.is_file():
            continue
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError as error:
            raise SystemExit(f"cannot read {path}: {error}; remove or replace the file") from error
        rows.append((str(path), path.parent.name, width, height))
    if not rows:
        raise SystemExit(f"no films under {root}/**/NORMAL or PNEUMONIA")
    return rows


def shortcut_table(rows: list[tuple[str, str, int, int]]) -> dict[str, dict[str, float]]:
    labels = np.array([label == "PNEUMONIA" for _, label, _, _ in rows], dtype=np.int64)
    patients = [patient_from_name(Path(file).name) for file, *_ in rows]
    features = {
        "width": np.array([w for *_, w, _ in rows], dtype=np.float64),
        "height": np.array([h for *_, h in rows], dtype=np.float64),
        "aspect (w/h)": np.array([w / h for *_, w, h in rows], dtype=np.float64),
    }
    table = {}
    for name, values in features.items():
        value = auroc(values, labels)
        sign = 1.0 if value >= 0.5 else -1.0  # score so that larger predicts pneumonia

        ranked = RankedScores.of(sign * values, labels)

        def metrics(draws: PatientDraws, r: RankedScores = ranked) -> dict[str, np.ndarray]:
            return {"auroc": r.tally(draws.weights).auroc()}

        low, high = bootstrap_weighted(metrics, len(labels), patients, resamples=2000)["auroc"]
        table[name] = {
            "auroc": max(value, 1 - value),
            "low": float(low),
            "high": float(high),
            "direction": "larger -> pneumonia" if sign > 0 else "smaller -> pneumonia",
            "normal_median": float(np.median(values[labels == 0])),
            "pneumonia_median": float(np.median(values[labels == 1])),
        }
    return table


def render(table: dict[str, dict[str, float]], n_normal: int, n_pneumonia: int) -> str:
    lines = [
        f"Films: {n_normal} normal, {n_pneumonia} pneumonia (original resolution).",
        "",
        "| feature | AUROC alone [95% patient bootstrap] | direction | median normal |"
        " median pneumonia |",
        "|---|---|---|--:|--:|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['auroc']:.3f} [{row['low']:.3f}, {row['high']:.3f}] | "
            f"{row['direction']} | {row['normal_median']:.2f} | {row['pneumonia_median']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = film_sizes(args.root)
    table = shortcut_table(rows)
    n_pneumonia = sum(label == "PNEUMONIA" for _, label, _, _ in rows)
    text = render(table, len(rows) - n_pneumonia, n_pneumonia)
    write_outputs(args.out, "shortcut", text, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

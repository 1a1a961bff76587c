"""A synthetic multi-label set with known findings, for the findings task's console tests.

The pneumonia films come from the synthetic generator; a bright block drawn into a film's corner
is the finding ``effusion`` (present or absent in every film the manifest labels for it). Films
with the block and no pneumonia are ``OTHER_ABNORMAL``. Every fifth pneumonia film says nothing
of effusion (blank findings): its effusion is unlabelled, masked out of loss and metrics.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic

FINDINGS = ("pneumonia", "effusion")


def findings_manifest(folder: Path, seed: int = 5) -> Path:
    """Write the films and ``manifest.csv`` (path, label, split, findings) under ``folder``."""
    spec = SyntheticSpec(
        n_train=64, n_val=32, n_test=32, pneumonia_fraction=0.5, min_size=36, max_size=48, seed=seed
    )
    root = generate_synthetic(folder / "data", spec)
    films = sorted(root.rglob("*.jpeg"))
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "findings"])
        for i, path in enumerate(films):
            effusion = i % 3 == 0
            label = path.parent.name
            image = np.asarray(Image.open(path).convert("L")).copy()
            if effusion:
                side = image.shape[0] // 3
                image[-side:, -side:] = 255
            out = folder / "films" / path.relative_to(root).with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out)
            if label == "NORMAL" and effusion:
                label = "OTHER_ABNORMAL"
            findings = f"effusion={int(effusion)}"
            if label == "PNEUMONIA" and i % 5 == 0:
                findings = ""
            writer.writerow([out, label, path.parent.parent.name, findings])
    return manifest

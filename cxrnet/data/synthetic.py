"""A built-in synthetic chest X-ray set in the real folder layout, drawn procedurally.

Each film is a body outline with two dark lung fields, ribs, clavicles, mediastinum and heart
shadow, under varying exposure, blur and noise. Pneumonia films add an opacity: a focal lobar
consolidation (bacterial) or a diffuse bilateral perihilar interstitial pattern (viral). Benign
shadows (thymus, soft tissue, prominent vessels, leads, markers) appear in both classes, so the
task is learnable but not a pixel-threshold away.

Names follow the Kermany convention (``IM-0012-0001.jpeg``, ``NORMAL2-IM-0345-0001.jpeg``,
``person17_bacteria_52.jpeg``, ``person8_virus_14.jpeg``), several films per patient, each
patient in one split. The pixels of one film depend only on the seed, its split and its index
(plus its patient's anatomy), so generation is deterministic and parallel-safe.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from cxrnet.data.radiograph import KINDS as _KINDS
from cxrnet.data.radiograph import render_film
from cxrnet.data.records import CLASS_NAMES, SPLIT_NAMES
from cxrnet.data.synthetic_spec import GENERATOR_VERSION, Film, SyntheticSpec
from cxrnet.data.workers import process_pool
from cxrnet.publish import build_once, publish_folder

MARKER_NAME = "synthetic.json"

# How many films a patient has: most one, a few several (as in the real set).
_FILMS_PER_PATIENT = (1, 2, 3, 4)
_FILMS_PER_PATIENT_P = (0.55, 0.25, 0.12, 0.08)


# ---------------------------------------------------------------------------------------------
# The plan: which films exist, their classes, patients and names.


def _class_counts(n: int, spec: SyntheticSpec) -> dict[str, int]:
    n_pneumonia = min(max(round(n * spec.pneumonia_fraction), 1), n - 1)
    n_bacteria = min(max(round(n_pneumonia * spec.bacteria_fraction), 1), n_pneumonia - 1)
    return {
        "normal": n - n_pneumonia,
        "bacteria": n_bacteria,
        "virus": n_pneumonia - n_bacteria,
    }


def _group_sizes(rng: np.random.Generator, total: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice(_FILMS_PER_PATIENT, p=_FILMS_PER_PATIENT_P)))
    if sizes:
        sizes[-1] -= sum(sizes) - total  # the last patient gets only the films still needed
    return sizes


def plan_films(spec: SyntheticSpec) -> list[Film]:
    """Every film of the data set, with names and patients; cheap, no pixels."""
    # Per kind: the films-per-patient of each split, in split order.
    groups: dict[str, list[tuple[str, int]]] = {kind: [] for kind in _KINDS}
    for split_id, (split, n) in enumerate(spec.split_sizes().items()):
        for kind_id, (kind, count) in enumerate(_class_counts(n, spec).items()):
            rng = np.random.default_rng([spec.seed, 0, split_id, kind_id])
            groups[kind].extend((split, size) for size in _group_sizes(rng, count))

    films_by_split: dict[str, list[tuple[str, int, str]]] = {s: [] for s in SPLIT_NAMES}
    for kind_id, kind in enumerate(_KINDS):
        rng = np.random.default_rng([spec.seed, 1, kind_id])
        # Shuffled numbers so patient ids do not reveal the split.
        numbers = rng.permutation(len(groups[kind])) + 1
        prefixes = rng.choice(["", "NORMAL2-"], size=len(groups[kind]), p=[0.6, 0.4])
        by_number = sorted(zip(numbers, groups[kind], prefixes, strict=True))
        counter = 0  # the real pneumonia names carry a running image count per kind
        for number, (split, size), prefix in by_number:
            for film in range(1, size + 1):
                counter += 1
                if kind == "normal":
                    name = f"{prefix}IM-{number:04d}-{film:04d}.jpeg"
                else:
                    name = f"person{number}_{kind}_{counter}.jpeg"
                films_by_split[split].append((kind, int(number), name))

    films: list[Film] = []
    for split in SPLIT_NAMES:
        ordered = sorted(films_by_split[split], key=lambda item: item[2])
        films.extend(
            Film(split, index, kind, number, name)
            for index, (kind, number, name) in enumerate(ordered)
        )
    return films


# ---------------------------------------------------------------------------------------------
# Writing.


def _write_film(job: tuple[Film, SyntheticSpec, Path]) -> None:
    film, spec, root = job
    ok, encoded = cv2.imencode(
        ".jpeg", render_film(film, spec), [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]
    )
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {film.filename}")
    # Written through Python rather than cv2.imwrite, which cannot open non-ASCII paths on Windows.
    (root / film.split / film.class_name / film.filename).write_bytes(encoded.tobytes())


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not an empty folder; choose a new output folder "
            "or delete it first (the synthetic set is only written into a fresh folder)"
        )


def _run_jobs(jobs: Sequence[tuple[Film, SyntheticSpec, Path]], workers: int) -> None:
    if workers <= 1:
        for job in jobs:
            _write_film(job)
        return
    with process_pool(workers) as pool:
        for _ in pool.map(_write_film, jobs, chunksize=32):
            pass


def _fill(staging: Path, spec: SyntheticSpec, workers: int) -> None:
    for split in SPLIT_NAMES:
        for class_name in CLASS_NAMES:
            (staging / split / class_name).mkdir(parents=True)
    films = plan_films(spec)
    _run_jobs([(film, spec, staging) for film in films], workers)
    marker = {"generator_version": GENERATOR_VERSION, "spec": asdict(spec), "files": len(films)}
    # Written last: a folder holding a matching marker is a complete data set.
    (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def generate_synthetic(
    out_dir: Path, spec: SyntheticSpec = SyntheticSpec(), *, workers: int = 1
) -> Path:
    """Write the data set into ``out_dir`` (new or empty), all or nothing; returns ``out_dir``.

    An interrupted run never leaves a folder that looks like a finished data set.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    _check_target(out_dir)
    return publish_folder(out_dir, lambda staging: _fill(staging, spec, workers))


def _is_complete(folder: Path, spec: SyntheticSpec) -> bool:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("generator_version") == GENERATOR_VERSION and marker.get("spec") == asdict(
        spec
    )


def ensure_synthetic(
    cache_dir: Path, spec: SyntheticSpec = SyntheticSpec(), *, workers: int = 1
) -> Path:
    """``cache_dir/synthetic-<hash>``, generated on first use; parallel callers build it once."""
    target = Path(cache_dir).expanduser().absolute() / f"synthetic-{spec.digest()}"
    build_once(
        target,
        lambda staging: _fill(staging, spec, workers),
        lambda folder: _is_complete(folder, spec),
    )
    return target

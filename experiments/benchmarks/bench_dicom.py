"""DICOM decoding rate against JPEG of the same films: ``decode()`` to 150 px, one process.

    python experiments/benchmarks/bench_dicom.py            # about a minute on 2 cores

The films are the full-resolution originals in ../shared/data/originals (grayscale), or
synthetic 1,000-2,900 px films where that is absent. Each is stored as its JPEG (as published),
as uncompressed 8-bit DICOM of the same pixels, as 12-bit DICOM (pixels x16, a window in the
header) and, where an encoder is installed, as RLE and JPEG 2000 lossless DICOM. Every format
runs ``--rounds`` times, interleaved; the best round is shown. Prints a markdown table and
writes the measurements to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from machine import cpu_name  # experiments/benchmarks/machine.py, beside this script
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cxrnet.data.decode import DecodeParams, decode

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
PARAMS = DecodeParams(image_size=150)


def source_films(data: Path, work: Path) -> tuple[list[Path], str]:
    originals = sorted((data / "originals").rglob("*.jpeg"))
    gray = [p for p in originals if Image.open(p).mode == "L"]
    if gray:
        return gray, f"{len(gray)} grayscale originals from {data / 'originals'}"
    rng = np.random.default_rng(0)
    films = []
    for number in range(20):
        side = int(rng.integers(1000, 2900))
        pixels = rng.integers(0, 256, size=(side, int(side * 0.8)), dtype=np.uint8)
        films.append(work / f"synthetic_{number}.jpeg")
        Image.fromarray(pixels).save(films[-1], quality=90)
    return films, "20 synthetic films, 1,000-2,900 px (../shared/data absent)"


def write_dicom(path: Path, pixels: np.ndarray, syntax: UID, **tags: object) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = tags.pop("BitsStored", ds.BitsAllocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def formats(films: Sequence[Path], work: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"JPEG (as published)": list(films)}
    variants: list[tuple[str, UID, bool]] = [
        ("DICOM 8-bit uncompressed (percentile window)", ExplicitVRLittleEndian, False),
        ("DICOM 12-bit uncompressed (header window)", ExplicitVRLittleEndian, True),
        ("DICOM 8-bit RLE lossless", RLELossless, False),
        ("DICOM 8-bit JPEG 2000 lossless", JPEG2000Lossless, False),
    ]
    for name, syntax, twelve in variants:
        if syntax.is_compressed and not get_encoder(syntax).is_available:
            print(f"skipping {name}: no encoder installed", file=sys.stderr)
            continue
        folder = work / name.split(" (")[0].replace(" ", "_")
        folder.mkdir()
        out[name] = []
        for film in films:
            pixels = np.asarray(Image.open(film).convert("L"))
            tags: dict[str, object] = {}
            if twelve:
                pixels = pixels.astype(np.uint16) * 16
                tags = {"BitsStored": 12, "WindowCenter": 2048, "WindowWidth": 4096}
            out[name].append(write_dicom(folder / f"{film.stem}.dcm", pixels, syntax, **tags))
    return out


def timed_round(paths: Sequence[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        decode(path, PARAMS)
    return time.perf_counter() - start


def measure(sets: dict[str, list[Path]], rounds: int, clock: Callable = timed_round) -> dict:
    for paths in sets.values():
        timed_round(paths[:2])  # imports and first-call costs out of the timing
    seconds: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(rounds):
        for name, paths in sets.items():
            seconds[name].append(clock(paths))
    return {
        name: {
            "films": len(sets[name]),
            "seconds": times,
            "films_per_s": len(sets[name]) / min(times),
            "mean_bytes": float(np.mean([p.stat().st_size for p in sets[name]])),
        }
        for name, times in seconds.items()
    }


def table(results: dict) -> str:
    jpeg = results["JPEG (as published)"]["films_per_s"]
    lines = [
        "| format | films/s | ms per film | vs JPEG | mean file size |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        rate = row["films_per_s"]
        lines.append(
            f"| {name} | {rate:.0f} | {1000 / rate:.1f} | {rate / jpeg:.2f}x | "
            f"{row['mean_bytes'] / 1e6:.2f} MB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_dicom.json"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        films, described = source_films(args.data, work)
        sets = formats(films, work)
        results = measure(sets, args.rounds)
    print(f"{described}; decode() to {PARAMS.image_size} px, one process, best of {args.rounds}\n")
    print(table(results))
    record = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "films": described,
        "params": PARAMS.as_dict(),
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""What reading DICOM headers at discovery costs: ``read_header`` per film, and a whole
``discover_folders`` of DICOM films against the same folder of PNG films (no header to read).

    python experiments/benchmarks/bench_dicom_header.py      # about 10 s on 2 cores

Every start of cxrnet-train reads each DICOM film's four header elements once (PatientID,
ViewPosition, PatientAge, PatientSex; ``cxrnet.data.dicom_header``). The films are written here
with pydicom: ``--films`` small ones (64 x 64, 12-bit) and a few full-size ones (2,500 x 2,048,
16-bit) to show the cost does not grow with the pixels (``stop_before_pixels``). Each
measurement runs ``--rounds`` times from the page cache; the best round is shown. Prints a
markdown table and writes the measurements to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_dicom import write_dicom  # beside this script: one way to write a test film
from machine import cpu_name  # experiments/benchmarks/machine.py, beside this script
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from cxrnet.data.dicom_header import read_header
from cxrnet.data.discovery import discover_folders


def write_film(path: Path, pixels: np.ndarray, number: int) -> Path:
    """A 12-bit film whose header holds a name and birth date, which no reader may take."""
    return write_dicom(
        path,
        pixels,
        ExplicitVRLittleEndian,
        BitsStored=12,
        PatientName="Doe^Jane",
        PatientBirthDate="19700101",
        PatientID=f"PID-{number // 3}",
        ViewPosition="PA",
        PatientAge=f"{number % 90:03d}Y",
        PatientSex="MF"[number % 2],
    )


def layout(root: Path, films: int, suffix: str, writer: Callable[[Path, int], Path]) -> Path:
    """``root/train/{NORMAL,PNEUMONIA}`` holding ``films`` films in all."""
    for number in range(films):
        folder = root / "train" / ("NORMAL", "PNEUMONIA")[number % 2]
        folder.mkdir(parents=True, exist_ok=True)
        writer(folder / f"film_{number}{suffix}", number)
    return root


def best(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=500)
    parser.add_argument("--large", type=int, default=5, help="full-size films")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args(argv)
    small = np.random.default_rng(0).integers(0, 4096, (64, 64), dtype=np.uint16)
    large = np.random.default_rng(1).integers(0, 4096, (2500, 2048), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        dicom = layout(work_dir / "dicom", args.films, ".dcm", lambda p, n: write_film(p, small, n))
        png = layout(
            work_dir / "png",
            args.films,
            ".png",
            lambda p, n: (Image.fromarray((small >> 4).astype(np.uint8)).save(p), p)[1],
        )
        big = [write_film(work_dir / f"large_{n}.dcm", large, n) for n in range(args.large)]
        small_films = sorted(dicom.rglob("*.dcm"))
        read_header(small_films[0])  # pydicom's import and first parse, outside the timing
        header_small = best(args.rounds, lambda: [read_header(p) for p in small_films])
        header_large = best(args.rounds, lambda: [read_header(p) for p in big])
        discover_dicom = best(args.rounds, lambda: discover_folders(dicom))
        discover_png = best(args.rounds, lambda: discover_folders(png))
    n = args.films
    rows = [
        ("read_header, 64 x 64 12-bit DICOM", n, header_small),
        ("read_header, 2,500 x 2,048 16-bit DICOM", args.large, header_large),
        ("discover_folders, DICOM films (headers read)", n, discover_dicom),
        ("discover_folders, the same films as PNG", n, discover_png),
    ]
    print(f"{cpu_name()}; best of {args.rounds} rounds from the page cache\n")
    print("| what | films | total ms | ms per film |")
    print("| --- | ---: | ---: | ---: |")
    for what, count, seconds in rows:
        print(f"| {what} | {count} | {seconds * 1e3:.0f} | {seconds * 1e3 / count:.2f} |")
    args.out.write_text(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "cpu": cpu_name(),
                "rounds": args.rounds,
                "rows": [
                    {"what": what, "films": count, "seconds": seconds}
                    for what, count, seconds in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

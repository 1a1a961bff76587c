"""``cxrnet-synthetic OUT_DIR``: write the built-in synthetic chest X-ray set to a folder."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic

_HELP = {
    "n_train": "images in train/",
    "n_val": "images in val/",
    "n_test": "images in test/",
    "pneumonia_fraction": "share of PNEUMONIA images in every split",
    "bacteria_fraction": "share of pneumonia images that are bacterial (the rest viral)",
    "min_size": "smallest image side in px",
    "max_size": "largest image side in px",
    "seed": "same seed, byte-identical files",
    "opacity_scale": "pneumonia opacity density; lower makes the task harder",
    "noise_scale": "detector noise multiplier",
    "exposure_jitter": "film-to-film exposure spread multiplier",
    "distractor_rate": "how often benign look-alike shadows appear, in [0, 1]",
    "jpeg_quality": "JPEG quality, 1-100",
}


def _spec_fields() -> Iterator[dataclasses.Field]:
    return iter(dataclasses.fields(SyntheticSpec))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrnet-synthetic",
        description="Write a synthetic chest X-ray set in the layout "
        "OUT_DIR/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg.",
    )
    parser.add_argument("out_dir", type=Path, help="new or empty folder to write")
    for field in _spec_fields():
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=type(field.default),
            default=field.default,
            help=f"{_HELP[field.name]} (default: {field.default})",
        )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        spec = SyntheticSpec(**{field.name: getattr(args, field.name) for field in _spec_fields()})
        start = time.perf_counter()
        out = generate_synthetic(args.out_dir, spec, workers=args.workers)
    except (ValueError, FileExistsError) as error:
        print(f"cxrnet-synthetic: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    total = sum(spec.split_sizes().values())
    print(f"wrote {total} images to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Training augmentation throughput: the CPU path per image against the batched device warp.

    python experiments/benchmarks/bench_augment.py                 # CPU, about a minute
    python experiments/benchmarks/bench_augment.py --device cuda   # on a GPU
    python experiments/benchmarks/bench_augment.py --quick         # a smoke run, rough numbers

The seed recipe (rotation 20°, zoom 0.2, shift 0.1, horizontal flip) on 150 px uint8 images in,
float32 in [0, 1] out, as training consumes them. Rows:

- cpu path: ``XRayDataset[(index, seed)]``, the work a loader worker does per image today
  (albumentations ``Affine`` + ``HorizontalFlip``, the copy, float, /255), one process.
- device path, loader work: ``SeededXRayDataset[(index, seed)]``, what a worker still does per
  image with ``on_device=true`` (index the cache, copy the uint8 row), one process.
- per batch size (32 and 256), the device path of ``data.augment.on_device=true``:
  ``draw`` the parameters from the seeds on the CPU (``DeviceAugment.prepare``), ``copy`` the
  uint8 batch to the device from pinned memory (cuda only; beside it the float32 copy the CPU
  path makes), ``warp`` on the device (``DeviceAugment.finish``), and ``total``: draw, copy
  and warp in a row, what a training step waits for.

torch runs one thread (``--threads``), as a loader worker does, so each CPU row is one core's
rate; on a shared machine more threads mostly measure the contention. Every contender runs in
each repetition, one after another (interleaved), and the table gives the median over
repetitions with the range. On cuda the timed region is bracketed by
``torch.cuda.synchronize()``. Prints a markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # experiments/benchmarks/machine.py, beside this script

from cxrnet.data.batch_augment import DeviceAugment
from cxrnet.data.dataset import SeededSample, SeededXRayDataset, XRayDataset
from cxrnet.data.transforms import AffineRecipe, build_train_transform

HERE = Path(__file__).resolve().parent
RECIPE = {"rotate": 20.0, "zoom": 0.2, "shift": 0.1, "hflip": True}


def timed(fn: Callable[[], object], images: int, calls: int, device: torch.device) -> float:
    """Images per second over ``calls`` calls of ``fn``, each handling ``images`` images."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images * calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--images", type=int, default=2048, help="images per timed call group")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1, as in a loader worker"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "bench_augment.json")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repetitions = 256, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_start = os.getloadavg()[0]

    generator = np.random.default_rng(0)
    largest = max(args.batches)
    cache = generator.integers(0, 256, (largest, args.size, args.size), dtype=np.uint8)
    labels = generator.integers(0, 2, largest)
    seeds = torch.randint(2**31, (largest,), generator=torch.Generator().manual_seed(0))

    cpu_dataset = XRayDataset(cache, labels, transform=build_train_transform(**RECIPE))
    keys = list(zip(range(largest), seeds.tolist(), strict=True))
    augment = DeviceAugment(AffineRecipe.scaled(**RECIPE))

    contenders: dict[str, tuple[Callable[[], object], int, int]] = {}
    per_image_calls = max(1, args.images // 8)  # the CPU path is ~100x slower per image
    contenders["cpu path, per image"] = (
        lambda: [cpu_dataset[key] for key in keys[:per_image_calls]],
        per_image_calls,
        1,
    )
    seeded_dataset = SeededXRayDataset(cpu_dataset)
    contenders["device path, loader work per image"] = (
        lambda: [seeded_dataset[key] for key in keys[:largest]],
        largest,
        max(1, args.images // largest),
    )
    for batch in args.batches:
        sample = SeededSample(
            torch.from_numpy(cache[:batch]).unsqueeze(1),
            torch.as_tensor(labels[:batch]),
            seeds[:batch],
        )
        if device.type == "cuda":
            sample = SeededSample(sample.image.pin_memory(), sample.label, sample.seed)
        prepared = augment.prepare(sample)
        on_device = prepared._replace(
            images=prepared.images.to(device),
            labels=prepared.labels.to(device),
            theta=prepared.theta.to(device),
            flip=prepared.flip.to(device),
        )
        calls = max(1, args.images // batch)

        def draw(sample=sample) -> object:
            return augment.prepare(sample)

        def warp(on_device=on_device) -> object:
            return augment.finish(on_device)

        def total(sample=sample) -> object:
            ready = augment.prepare(sample)
            moved = ready._replace(
                images=ready.images.to(device, non_blocking=True),
                labels=ready.labels.to(device, non_blocking=True),
                theta=ready.theta.to(device, non_blocking=True),
                flip=ready.flip.to(device, non_blocking=True),
            )
            return augment.finish(moved)

        contenders[f"batch {batch}: draw (CPU)"] = (draw, batch, calls)
        if device.type == "cuda":
            as_float = sample.image.float().div(255).pin_memory()

            def copy_uint8(sample=sample) -> object:
                return sample.image.to(device, non_blocking=True)

            def copy_float(as_float=as_float) -> object:
                return as_float.to(device, non_blocking=True)

            contenders[f"batch {batch}: copy uint8 to device"] = (copy_uint8, batch, calls)
            contenders[f"batch {batch}: copy float32 to device (CPU path)"] = (
                copy_float,
                batch,
                calls,
            )
        contenders[f"batch {batch}: warp ({device.type})"] = (warp, batch, calls)
        contenders[f"batch {batch}: total, draw + copy + warp"] = (total, batch, calls)

    for fn, _, _ in contenders.values():  # warm-up: allocations, kernels, lazy initialisation
        fn()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for repetition in range(args.repetitions):
        for name, (fn, images, calls) in contenders.items():
            rates[name].append(timed(fn, images, calls, device))
        print(f"repetition {repetition + 1}/{args.repetitions} done", file=sys.stderr, flush=True)

    rows = {
        name: {
            "images_per_s": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "repetitions": values,
        }
        for name, values in rates.items()
    }
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    results = {
        "date": dt.datetime.now().isoformat(timespec="minutes"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": cpu_name(),
            "device": device_name,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg()[0],
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{args.size} px uint8 to float32, rotate 20 / zoom 0.2 / shift 0.1 / flip; device "
        f"{args.device} ({device_name}), {torch.get_num_threads()} torch threads; median of "
        f"{args.repetitions} interleaved repetitions; load average {load_start:.1f} at start, "
        f"{results['machine']['load_average_at_end']:.1f} at end\n"
    )
    print("| path | img/s (median) | range |")
    print("| --- | ---: | ---: |")
    for name, row in rows.items():
        print(f"| {name} | {row['images_per_s']:.0f} | {row['min']:.0f}-{row['max']:.0f} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

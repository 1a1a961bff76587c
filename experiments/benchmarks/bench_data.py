"""Data pipeline benchmark: cache build speed and faithfulness, loader rate, model step rate.

    python experiments/benchmarks/bench_data.py            # about 2 minutes on 2 cores
    python experiments/benchmarks/bench_data.py --quick    # a smoke run, numbers are rough

(a) Building the decode-once cache (DCT-reduced JPEG decode + area resize, ``--workers``
    processes) against the seed's way: one process, ``cv2.imread(p, cv2.IMREAD_GRAYSCALE)`` at
    full resolution, then ``cv2.resize`` to 150. Full-resolution files: the originals in
    ../shared/data/originals repeated ``--repeat`` times, or synthetic 1,000-2,900 px films.
    Faithfulness: mean absolute difference per image from a full decode + area resize.
(b) Training loader rate with augmentation: ``XRayDataset`` over the cache against an
    ImageFolder-style dataset that decodes every file every epoch (PIL open, grayscale,
    resize, same augmentation, ToTensor), both on the 224 px training images.
(c) The cached loader's rate against the seed CNN's training step rate (batch 32, 150 px,
    Adam, BCE) on this machine.

Prints a markdown table and writes the measurements to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import cpu_name  # experiments/benchmarks/machine.py, beside this script
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_tensor

from cxrnet.data.cache import load_images
from cxrnet.data.dataset import XRayDataset
from cxrnet.data.decode import DCT_HEADROOM, DecodeParams, decode, fit_to_square
from cxrnet.data.discovery import list_images
from cxrnet.data.records import CLASS_NAMES, Record, make_record
from cxrnet.data.transforms import build_train_transform
from cxrnet.models.notebook_cnn import NotebookCNN

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SIZE = 150
BATCH = 32


# ------------------------------------------------------------------------------------ inputs


def records_under(folder: Path) -> list[Record]:
    return [
        make_record(path, label, "train")
        for label, name in enumerate(CLASS_NAMES)
        for path in list_images(folder / name)
    ]


def synthetic_films(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Smooth grey JPEGs 1,000-2,900 px wide, a stand-in where the originals are absent."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        width = int(rng.integers(1000, 2900))
        height = int(width * rng.uniform(0.7, 0.95))
        small = rng.normal(128, 40, (height // 32 + 1, width // 32 + 1)).astype(np.float32)
        film = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        film += rng.normal(0, 6, film.shape).astype(np.float32)
        path = folder / f"film{i:04d}.jpeg"
        cv2.imwrite(str(path), np.clip(film, 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def full_resolution_set(data: Path, work: Path, repeat: int) -> tuple[list[Record], str]:
    """Distinct files (so nothing is shared between copies) at their original resolution."""
    originals = data / "originals" / "train"
    folder = work / "full_res"
    if originals.is_dir():
        records = []
        for copy in range(repeat):
            for record in records_under(originals):
                target = folder / record.class_name / f"{copy:02d}-{record.path.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(record.path, target)
                records.append(make_record(target, record.label, "train"))
        return records, f"{len(records) // repeat} originals x {repeat} copies"
    folder.mkdir(parents=True)
    paths = synthetic_films(folder, 40 * repeat)
    return [make_record(p, 0, "train") for p in paths], f"{len(paths)} synthetic films"


def warm_page_cache(records: Sequence[Record]) -> None:
    # Both contenders then read from memory; the benchmark is about decoding, not the disk.
    for record in records:
        record.path.read_bytes()


# -------------------------------------------------------------------------------- (a) build


def seed_way(records: Sequence[Record]) -> np.ndarray:
    out = np.empty((len(records), SIZE, SIZE), dtype=np.uint8)
    for i, record in enumerate(records):
        out[i] = cv2.resize(cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE), (SIZE, SIZE))
    return out


_REDUCED = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def opencv_reduced_way(records: Sequence[Record]) -> np.ndarray:
    """The alternative decoder: OpenCV's reduced JPEG decode at the scale the cache picks."""
    params = DecodeParams(image_size=SIZE)
    side = DCT_HEADROOM * SIZE
    out = np.empty((len(records), SIZE, SIZE), dtype=np.uint8)
    for i, record in enumerate(records):
        with Image.open(record.path) as image:  # header only
            width, height = image.size
        scale = next((s for s in (8, 4, 2) if min(width, height) >= s * side), 1)
        gray = cv2.imread(str(record.path), _REDUCED[scale])
        out[i] = fit_to_square(gray, params, (width / scale, height / scale))
    return out


def entropy_floor(records: Sequence[Record]) -> None:
    """Only the 1/8 DCT-scaled decode: what no JPEG reduction can go below (Huffman decoding)."""
    for record in records:
        cv2.imread(str(record.path), cv2.IMREAD_REDUCED_GRAYSCALE_8)


def timed(function: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and CPU seconds, this process's and its reaped workers' together."""
    cpu_before, start = os.times(), time.perf_counter()
    function()
    wall, cpu_after = time.perf_counter() - start, os.times()
    cpu = sum(cpu_after[:4]) - sum(cpu_before[:4])  # user, system, children user, children system
    return wall, cpu


def bench_build(records: Sequence[Record], work: Path, workers: int, rounds: int) -> dict:
    params = DecodeParams(image_size=SIZE)
    contenders: dict[str, Callable[[], object]] = {
        "seed: cv2 full decode + resize, 1 process": lambda: seed_way(records),
        "cache build, in-process": lambda: load_images(
            records, params, cache_dir=Path(tempfile.mkdtemp(dir=work)), progress=False
        ),
        "OpenCV IMREAD_REDUCED_* + area, same scale, 1 process": lambda: opencv_reduced_way(
            records
        ),
        "floor: OpenCV 1/8-scale decode alone, 1 process": lambda: entropy_floor(records),
        f"cache build, {workers} worker processes": lambda: load_images(
            records,
            params,
            cache_dir=Path(tempfile.mkdtemp(dir=work)),
            num_workers=workers,
            progress=False,
        ),
    }
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):  # interleaved, so a noisy neighbour hurts every contender alike
        for name, run in contenders.items():
            seconds[name].append(timed(run))
    return {
        name: {
            "wall_and_cpu_seconds": runs,
            "best_images_per_s": len(records) / min(wall for wall, _ in runs),
            "median_images_per_s": len(records) / statistics.median(wall for wall, _ in runs),
            # Work per image, blind to other jobs on the machine (which only stretch wall time).
            "images_per_cpu_s": len(records) / min(cpu for _, cpu in runs),
        }
        for name, runs in seconds.items()
    }


def full_decode_resized(path: Path, params: DecodeParams) -> np.ndarray:
    """The reference: full-resolution decode, then the same resize (OpenCV INTER_AREA for every
    film that shrinks both ways; a film whose height grows gets area across, linear down)."""
    with Image.open(path) as image:
        gray = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    return fit_to_square(gray, params)


def faithfulness(records: Sequence[Record], size: int) -> dict:
    """Mean absolute grey-level difference per image from a full decode + area resize."""
    params = DecodeParams(size)
    ours, seeds = [], []
    for record in records:
        reference = full_decode_resized(record.path, params).astype(np.int16)
        ours.append(float(np.abs(decode(record.path, params) - reference).mean()))
        seed = cv2.resize(cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE), (size, size))
        seeds.append(float(np.abs(seed - reference).mean()))
    return {
        "files": len(records),
        "size": size,
        "cache_mad_max": max(ours),
        "cache_mad_mean": statistics.fmean(ours),
        "seed_linear_mad_max": max(seeds),
        "seed_linear_mad_mean": statistics.fmean(seeds),
    }


def headroom_sweep(records: Sequence[Record], rounds: int) -> list[dict]:
    """Per-core decode rate (CPU time) and worst faithfulness for each DCT reduction limit."""
    import cxrnet.data.decode as decode_module

    fulls = {}
    for record in records:
        with Image.open(record.path) as image:
            fulls[record.path] = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    settings = [
        DecodeParams(size, resize) for size in (64, 150, 224) for resize in ("squash", "letterbox")
    ]
    original = decode_module.DCT_HEADROOM
    params = DecodeParams(SIZE)

    def decode_all() -> None:
        for record in records:
            decode(record.path, params)

    rows = []
    try:
        for headroom in (1.0, 1.25, 1.5, 2.0, 2.5, 1e9):
            decode_module.DCT_HEADROOM = headroom
            worst = max(
                float(
                    np.abs(
                        decode(r.path, p).astype(np.int16) - fit_to_square(fulls[r.path], p)
                    ).mean()
                )
                for p in settings
                for r in records
            )
            cpu = min(timed(decode_all)[1] for _ in range(rounds))
            rows.append(
                {"headroom": headroom, "images_per_cpu_s": len(records) / cpu, "worst_mad": worst}
            )
    finally:
        decode_module.DCT_HEADROOM = original
    seed_cpu = min(timed(lambda: seed_way(records))[1] for _ in range(rounds))
    rows.append(
        {"headroom": "seed", "images_per_cpu_s": len(records) / seed_cpu, "worst_mad": None}
    )
    return rows


def sweep_table(rows: list[dict]) -> str:
    lines = [
        "| decode, 1 process | img per CPU-second | worst mean abs. diff (64/150/224 px, both "
        "resize modes) |",
        "| --- | ---: | ---: |",
    ]
    for row in rows:
        if row["headroom"] == "seed":
            name, worst = "seed: full decode + linear resize", "-"
        elif row["headroom"] > 100:
            name, worst = "full decode + area resize (no reduction)", f"{row['worst_mad']:.2f}"
        else:
            name, worst = f"DCT headroom {row['headroom']:g}", f"{row['worst_mad']:.2f}"
        lines.append(f"| {name} | {row['images_per_cpu_s']:.0f} | {worst} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ (b) loaders


class FolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """torchvision ImageFolder-style: decode, grayscale and resize every file on every access."""

    def __init__(self, records: Sequence[Record], size: int, transform: Callable | None) -> None:
        self.records = list(records)
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.records[index]
        with Image.open(record.path) as image:
            gray = image.convert("L").resize((self.size, self.size), Image.BILINEAR)
        array = np.asarray(gray)
        if self.transform is not None:
            array = self.transform(image=array)["image"]
        return to_tensor(array), record.label


def loader_rate(dataset: Dataset, workers: int, batches: int, warmup: int = 5) -> float:
    """Images per second once the workers are up (their start is paid once per run)."""
    loader = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True
    )
    batches = min(batches, len(loader))
    warmup = min(warmup, len(loader) - batches)
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return batches * BATCH / elapsed


def bench_loaders(
    data: Path,
    work: Path,
    full_res: Sequence[Record],
    workers: int,
    batches: int,
    rounds: int,
) -> dict:
    train = data / "chest_xray_224" / "train"
    if train.is_dir():
        records, source = records_under(train), "chest_xray_224/train"
    else:
        folder = work / "small"
        folder.mkdir()
        paths = [folder / f"img{i:04d}.jpeg" for i in range(2000)]
        rng = np.random.default_rng(1)
        for path in paths:
            cv2.imwrite(str(path), rng.integers(0, 255, (224, 224), dtype=np.uint8))
        records, source = [make_record(p, 0, "train") for p in paths], "2000 synthetic 224px"
    warm_page_cache(records)
    start = time.perf_counter()
    loaded = load_images(
        records,
        DecodeParams(image_size=SIZE),
        cache_dir=work / "cache224",
        num_workers=workers,
        progress=False,
    )
    build_seconds = time.perf_counter() - start
    transform = build_train_transform()
    labels = [record.label for record in loaded.records]
    cached = XRayDataset(loaded.images, labels, transform=transform)
    folder = FolderDataset(loaded.records, SIZE, transform)
    # What decoding every epoch costs with the dataset as published: full-resolution films.
    folder_full = FolderDataset(full_res, SIZE, transform)
    full_batches = min(batches, 20)
    rates: dict[str, list[float]] = {"cache": [], "folder": [], "folder_full_res": []}
    for _ in range(rounds):
        rates["cache"].append(loader_rate(cached, workers, batches))
        rates["folder"].append(loader_rate(folder, workers, batches))
        rates["folder_full_res"].append(loader_rate(folder_full, workers, full_batches))
    return {
        "source": source,
        "images": len(records),
        "cache_build_seconds": build_seconds,
        "loader_workers": workers,
        "batches_timed": batches,
        "cache_images_per_s": max(rates["cache"]),
        "folder_images_per_s": max(rates["folder"]),
        "folder_full_res_images_per_s": max(rates["folder_full_res"]),
        "all_rates": rates,
    }


# ------------------------------------------------------------------------------- (c) model


def model_rate(steps: int, warmup: int = 3) -> float:
    """Seed CNN training images per second: forward, BCE, backward, Adam step."""
    torch.manual_seed(0)
    model = NotebookCNN(image_size=SIZE).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    images = torch.rand(BATCH, 1, SIZE, SIZE)
    targets = torch.randint(0, 2, (BATCH, 1)).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), targets).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    return f"{value:.2f}x (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"


def table(results: dict) -> str:
    build = results["build"]
    seed_name = next(name for name in build if name.startswith("seed"))
    parallel_name = list(build)[-1]
    seed_rate = build[seed_name]["best_images_per_s"]
    machine = results["machine"]
    lines = [
        f"{results['date']}, {machine['cpus']} cores ({machine['processor']}), load average "
        f"{machine['load_average_at_start']:.1f} at start, {machine['load_average_at_end']:.1f} "
        "at end",
        "",
        f"(a) cache build, {results['full_res_source']}, {results['full_res_files']} files, "
        f"{SIZE}px",
        "",
        "| pipeline | best img/s | median img/s | vs seed (best) | img per CPU-second |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in build.items():
        ratio = row["best_images_per_s"] / seed_rate
        lines.append(
            f"| {name} | {row['best_images_per_s']:.0f} | {row['median_images_per_s']:.0f} | "
            f"{ratio:.2f}x | {row['images_per_cpu_s']:.0f} |"
        )
    speedup = build[parallel_name]["best_images_per_s"] / seed_rate
    faith = results["faithfulness"]
    lines += [
        "",
        f"build speed-up: {verdict(speedup, 2.5)}",
        f"faithfulness on {faith['files']} originals at {faith['size']}px, mean |diff| per "
        f"image from full decode + area resize: cache max {faith['cache_mad_max']:.2f} "
        f"(mean {faith['cache_mad_mean']:.2f}; target <= 1: "
        f"{'met' if faith['cache_mad_max'] <= 1 else 'NOT met'}), seed's linear resize max "
        f"{faith['seed_linear_mad_max']:.2f} (mean {faith['seed_linear_mad_mean']:.2f})",
    ]
    loaders = results["loaders"]
    model = results["model_images_per_s"]
    cache_rate, folder_rate = loaders["cache_images_per_s"], loaders["folder_images_per_s"]
    lines += [
        "",
        f"(b, c) training input, {loaders['source']} ({loaders['images']} files), batch {BATCH}, "
        f"{loaders['loader_workers']} loader workers, with augmentation",
        "",
        "| pipeline | img/s |",
        "| --- | ---: |",
        f"| loader from the cache (XRayDataset + augmentation) | {cache_rate:.0f} |",
        f"| ImageFolder-style, decoding every image every epoch | {folder_rate:.0f} |",
        "| ImageFolder-style on the full-resolution films of (a) | "
        f"{loaders['folder_full_res_images_per_s']:.0f} |",
        f"| seed CNN training step (Adam, BCE, {SIZE}px) | {model:.0f} |",
        "",
        f"cache loader vs ImageFolder-style: {cache_rate / folder_rate:.2f}x "
        f"({cache_rate / loaders['folder_full_res_images_per_s']:.1f}x on full-resolution films)",
        f"cache build of these {loaders['images']} files: {loaders['cache_build_seconds']:.1f} s "
        f"({loaders['images'] / loaders['cache_build_seconds']:.0f} img/s)",
        f"cache loader vs model: {verdict(cache_rate / model, 5)}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_data.json"))
    parser.add_argument("--repeat", type=int, default=20, help="copies of each original")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=60, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=15, help="model steps timed")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--sweep-headroom",
        action="store_true",
        help="also time and check every DCT reduction limit on the originals (about 1 minute)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.rounds, args.batches, args.steps = 2, 1, 5, 2

    with tempfile.TemporaryDirectory(prefix="cxrnet-bench-") as tmp:
        work = Path(tmp)
        full_res, source = full_resolution_set(args.data, work, args.repeat)
        warm_page_cache(full_res)
        results: dict = {
            "date": dt.date.today().isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "processor": cpu_name(),
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "opencv": cv2.__version__,
                "torch_threads": torch.get_num_threads(),
                # Other work on the same cores slows every row; the load says how much there was.
                "load_average_at_start": os.getloadavg()[0],
            },
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "full_res_source": source,
            "full_res_files": len(full_res),
        }
        results["build"] = bench_build(full_res, work, args.workers, args.rounds)
        originals = full_res[: len(full_res) // args.repeat]
        results["faithfulness"] = faithfulness(originals, SIZE)
        if args.sweep_headroom:
            results["headroom_sweep"] = headroom_sweep(originals, args.rounds)
        results["loaders"] = bench_loaders(
            args.data, work, full_res, args.workers, args.batches, args.rounds
        )
        results["model_images_per_s"] = model_rate(args.steps)
        results["machine"]["load_average_at_end"] = os.getloadavg()[0]

    report = table(results)
    if "headroom_sweep" in results:
        report += "\n\nDCT reduction limit (decode.DCT_HEADROOM), 1 process:\n\n"
        report += sweep_table(results["headroom_sweep"])
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

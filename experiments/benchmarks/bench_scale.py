"""Scale benchmark: each phase of a run from 2k to 128k films, its log-log slope, and what that
predicts for NIH ChestX-ray14 (112,120 films) and MIMIC-CXR (377,110 films) at 224 px.

    python experiments/benchmarks/bench_scale.py                         # 2k, 8k and 32k films
    python experiments/benchmarks/bench_scale.py --sizes 2000 8000 32000 128000
    python experiments/benchmarks/bench_scale.py --quick                 # 500, 1000, 2000

Films come from the synthetic generator (``cxrnet.data.synthetic``) at 32-48 px, so writing
128k of them stays affordable; they are written once into ``--work`` and reused by later runs.
Per size, each phase is timed (wall and this process's CPU) with its peak resident memory
(``VmHWM``, reset before each phase; worker processes are not counted, so every phase runs in
this process):

- start-up: a fresh interpreter importing what ``cxrnet-train`` imports (torch, Lightning, the
  data module and the LightningModule); it does not depend on the number of films;
- discovery: the folder walk (``discover_folders``, one stat per film);
- duplicate check: cold (every same-size file hashed, as at a first start) and warm (digests
  read back from beside the cache);
- split: the patient-grouped split of train+val (``make_splits``, ``data.split=patient``);
- cache build: decoding every film into the cache at 64 px (``--decode-workers`` processes);
- cache open: ``load_images`` again, reusing it;
- warm start: a whole ``ChestXRayDataModule.setup`` on a warm cache, with ``verify_files`` true
  (the default: discovery, duplicate check, split, cache open) and false;
- one epoch at 64 px: the data module's training loader (augmentation in this process) feeding
  a stand-in network (one strided convolution and a linear layer), so the data path, not the
  network, is what is timed: a real network adds the same cost per film at any set size;
- evaluation: the stand-in scoring every film from the cache, the threshold choice (Youden) and
  the report's 1000-resample patient bootstrap over those predictions;
- predict: ``predict_files`` on every film from the files (decoding at 64 px, the stand-in as
  the scorer, the CSV written).

The slope of log(time) against log(films) over the sizes says how a phase scales (1: linear);
phases under ~20 ms are mostly fixed costs and their slope says little. Decoding the real films
of ``../shared/data`` (1024 px NIH films of ``rsna_adult``; the larger Kermany ``originals``,
399-2890 px, for MIMIC-CXR's JPEGs) gives the per-film decode cost behind the 224 px
extrapolation; where they are absent that part is left out, saying so. Prints markdown tables
and writes everything to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import REPO, run_facts  # experiments/benchmarks/machine.py, beside this script

SIZES = (2_000, 8_000, 32_000)
QUICK_SIZES = (500, 1_000, 2_000)
TRAIN_SIZE = 64
TARGETS = {"NIH ChestX-ray14": 112_120, "MIMIC-CXR": 377_110}
TARGET_SIZE = 224
STARTUP = (
    "import torch, lightning, cxrnet.data.datamodule, cxrnet.models.module, "
    "cxrnet.evaluation.report"
)


# ------------------------------------------------------------------------------- measuring


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MB; 0 where /proc is absent."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def timed(phase: str, n: int, run: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    # Linux: writing 5 resets the peak resident size (VmHWM) to the current one.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    before = _memory_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    peak = _memory_mb("VmHWM")
    row = {
        "phase": phase,
        "n": n,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "peak_mb": peak,
        "added_mb": peak - before,  # what the phase itself held at its peak
    }
    print(row, file=sys.stderr)
    return row, result


# ---------------------------------------------------------------------------------- phases


def films(work: Path, n: int, workers: int) -> Path:
    from cxrnet.data.synthetic import SyntheticSpec, ensure_synthetic

    val = test = max(4, n // 10)
    spec = SyntheticSpec(n_train=n - val - test, n_val=val, n_test=test, min_size=32, max_size=48)
    return ensure_synthetic(work, spec, workers=workers)


def stand_in() -> Any:
    """The network of the epoch, evaluation and predict phases: small enough that the data path
    dominates, as a real network's cost per film does not depend on the set's size."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 1),
    )


def startup_s() -> float:
    """A fresh interpreter's imports (the same for any number of films: timed once)."""
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-c", STARTUP], check=True, cwd=REPO)
    return time.perf_counter() - wall


def one_size(
    root: Path, cache: Path, n: int, decode_workers: int, data_only: bool = False
) -> list[dict[str, Any]]:
    import torch

    from cxrnet.data.cache import load_images
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.data.decode import DecodeParams
    from cxrnet.data.digests import DigestStore
    from cxrnet.data.discovery import discover_folders
    from cxrnet.data.duplicates import check_duplicates
    from cxrnet.data.files import Facts
    from cxrnet.data.splits import SplitConfig, make_splits
    from cxrnet.inference.predict import predict_files
    from cxrnet.inference.scorers import TorchScorer

    rows = []
    facts: Facts = {}
    row, found = timed("discovery", n, lambda: discover_folders(root, facts=facts).records)
    rows.append(row)
    count = sum(len(records) for records in found.values())

    def duplicates() -> Any:
        store = DigestStore(cache)
        report = check_duplicates(found, digests=store, facts=facts)
        store.save()
        return report

    row, report = timed("duplicate check, cold (hashing)", n, duplicates)
    rows.append(row)
    rows.append(timed("duplicate check, warm", n, duplicates)[0])
    config = SplitConfig("patient", val_fraction=0.2)
    row, splits = timed("split (patient)", n, lambda: make_splits(found, config, report.all_groups))
    rows.append(row)
    ordered = sorted((r for rs in splits.values() for r in rs), key=lambda r: str(r.path))
    params = DecodeParams(TRAIN_SIZE)

    def load() -> Any:
        return load_images(
            ordered, params, cache_dir=cache, num_workers=decode_workers, progress=False
        )

    rows.append(timed(f"cache build, {decode_workers} workers", n, load)[0])
    rows.append(timed("cache open", n, load)[0])

    def setup(verify: bool) -> ChestXRayDataModule:
        dm = ChestXRayDataModule(
            root,
            image_size=TRAIN_SIZE,
            batch_size=64,
            eval_batch_size=256,
            num_workers=0,
            decode_workers=0,
            cache_dir=cache,
            split="patient",
            verify_files=verify,
        )
        dm.setup("fit")
        return dm

    row, dm = timed("warm start", n, lambda: setup(True))
    rows.append(row)
    rows.append(timed("warm start, verify_files=false", n, lambda: setup(False))[0])
    if data_only:
        return _counted(rows, count)

    net = stand_in()
    rows.append(timed(f"one epoch at {TRAIN_SIZE} px", n, lambda: train_epoch(dm, net))[0])

    def evaluate() -> Any:
        return evaluate_splits(dm, net, list(dm.split_records), max(1, decode_workers))

    rows.append(timed("evaluation (+ threshold, bootstrap 1000)", n, evaluate)[0])
    net.eval()
    scorer = TorchScorer(net, params, None, torch.device("cpu"))
    paths = [record.path for record in ordered]
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "predictions.csv"
        row, _ = timed(
            "predict (from files)",
            n,
            lambda: predict_files(paths, scorer, output, batch_size=256, progress=False),
        )
    rows.append(row)
    return _counted(rows, count)


def train_epoch(dm: Any, net: Any) -> int:
    """One epoch of the data module's training loader through ``net`` (Adam, BCE); the films
    seen."""
    import torch

    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    seen = 0
    for images, labels in dm.train_dataloader():
        optimizer.zero_grad()
        loss_fn(net(images).squeeze(1), labels.float()).backward()
        optimizer.step()
        seen += len(labels)
    return seen


def evaluate_splits(dm: Any, net: Any, splits: list[str], workers: int = 1) -> Any:
    """The evaluation pass's arithmetic over ``splits``: every film scored from the cache, the
    Youden threshold, the report's 1000-resample patient bootstrap."""
    import torch

    from cxrnet.evaluation.bootstrap import bootstrap_weighted
    from cxrnet.evaluation.report import _resampled_scores
    from cxrnet.evaluation.thresholds import choose_threshold

    probabilities, labels, patients = [], [], []
    with torch.inference_mode():
        for split in splits:
            for images, batch_labels in dm.eval_dataloader(split):
                probabilities.append(torch.sigmoid(net(images).squeeze(1)).numpy())
                labels.append(batch_labels.numpy())
            patients += [record.patient for record in dm.split_records[split]]
    p, y = np.concatenate(probabilities).astype(np.float64), np.concatenate(labels)
    threshold = choose_threshold(p, y, "youden")
    scores = _resampled_scores(p, y, threshold)
    return bootstrap_weighted(scores, len(p), patients, 1000, 0, workers=workers)


def _counted(rows: list[dict[str, Any]], films: int) -> list[dict[str, Any]]:
    for row in rows:
        row["films"] = films
    return rows


# ------------------------------------------------------------------------ real decode costs


def real_decode_costs(limit: int) -> dict[str, Any]:
    """CPU seconds per film to decode real large films to 224 px (what a build costs there).

    NIH ChestX-ray14 is distributed as 1024 px PNGs: the ``rsna_adult`` films (NIH films as
    1024 px JPEGs) are timed as they are and re-encoded as PNG in a temporary folder (deleted
    after). MIMIC-CXR-JPG's films are JPEGs of about 2500-3000 px: the largest Kermany
    ``originals`` (up to 2890 px) stand in for them.
    """
    import cv2
    from machine import shared_data

    from cxrnet.data.decode import DecodeParams, decode
    from cxrnet.data.discovery import list_images

    data = shared_data().parent
    params = DecodeParams(TARGET_SIZE)

    def cost(paths: list[Path]) -> float:
        cpu = time.process_time()
        for path in paths:
            decode(path, params)
        return (time.process_time() - cpu) / len(paths)

    def largest(folder: Path) -> list[Path]:
        return sorted(list_images(folder), key=lambda p: p.stat().st_size, reverse=True)[:limit]

    costs: dict[str, Any] = {}
    nih, mimic = data / "rsna_adult", data / "originals"
    if nih.is_dir():
        films = largest(nih)
        with tempfile.TemporaryDirectory() as folder:
            pngs = []
            for index, path in enumerate(films):
                pngs.append(Path(folder) / f"{index}.png")
                cv2.imwrite(str(pngs[-1]), cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
            png = cost(pngs)
        costs["NIH ChestX-ray14"] = {
            "stand_in": f"{len(films)} rsna_adult films (1024 px) re-encoded as PNG",
            "cpu_s_per_film": png,
            "jpeg_cpu_s_per_film": cost(films),
        }
    else:
        costs["NIH ChestX-ray14"] = {"missing": str(nih)}
    if mimic.is_dir():
        films = largest(mimic)
        costs["MIMIC-CXR"] = {
            "stand_in": f"the {len(films)} largest Kermany originals (JPEG, up to 2890 px)",
            "cpu_s_per_film": cost(films),
        }
    else:
        costs["MIMIC-CXR"] = {"missing": str(mimic)}
    print(costs, file=sys.stderr)
    return costs


# ---------------------------------------------------------------------------------- tables


def slopes(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per phase, the least-squares slope of log(time) on log(films), wall and CPU."""
    found: dict[str, dict[str, float | None]] = {}
    for phase in dict.fromkeys(row["phase"] for row in rows):
        mine = [row for row in rows if row["phase"] == phase]
        if len(mine) < 2:
            continue
        films = np.log([row["films"] for row in mine])
        found[phase] = {}
        for key in ("wall_s", "cpu_s"):
            values = [row[key] for row in mine]
            if any(v is None or v <= 0 for v in values):
                found[phase][key] = None
                continue
            found[phase][key] = float(np.polyfit(films, np.log(values), 1)[0])
    return found


def render(rows: list[dict[str, Any]], slope: dict[str, dict[str, float | None]]) -> str:
    sizes = sorted({row["films"] for row in rows})
    head = " | ".join(f"{n:,} films" for n in sizes)
    lines = [
        f"| phase | {head} | slope (wall) | slope (CPU) | MB added at {sizes[-1]:,} |",
        "|---|" + "---:|" * (len(sizes) + 3),
    ]
    for phase, by_key in slope.items():
        mine = {row["films"]: row for row in rows if row["phase"] == phase}
        cells = " | ".join(f"{mine[n]['wall_s']:.3g} s" if n in mine else "-" for n in sizes)
        peak = mine[sizes[-1]]["added_mb"] if sizes[-1] in mine else None
        shown = [f"{v:.2f}" if v is not None else "-" for v in by_key.values()]
        peak_text = f"{peak:.0f}" if peak is not None else "-"
        lines.append(f"| {phase} | {cells} | {shown[0]} | {shown[1]} | {peak_text} |")
    return "\n".join(lines)


def extrapolate(
    rows: list[dict[str, Any]], decode_costs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Sizes that are arithmetic, times and memory scaled linearly from the largest size."""
    largest = max(row["films"] for row in rows)
    at = {row["phase"]: row for row in rows if row["films"] == largest}
    build = next(p for p in at if p.startswith("cache build"))
    # What a start holds per film (records, paths, facts, index rows) at its peak, above the
    # interpreter and libraries already loaded; the cache's pixels are memory-mapped: page cache
    # shared by every rank on a node, not counted here.
    start = at["warm start"]
    libraries = start["peak_mb"] - start["added_mb"]
    per_film_mb = start["added_mb"] / largest
    lines = [
        "| data set | films | cache at 224 px | build, 2 cores | build, 32 cores | "
        "warm start (verify / trust) | memory per rank (start) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    found: dict[str, Any] = {}
    for target, n in TARGETS.items():
        scale = n / largest
        cache_gb = n * TARGET_SIZE * TARGET_SIZE / 1e9
        cost = decode_costs.get(target, {}).get("cpu_s_per_film")
        # Decoding is per film and independent: cores divide it, up to the disk's read rate.
        build_2 = f"{n * cost / 2 / 60:.0f} min" if cost else "not measured"
        build_32 = f"{n * cost / 32 / 60:.1f} min" if cost else "not measured"
        verify = at["warm start"]["wall_s"] * scale
        trust = at["warm start, verify_files=false"]["wall_s"] * scale
        memory = libraries + per_film_mb * n
        found[target] = {
            "films": n,
            "cache_gb": cache_gb,
            "decode_cpu_s_per_film": cost,
            "warm_start_s": verify,
            "warm_start_trusted_s": trust,
            "start_memory_mb": memory,
            "start_memory_mb_per_film": per_film_mb,
            "build_phase_measured": build,
        }
        lines.append(
            f"| {target} | {n:,} | {cache_gb:.1f} GB | {build_2} | {build_32} | "
            f"{verify:.1f} s / {trust:.1f} s | {memory:.0f} MB |"
        )
    return "\n".join(lines), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", help=f"films per set (default {SIZES})")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cxrnet-bench-scale",
        help="where the films are written (once, reused) and the caches built (fresh per run)",
    )
    parser.add_argument("--decode-workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--real-films", type=int, default=40, help="real films decoded per set")
    parser.add_argument(
        "--data-only", action="store_true", help="phases up to the warm start (no network)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_scale.json"))
    args = parser.parse_args()
    sizes = list(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    if len(sizes) < 2:
        parser.error("--sizes needs at least two sizes, for a slope")
    rows: list[dict[str, Any]] = []
    written: dict[int, float] = {}
    for n in sorted(sizes):
        start = time.perf_counter()
        root = films(args.work / "films", n, args.decode_workers)
        written[n] = time.perf_counter() - start
        with tempfile.TemporaryDirectory(dir=args.work) as cache:
            rows += one_size(root, Path(cache), n, args.decode_workers, args.data_only)
        # Written after each size too: a long run that is stopped keeps what it measured.
        args.out.write_text(json.dumps({"partial": True, "rows": rows}, indent=2) + "\n")
    startup = startup_s()
    slope = slopes(rows)
    table = render(rows, slope)
    costs = real_decode_costs(args.real_films)
    projection, projected = extrapolate(rows, costs)
    print(table)
    print(f"\nstart-up (a fresh interpreter's imports, any number of films): {startup:.1f} s\n")
    print(projection)
    args.out.write_text(
        json.dumps(
            {
                **run_facts(),
                "quick": args.quick,
                "films_written_s": written,
                "startup_s": startup,
                "rows": rows,
                "slopes": slope,
                "decode_costs": costs,
                "extrapolation": projected,
                "table": table,
                "projection": projection,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

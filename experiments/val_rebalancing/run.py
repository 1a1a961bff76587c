"""The validation-rebalancing study, end to end: holdout, sweeps, comparison, analysis.

    python experiments/val_rebalancing/run.py            # the study (see README.md)
    python experiments/val_rebalancing/run.py --debug --data PATH   # tiny smoke run

1. Carves a patient-grouped held-out set (``--holdout-fraction``) from train+val with
   cxrnet's own holdout code (``make_splits`` with ``data.holdout_fraction``) and writes a CSV
   manifest holding it as the ``test`` split, the rest of train as ``train`` and the official
   validation images as ``val``. Every run reads that manifest, so every scheme and seed is
   scored on the same held-out images while ``data.split_seed`` (tied to ``seed`` by
   conf/experiment/studies/val_rebalancing.yaml) draws a fresh validation split or fold assignment.
2. Runs one ``cxrnet-train -m`` sweep per split method into ``<study>/runs/<method>``.
3. Runs ``cxrnet-compare`` on ``<study>/runs`` and the analysis (analysis.py) on the study.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType

from cxrnet.data.duplicates import check_duplicates
from cxrnet.data.manifest import load_records
from cxrnet.data.records import Record
from cxrnet.data.split_report import count_table, write_split_csv
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.runs.sweeps import console_command, run_logged, sweep_values
from cxrnet.runs.sweeps import sweep_command as train_sweep_command
from cxrnet.user_errors import DataError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray_224"
RESULTS = HERE / "results"
MANIFEST_NAME, HOLDOUT_NAME, STUDY_NAME = "manifest.csv", "holdout.json", "study.json"
# What cxrnet-compare shows: the numbers the study is about.
COMPARE_METRICS = (
    "val/auroc",
    "test/auroc",
    "val/threshold",
    "test/recall_at_threshold",
    "test/specificity_at_threshold",
    "test/f1_at_threshold",
)
# Files small enough to commit beside the README.
PUBLISHED = (
    "comparison.md",
    "comparison.csv",
    "comparison.png",
    "analysis.md",
    "analysis.csv",
    "analysis.json",
    "analysis.png",
    HOLDOUT_NAME,
    STUDY_NAME,
)
# Tiny and fast, for --debug: what tests/project/test_val_rebalancing.py runs.
DEBUG_OVERRIDES = (
    "data.image_size=32",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    "model.net.widths=[8,8,16,16]",
    "model.net.hidden=16",
)


def _load_analysis() -> ModuleType:
    # By path, under a unique name: experiments/ is not a package.
    spec = importlib.util.spec_from_file_location("val_rebalancing_analysis", HERE / "analysis.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'analysis.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- held-out set


@dataclass(frozen=True)
class Holdout:
    manifest: Path
    split_seed: int
    info: dict[str, object]


def _names(records: Sequence[Record]) -> list[str]:
    return sorted(record.path.name for record in records)


def make_holdout(
    data: Path, out_dir: Path, fraction: float, split_seed: int | None, max_seed: int = 1000
) -> Holdout:
    """Carve the held-out set and write ``manifest.csv`` and ``holdout.json`` into ``out_dir``.

    ``split_seed=None`` takes the smallest seed whose holdout contains none of the official
    validation images, so the ``official`` scheme validates on the whole official val split.
    Only file membership decides; no label or prediction of the held-out set is looked at.
    """
    found = load_records(data)
    ignored_test = len(found.get("test", []))
    pool = {split: list(found[split]) for split in ("train", "val") if found.get(split)}
    if "val" not in pool:
        raise DataError(f"{data} has no val split; the official scheme needs one")
    duplicates = check_duplicates(pool).all_groups
    official_val = {str(record.path) for record in pool["val"]}
    seeds = [split_seed] if split_seed is not None else list(range(max_seed))
    tried: list[dict[str, object]] = []
    for seed in seeds:
        config = SplitConfig("official", holdout_fraction=fraction, split_seed=seed)
        splits = make_splits(pool, config, duplicates=duplicates)
        taken = [r for r in splits["test"] if str(r.path) in official_val]
        if split_seed is not None or not taken:
            break
        if len(tried) < 5:
            tried.append({"split_seed": seed, "official_val_images_held_out": _names(taken)})
    else:
        raise DataError(
            f"no split_seed in [0, {max_seed}) keeps every official val image out of the "
            f"holdout of {data}; pass --holdout-seed"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_NAME
    write_split_csv(manifest, splits)
    info: dict[str, object] = {
        "data": str(data),
        "holdout_fraction": fraction,
        "split_seed": seed,
        "split_seed_chosen": "given" if split_seed is not None else "smallest keeping official val",
        "earlier_seeds_rejected": seed if split_seed is None else 0,
        "rejected_examples": tried,
        "same_as": (
            f"cxrnet-train data.root={data} data.holdout_fraction={fraction} "
            f"data.split_seed={seed} (its test split)"
        ),
        "source_test_images_ignored": ignored_test,
        "counts": count_table(splits),
        "official_val_images": len(official_val),
        "official_val_held_out": _names(taken),
        "official_val_kept": _names(splits["val"]),
    }
    (out_dir / HOLDOUT_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return Holdout(manifest, seed, info)


# --------------------------------------------------------------------------- sweeps


def sweeps(num_folds: int) -> dict[str, list[str]]:
    """Sweep folder name -> the overrides that make its validation scheme(s)."""
    return {
        "official": ["data.split=official"],
        "stratified": ["data.split=stratified", "data.val_fraction=0.1,0.2"],
        "patient": ["data.split=patient", "data.val_fraction=0.2"],
        "kfold": [
            "data.split=kfold",
            f"data.num_folds={num_folds}",
            "data.fold=" + ",".join(str(fold) for fold in range(num_folds)),
        ],
    }


def sweep_command(
    name: str,
    scheme: Sequence[str],
    study: Path,
    manifest: Path,
    cache_dir: Path,
    seeds: Sequence[int],
    n_jobs: int,
    extra: Sequence[str],
) -> list[str]:
    settings = [
        "experiment=studies/val_rebalancing",
        f"data.root={manifest}",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={study / 'logs'}",
    ]
    swept = [sweep_values("seed", seeds), *scheme, *extra]
    return train_sweep_command(settings, study / "runs" / name, n_jobs, swept)


def _machine() -> dict[str, object]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": len(_git("status", "--porcelain").splitlines()),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder or manifest")
    parser.add_argument(
        "--out", type=Path, help="study folder (default: logs/val_rebalancing/<time>)"
    )
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument(
        "--holdout-seed",
        type=int,
        help="split_seed of the holdout (default: the smallest that keeps official val whole)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--debug: 0 1)")
    parser.add_argument("--folds", type=int, help="k of k-fold, default 5 (--debug: 2)")
    parser.add_argument(
        "--n-jobs", type=int, help="parallel jobs per sweep, default 2 (--debug: 1, faster there)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("CXRNET_CACHE_DIR", Path.home() / ".cache" / "cxrnet")),
        help="paths.cache_dir shared by every run (the decode-once cache is built once)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="tiny images and nets, 1 epoch, 2 seeds, 2 folds"
    )
    parser.add_argument(
        "--no-publish", action="store_true", help=f"do not copy the results into {RESULTS}"
    )
    parser.add_argument(
        "--analyze-only", action="store_true", help="skip holdout and sweeps; re-read --out"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra cxrnet-train overrides for every run, e.g. trainer.max_epochs=3",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = datetime.now().astimezone()
    if args.seeds is None:
        args.seeds = [0, 1] if args.debug else [0, 1, 2]
    if args.folds is None:
        args.folds = 2 if args.debug else 5
    if args.n_jobs is None:
        args.n_jobs = 1 if args.debug else 2
    study = args.out or Path("logs") / "val_rebalancing" / started.strftime("%Y-%m-%d_%H-%M-%S")
    study = study.resolve()
    extra = [*(DEBUG_OVERRIDES if args.debug else ()), *args.overrides]
    analysis = _load_analysis()
    failures = 0
    if not args.analyze_only:
        if (study / "runs").exists():
            print(f"{study / 'runs'} exists: pass a new --out (or --analyze-only)", file=sys.stderr)
            return 2
        holdout = make_holdout(
            args.data.expanduser().resolve(), study, args.holdout_fraction, args.holdout_seed
        )
        kept = holdout.info["official_val_kept"]
        print(
            f"held-out set: split_seed={holdout.split_seed}, "
            f"{holdout.info['counts'][-1]['images']} images; official val kept: "
            f"{len(kept)}/{holdout.info['official_val_images']}; manifest {holdout.manifest}",
            flush=True,
        )
        (study / "logs").mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        commands: dict[str, list[str]] = {}
        for name, scheme in sweeps(args.folds).items():
            command = sweep_command(
                name,
                scheme,
                study,
                holdout.manifest,
                args.cache_dir.expanduser().resolve(),
                args.seeds,
                args.n_jobs,
                extra,
            )
            code, elapsed = run_logged(
                command, study / "logs" / f"sweep_{name}.log", env={"HYDRA_FULL_ERROR": "1"}
            )
            failures += code != 0
            timings[name] = round(elapsed, 1)
            commands[name] = console_command(command)
        study_info = {
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(
                ["python experiments/val_rebalancing/run.py", *(argv or sys.argv[1:])]
            ),
            "debug": args.debug,
            "seeds": args.seeds,
            "folds": args.folds,
            "n_jobs": args.n_jobs,
            "extra_overrides": extra,
            "sweep_seconds": timings,
            "total_seconds": round(sum(timings.values()), 1),
            "sweep_commands": commands,
            "failed_sweeps": failures,
            "machine": _machine(),
        }
        (study / STUDY_NAME).write_text(json.dumps(study_info, indent=2) + "\n")

    compare = [
        sys.executable,
        "-m",
        "cxrnet.cli.compare",
        str(study / "runs"),
        "--out",
        str(study),
        "--sort",
        "val/auroc",
        "--metrics",
        *COMPARE_METRICS,
    ]
    code = subprocess.run(compare).returncode
    if code != 0:
        print(f"cxrnet-compare exited {code}", file=sys.stderr)
        return code
    analysis.write_analysis(study)
    print((study / analysis.MARKDOWN_NAME).read_text())
    if not args.debug and not args.no_publish:
        RESULTS.mkdir(exist_ok=True)
        for name in PUBLISHED:
            if (study / name).is_file():
                shutil.copy2(study / name, RESULTS / name)
        print(f"copied the results into {RESULTS}")
    print(f"study folder: {study}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

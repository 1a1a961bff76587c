"""Run the cross-validated recipe studies, then compare and analyse them.

    python experiments/cv_studies/run.py --data ../shared/data/chest_xray_224 \
        --out logs/cv_studies --study baseline input recipe imbalance networks
    python experiments/cv_studies/run.py --out logs/cv_studies --analyze-only

Each variant is one ``cxrnet-train -m experiment=studies/cv_study`` sweep over the 5 folds (and
its seeds) into ``<out>/runs/<study>/<variant>``. A variant whose sweep folder already holds a
completed record for every (fold, seed) is not run again, so an interrupted study continues where
it stopped. ``study.json`` keeps each sweep's command, exit code and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "experiments" / "benchmarks"))

from machine import cpu_name  # noqa: E402
from studies import STUDIES, Study, Variant, variants_of  # noqa: E402

from cxrnet.runs.results import collect_runs  # noqa: E402
from cxrnet.runs.sweeps import console_command, run_logged, sweep_values  # noqa: E402
from cxrnet.runs.sweeps import sweep_command as train_sweep_command  # noqa: E402

NUM_FOLDS = 5
# The analysis recomputes every number from the jobs' prediction files, so each job's own report
# needs no heatmaps and fewer bootstrap resamples: seconds saved per job, predictions unchanged.
LIGHT_REPORT = ("report.top_k_wrong=0", "report.resamples=200")


def sweep_dir(out: Path, study: Study, variant: Variant) -> Path:
    return out / "runs" / study.name / variant.name


def completed_jobs(folder: Path) -> int:
    """How many jobs under ``folder`` finished with status completed."""
    if not folder.is_dir():
        return 0
    return sum(run.completed for run in collect_runs([folder]))


def sweep_command(
    study: Study,
    variant: Variant,
    out: Path,
    data: Path,
    cache_dir: Path,
    n_jobs: int,
    folds: int,
    extra: Sequence[str],
) -> list[str]:
    settings = [
        "experiment=studies/cv_study",
        f"data.root={data}",
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={out / 'logs'}",
    ]
    swept = [
        f"data.num_folds={folds}",
        sweep_values("data.fold", range(folds)),
        sweep_values("seed", variant.seeds),
        *LIGHT_REPORT,
        *variant.overrides,
        *extra,
    ]
    return train_sweep_command(settings, sweep_dir(out, study, variant), n_jobs, swept)


def _load_log(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.is_file() else {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/chest_xray_224")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "cv_studies")
    parser.add_argument("--study", nargs="+", default=list(STUDIES), help="studies to run")
    parser.add_argument("--only", nargs="*", default=[], help="only these variants, in this order")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cxrnet")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--folds", type=int, default=NUM_FOLDS)
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument("extra", nargs="*", help="more cxrnet-train overrides, after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "study.json"
    failures = 0
    if not args.analyze_only:
        if not args.data.is_dir() and not args.data.is_file():
            raise SystemExit(f"--data {args.data} does not exist: point it at the image folder")
        sweeps = _load_log(log_path)
        chosen = variants_of(args.study)
        if args.only:  # these variants, in the order given
            rank = {name: i for i, name in enumerate(args.only)}
            chosen = sorted((p for p in chosen if p[1].name in rank), key=lambda p: rank[p[1].name])
        for study, variant in chosen:
            folder = sweep_dir(out, study, variant)
            expected = args.folds * len(variant.seeds)
            if completed_jobs(folder) >= expected:
                print(f"{study.name}/{variant.name}: {expected} jobs already completed", flush=True)
                continue
            command = sweep_command(
                study, variant, out, args.data.resolve(), args.cache_dir, args.n_jobs,
                args.folds, args.extra,
            )  # fmt: skip
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            # One torch thread per job: jobs side by side use the cores without oversubscribing.
            code, seconds = run_logged(
                command, out / "sweep_logs" / f"{variant.name}.log", threads=1
            )
            failures += code != 0
            sweeps[f"{study.name}/{variant.name}"] = {
                "command": " ".join(console_command(command)),
                "exit_code": code,
                "wall_seconds": round(seconds, 1),
                "started": started,
                "n_jobs": args.n_jobs,
                "jobs": expected,
                "load_average_at_end": os.getloadavg(),
                "cpu": cpu_name(),
            }
            log_path.write_text(json.dumps(sweeps, indent=2) + "\n")
    from analysis import write_analysis  # the analysis reads the finished runs only

    write_analysis(out)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

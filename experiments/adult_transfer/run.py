"""Run the adult-transfer study's arms, then analyse them.

    python experiments/adult_transfer/run.py --out logs/adult_transfer            # every arm
    python experiments/adult_transfer/run.py --out logs/adult_transfer --only peds_best joint_all
    python experiments/adult_transfer/run.py --out logs/adult_transfer --analyze-only

Each fold arm is one ``cxrnet-train -m`` sweep over ``data.fold=0..4`` into
``<out>/runs/<arm>``; each fold model then scores its fold's OTHER_ABNORMAL films with
``cxrnet-predict``. A pediatric arm is one training run, then ``cxrnet-eval`` on every adult film.
An arm whose folder already holds every completed job is not run again, so an interrupted study
continues where it stopped, and two ``--only`` lists of different arms can run side by side
(never one arm twice: a runner removes the folders of the arm's jobs that did not complete).
Each arm keeps its own log, ``<out>/study/<arm>.json``: each sweep's command, exit code, wall
time and load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "experiments" / "benchmarks"))

from arms import ARMS, BY_NAME, SMALL_DATA_EPOCHS, Arm  # noqa: E402
from machine import cpu_name  # noqa: E402
from prepare import NUM_FOLDS, prepare  # noqa: E402

from cxrnet.passes.fold_ensemble import job_checkpoint  # noqa: E402
from cxrnet.runs.results import RunResult, collect_runs  # noqa: E402
from cxrnet.runs.sweeps import (  # noqa: E402
    console_command,
    run_logged,
    script_command,
    sweep_values,
)
from cxrnet.runs.sweeps import sweep_command as train_sweep_command  # noqa: E402

# The analysis recomputes every number from the prediction files: no heatmaps, fewer resamples.
LIGHT_REPORT = ("report.top_k_wrong=0", "report.resamples=200")
PEDIATRIC_MODEL = "peds_best"  # the model the finetune arms start from
ADULT_EVAL = "eval_adult"
OTHER_PREDICTIONS = "predictions_other.csv"


def arm_dir(out: Path, arm: Arm) -> Path:
    return out / "runs" / arm.name


def _jobs(folder: Path) -> list:
    return [run for run in collect_runs([folder]) if run.completed] if folder.is_dir() else []


def best_checkpoint(run: RunResult) -> Path:
    """The job's best checkpoint where the job folder is now (``job_checkpoint``)."""
    checkpoint = job_checkpoint(run)
    if checkpoint is None:
        raise SystemExit(f"{run.path} records no best checkpoint; rerun that job")
    return checkpoint


def _sources(arm: Arm, manifests: Path) -> list[str]:
    peds = f"peds:{manifests / 'peds_train.csv'}"
    peds_test = f"peds_test:{manifests / 'peds_test.csv'}"
    adult = f"rsna:{manifests / 'adult.csv'}"
    if arm.kind == "pediatric":
        return [f"data.sources={{{peds},{peds_test}}}"]
    if arm.kind in ("adult", "finetune"):
        return [f"data.sources={{{peds_test},{adult}}}"]
    if arm.others:
        # Fold k trains on the OTHER_ABNORMAL films of the other four groups: as NORMAL, or as
        # films with another finding (a findings arm).
        kind = "train" if arm.others == "negatives" else "findings"
        other = f"rsna_other:'{manifests}/other_{kind}_${{data.fold}}.csv'"
        return [
            f"data.sources={{{peds},{peds_test},{adult},{other}}}",
            "data.source_roles={peds:train,rsna_other:train}",
        ]
    return [f"data.sources={{{peds},{peds_test},{adult}}}", "data.source_roles={peds:train}"]


def train_settings(arm: Arm, out: Path, manifests: Path, cache_dir: Path) -> list[str]:
    settings = [
        f"experiment={arm.experiment}",
        *_sources(arm, manifests),
        f"paths.cache_dir={cache_dir}",
        f"paths.log_dir={out / 'logs'}",
    ]
    if arm.folds:
        settings += ["data.split=kfold", f"data.num_folds={NUM_FOLDS}"]
    if arm.adult is not None:
        settings.append(f"data.source_train_size={{rsna:{arm.adult}}}")
    if arm.kind in ("adult", "finetune"):
        settings.append(f"trainer.max_epochs={SMALL_DATA_EPOCHS}")
    if arm.kind == "finetune":
        base = _jobs(arm_dir(out, BY_NAME[PEDIATRIC_MODEL]))
        if not base:
            raise SystemExit(f"{arm.name} fine-tunes {PEDIATRIC_MODEL}: run that arm first")
        settings.append(f"model.net.weights={best_checkpoint(base[0])}")
    return settings


def train_command(
    arm: Arm, out: Path, manifests: Path, cache_dir: Path, folds: Sequence[int]
) -> list[str]:
    swept = [*LIGHT_REPORT, *arm.overrides]
    if arm.folds:
        # Each job's folder is named for its fold, so a rerun of the missing folds fills them in.
        swept = [sweep_values("data.fold", folds), "hydra.sweep.subdir=${data.fold}", *swept]
    return train_sweep_command(
        train_settings(arm, out, manifests, cache_dir), arm_dir(out, arm), 1, swept
    )


def missing_folds(arm: Arm, out: Path) -> list[int]:
    """The folds (``[0]`` for a pediatric arm) with no completed job. A failed job's folder is
    removed first: its log stays in ``sweep_logs/``, and the rerun writes the fold anew."""
    folder = arm_dir(out, arm)
    done = set()
    for job in collect_runs([folder]) if folder.is_dir() else []:
        if job.completed:
            done.add(int(job.value("data.fold")) if arm.folds else 0)
        else:
            shutil.rmtree(job.path)
    return [fold for fold in range(NUM_FOLDS if arm.folds else 1) if fold not in done]


def follow_up_commands(arm: Arm, out: Path, manifests: Path, rsna: Path) -> list[list[str]]:
    """The scoring that follows training: the adult films for a pediatric arm, each fold
    model's held-out OTHER_ABNORMAL films for a fold arm."""
    commands = []
    for run in _jobs(arm_dir(out, arm)):
        checkpoint = best_checkpoint(run)
        if not arm.folds:
            target = run.path.parent / ADULT_EVAL
            if not (target / "metrics.json").is_file():
                commands.append(script_command("cxrnet-eval", [
                    f"ckpt_path={checkpoint}", f"data.root={rsna / 'labels.csv'}",
                    "report.subgroups=[view]", "report.top_k_wrong=0", f"hydra.run.dir={target}",
                ]))  # fmt: skip
            continue
        if (run.path / OTHER_PREDICTIONS).is_file():
            continue
        fold = int(run.value("data.fold"))
        commands.append(script_command("cxrnet-predict", [
            f"ckpt_path={checkpoint}", f"input={manifests / f'other_val_{fold}.csv'}",
            f"output={run.path / OTHER_PREDICTIONS}", "progress=false",
            f"hydra.run.dir={run.path / 'predict_other'}",
        ]))  # fmt: skip
    return commands


def run_arm(arm: Arm, args: argparse.Namespace, manifests: Path) -> int:
    out = args.out
    failures = 0
    log = {}
    folds = missing_folds(arm, out)
    if folds:
        command = train_command(arm, out, manifests, args.cache_dir, folds)
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        code, seconds = run_logged(command, out / "sweep_logs" / f"{arm.name}.log", threads=1)
        failures += code != 0
        log = {
            "command": " ".join(console_command(command)),
            "exit_code": code,
            "wall_seconds": round(seconds, 1),
            "started": started,
            "jobs": len(folds),
            "load_average_at_end": os.getloadavg(),
            "cpu": cpu_name(),
        }
    for i, command in enumerate(follow_up_commands(arm, out, manifests, args.rsna)):
        code, _ = run_logged(command, out / "sweep_logs" / f"{arm.name}.score{i}.log", threads=1)
        failures += code != 0
    if log:
        path = out / "study" / f"{arm.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Every sweep of the arm, a rerun of missing folds too: the cost is their sum.
        earlier = json.loads(path.read_text()) if path.is_file() else []
        earlier = earlier if isinstance(earlier, list) else [earlier]
        path.write_text(json.dumps([*earlier, log], indent=2) + "\n")
    return failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO.parent / "shared" / "data"
    parser.add_argument("--pediatric", type=Path, default=shared / "chest_xray_224")
    parser.add_argument("--rsna", type=Path, default=shared / "rsna_adult")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "adult_transfer")
    parser.add_argument("--only", nargs="*", default=[], help="only these arms, in this order")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "cxrnet")
    parser.add_argument("--analyze-only", action="store_true")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where the analysis is written (default: results/ beside this script); a run of "
        "some arms (--only) keeps the whole study's results apart with its own folder",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out = args.out.resolve()
    args.rsna = args.rsna.resolve()
    failures = 0
    if not args.analyze_only:
        unknown = sorted(set(args.only) - set(BY_NAME))
        if unknown:
            raise SystemExit(f"unknown arm(s) {unknown}; choose from {sorted(BY_NAME)}")
        manifests = prepare(args.pediatric.resolve(), args.rsna, args.out, args.cache_dir)
        for arm in [BY_NAME[name] for name in args.only] if args.only else ARMS:
            failures += run_arm(arm, args, manifests)
    from analysis import write_analysis  # the analysis reads the finished runs only

    write_analysis(args.out, args.results)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

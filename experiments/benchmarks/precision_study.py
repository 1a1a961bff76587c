"""Does bfloat16 autocast train the seed CNN as well as float32? (issue 9, item 4)

    python experiments/benchmarks/precision_study.py                # 3 seeds x 2 precisions
    python experiments/benchmarks/precision_study.py --report-only  # the table from the JSON
    python experiments/benchmarks/precision_study.py --seeds 3 4 5 --work logs/more \
        --out more.json --pool precision_study.json   # more seeds, pooled with an earlier study

A short training of ``experiment=notebook_baseline`` (150 px, the seed recipe) on the real films
in ``../shared``: a patient-grouped split of train+val into training, validation (20%) and a
held-out set (20%), fixed across runs (``data.split_seed=0``, ``data.holdout_seed=19``); each run
differs only in its seed (initialisation, sampling order, augmentation) and its precision. Every
number in the table is read back from the jobs' run records (``metrics.json``): the validation
AUROC of the best checkpoint, chosen on validation AUROC, and the held-out AUROC of that same
checkpoint. Prints a markdown table and writes ``precision_study.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
from machine import shared_data  # noqa: E402

from cxrnet.runs.results import collect_runs  # noqa: E402
from cxrnet.runs.sweeps import console_command, run_logged, sweep_values  # noqa: E402
from cxrnet.runs.sweeps import sweep_command as train_sweep_command  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")
DEFAULT_DATA = shared_data()
# The study's fixed split and its short training; the report's heatmaps and bootstrap intervals
# are not used here, so they are kept small.
RECIPE = (
    "experiment=notebook_baseline",
    "data.split=patient",
    "data.val_fraction=0.2",
    "data.holdout_fraction=0.2",
    "data.split_seed=0",
    "data.holdout_seed=19",
    "report.top_k_wrong=0",
    "report.resamples=200",
)


def sweep_command(args: argparse.Namespace) -> list[str]:
    settings = [
        *RECIPE,
        f"trainer.max_epochs={args.epochs}",
        f"data.root={args.data}",
        f"paths.log_dir={args.work / 'logs'}",
    ]
    swept = [
        sweep_values("seed", args.seeds),
        sweep_values("trainer.precision", PRECISIONS),
        *args.extra,
    ]
    return train_sweep_command(settings, args.work / "runs", args.n_jobs, swept)


def collect(runs: Path) -> dict[str, list[dict[str, Any]]]:
    """Every completed job's seed, precision and AUROCs, by precision."""
    table: dict[str, list[dict[str, Any]]] = {precision: [] for precision in PRECISIONS}
    for run in collect_runs([runs]):
        if not run.completed or run.record is None:
            raise SystemExit(f"{run.path}: the job did not complete; see its log, then run again")
        table[str(run.overrides["trainer.precision"])].append(
            {
                "seed": int(run.overrides["seed"]),  # type: ignore[arg-type]
                "val_auroc": run.metrics["val/auroc"],
                "holdout_auroc": run.metrics.get("test/auroc"),
                "duration_s": run.record.duration_s,
                "run_dir": str(run.path),
            }
        )
    for rows in table.values():
        rows.sort(key=lambda row: row["seed"])
    return table


def pooled(results: dict[str, Any], others: list[Path]) -> dict[str, Any]:
    """``results`` with the runs of earlier studies of the same recipe added, by precision."""
    for path in others:
        other = json.loads(path.read_text())
        if other["epochs"] != results["epochs"]:
            raise SystemExit(f"{path}: {other['epochs']} epochs, this study {results['epochs']}")
        seen = {(p, r["seed"]) for p, rows in results["runs"].items() for r in rows}
        for precision, rows in other["runs"].items():
            if clash := [r["seed"] for r in rows if (precision, r["seed"]) in seen]:
                raise SystemExit(f"{path}: seeds {clash} at {precision} are in both studies")
            results["runs"][precision] = sorted(
                results["runs"][precision] + rows, key=lambda row: row["seed"]
            )
        results.setdefault("pooled_from", []).append(str(path))
    return results


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def report(results: dict[str, Any]) -> str:
    table = results["runs"]
    seeds = sorted({row["seed"] for rows in table.values() for row in rows})
    head = " | ".join(f"seed {seed}" for seed in seeds)
    lines = [
        f"notebook_baseline, 150 px, {results['epochs']} epochs, patient-grouped split of the real "
        "films (validation 20%, held-out 20%)",
        "",
        f"| precision | {head} | val AUROC mean ± sd | held-out AUROC mean ± sd | job minutes |",
        "| --- | " + " | ".join("---:" for _ in seeds) + " | ---: | ---: | ---: |",
    ]
    for precision, rows in table.items():
        lines.append(
            f"| {precision} | "
            + " | ".join(f"{row['val_auroc']:.4f}" for row in rows)
            + f" | {summary([r['val_auroc'] for r in rows])}"
            + f" | {summary([r['holdout_auroc'] for r in rows])}"
            + f" | {statistics.mean([r['duration_s'] for r in rows]) / 60:.1f} |"
        )
    lines.append("")
    for key, name in (("val_auroc", "val AUROC"), ("holdout_auroc", "held-out AUROC")):
        lines += compare(table, key, name)
    return "\n".join(lines)


def compare(table: dict[str, list[dict[str, Any]]], key: str, name: str) -> list[str]:
    """bf16-mixed against 32-true on one score: the difference of the means against seed noise,
    and the per-seed differences."""
    fp32 = [r[key] for r in table["32-true"]]
    bf16 = [r[key] for r in table["bf16-mixed"]]
    difference = statistics.mean(bf16) - statistics.mean(fp32)
    # Seed noise of a difference of two means of n runs each: the pooled seed-to-seed standard
    # deviation times sqrt(2/n).
    pooled = ((statistics.variance(fp32) + statistics.variance(bf16)) / 2) ** 0.5
    noise = pooled * (2 / len(fp32)) ** 0.5
    within = abs(difference) <= 2 * noise
    # The same seed in both precisions starts from the same weights and draws the same batches,
    # so the per-seed differences are the sharper view of what the precision alone changes.
    by_seed = {r["seed"]: r[key] for r in table["32-true"]}
    paired = [r[key] - by_seed[r["seed"]] for r in table["bf16-mixed"] if r["seed"] in by_seed]
    lower = sum(d < 0 for d in paired)
    return [
        f"- {name}, bf16-mixed − 32-true: {difference:+.4f}; seed noise of that difference "
        f"(pooled sd × √(2/n)): {noise:.4f}; "
        + ("within 2× seed noise" if within else "OUTSIDE 2× seed noise"),
        "  - per seed (same initial weights and batches): "
        + ", ".join(f"{d:+.4f}" for d in paired)
        + f"; mean {statistics.mean(paired):+.4f} ± {statistics.stdev(paired):.4f} (sd), "
        f"lower with bf16 for {lower} of {len(paired)} seeds",
    ]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "logs" / "precision_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2, help="jobs side by side, 1 thread each")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).with_name("precision_study.json")
    )
    parser.add_argument("--report-only", action="store_true", help="the table from --out's JSON")
    parser.add_argument(
        "--pool",
        type=Path,
        nargs="*",
        default=[],
        help="earlier studies' JSON (same recipe, other seeds) whose runs join this one's table",
    )
    parser.add_argument("extra", nargs="*", help="more cxrnet-train overrides, after --")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report_only:
        print(report(pooled(json.loads(args.out.read_text()), args.pool)))
        return 0
    if not (args.data / "train").is_dir():
        raise SystemExit(f"{args.data}/train not found; pass --data <folder with train/>")
    command = sweep_command(args)
    # One torch thread per job: n_jobs side by side share the cores without oversubscribing.
    code, wall_s = run_logged(command, args.work / "sweep.log", threads=1)
    if code != 0:
        print(f"the sweep failed (exit {code}); see {args.work / 'sweep.log'}", file=sys.stderr)
        return code
    results = {
        "command": " ".join(console_command(command)),
        "epochs": args.epochs,
        "wall_s": wall_s,
        "load_average_at_end": os.getloadavg(),
        "runs": collect(args.work / "runs"),
    }
    results = pooled(results, args.pool)
    text = report(results)
    results["report"] = text
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(text)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

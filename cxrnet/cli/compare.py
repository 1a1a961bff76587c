"""Compare the jobs of one or more sweeps: a table, CSV, Markdown and one plot panel per swept key.

``cxrnet-compare multirun/2024-05-01/12-00-00`` finds every job folder below the given folders
(any folder holding ``.hydra/overrides.yaml`` or ``metrics.json``), groups the completed jobs by
the override values that differ between them, folds repeated seeds into mean ± std and n, and
writes ``comparison.csv``, ``comparison.md`` and ``comparison.png``. Failed and unfinished jobs
are listed, never averaged.

Plain argparse on purpose: this reads what the Hydra apps wrote and is not one itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cxrnet.comparison.render import print_problems, print_summary
from cxrnet.comparison.report import write_report
from cxrnet.comparison.summary import DEFAULT_FOLD_KEYS, summarize
from cxrnet.runs.results import collect_runs

# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrnet-compare",
        description="Compare the jobs of one or more sweeps: mean ± std over seeds per "
        "configuration, as a table, CSV, Markdown and a plot.",
        epilog="example: cxrnet-compare multirun/2024-05-01/12-00-00 --metrics 'val/*' "
        "--sort val/auroc (folders first: --metrics and --fold-keys take every word after them)",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders to read")
    parser.add_argument(
        "--metrics",
        nargs="+",
        help="metrics to show, names or globs like 'val/*' (default: all val/ and test/ ones)",
    )
    parser.add_argument(
        "--show",
        nargs="+",
        metavar="METRIC",
        help="metrics the terminal table shows after the sort metric, names or globs (default: "
        "a few validation metrics; the files always hold every metric)",
    )
    parser.add_argument(
        "--sort", help="metric to sort by (default: the jobs' monitored metric, e.g. val/auroc)"
    )
    parser.add_argument("--ascending", action="store_true", help="smallest first (for losses)")
    parser.add_argument(
        "--fold-keys",
        nargs="*",
        default=list(DEFAULT_FOLD_KEYS),
        metavar="KEY",
        help="keys whose runs are repeats, folded into mean ± std; pass none to fold nothing "
        f"(default: {' '.join(DEFAULT_FOLD_KEYS)})",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for comparison.{csv,md,png} (default: the first folder)"
    )
    return parser


def _fail(message: str, code: int = 1) -> int:
    print(f"cxrnet-compare: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with a report, 1 when no job completed (or none found), 2 for an unknown metric."""
    args = build_parser().parse_args(argv)
    try:
        runs = collect_runs(args.folders)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    where = ", ".join(str(folder) for folder in args.folders)
    if not runs:
        return _fail(
            f"no job found in {where}: expected folders holding .hydra/overrides.yaml or "
            "metrics.json, as cxrnet-train writes them"
        )
    if not any(run.completed for run in runs):
        print_problems(runs)
        return _fail(f"none of the {len(runs)} jobs in {where} completed; see the list above")
    try:
        summary = summarize(runs, args.metrics, args.sort, args.fold_keys, args.ascending)
    except ValueError as exc:
        return _fail(str(exc), code=2)
    try:
        print_summary(summary, args.show)
    except ValueError as exc:
        return _fail(str(exc), code=2)
    files = write_report(summary, args.out or args.folders[0])
    print(f"wrote {files.csv}, {files.markdown}, {files.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cxrnet-ensemble <sweep folder>``: the fold models of a k-fold sweep as one ensemble.

Writes ``<sweep>/ensemble/`` (``cxrnet.passes.ensemble_folder.write_fold_ensemble``).
``cxrnet-train -m experiment=best_cv`` runs this when its last fold ends (``BuildEnsemble`` in
``hydra_callbacks``); after rerunning a failed fold in its folder, run it by hand.

Plain argparse, like ``cxrnet-compare``: it reads what a Hydra sweep wrote and is not one itself.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cxrnet.cli.exit_codes import exit_code_for

if TYPE_CHECKING:
    from cxrnet.passes.fold_ensemble import FoldEnsemble


def _print_summary(ensemble: FoldEnsemble, manifest_path: Path) -> None:
    from cxrnet.passes.ensemble_folder import HEADLINE, metric_cell
    from cxrnet.passes.fold_ensemble import CROSS_VALIDATED, HELD_OUT

    report = ensemble.report
    metrics = report.metrics
    print(f"\nfold ensemble of {len(ensemble.members)} models: {manifest_path}")
    print(f"threshold {report.operating_point.describe()}")
    held_out = HELD_OUT in report.splits
    titles = ["cross-validated (single models)", *(["held-out (ensemble)"] if held_out else [])]
    print(f"{'':<12}  " + "  ".join(f"{title:<31}" for title in titles))
    for label, cv_key, held_out_key in HEADLINE:
        cells = [metric_cell(metrics, f"{CROSS_VALIDATED}/{cv_key}")]
        if held_out:
            cells.append(metric_cell(metrics, f"{HELD_OUT}/{held_out_key}"))
        print(f"{label:<12}  " + "  ".join(f"{cell:<31}" for cell in cells))
    if not held_out:
        print("no held-out split (no test folder, data.holdout_fraction=0): cross-validated only")
    print(f"report: {manifest_path.parent / 'report.md'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrnet-ensemble",
        description="The fold models of a k-fold sweep as one ensemble: threshold chosen on "
        "the pooled out-of-fold validation predictions, manifest, held-out report.",
        epilog="example: cxrnet-ensemble logs/train/multiruns/<sweep>",
    )
    parser.add_argument("sweep", type=Path, help="the folder cxrnet-train -m wrote")
    parser.add_argument("--out", type=Path, help="folder to write (default: <sweep>/ensemble)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 with the ensemble written; 2 when a fold failed or is missing, or the sweep is not one."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from cxrnet.passes.ensemble_folder import write_fold_ensemble  # torch, the report

        ensemble, manifest_path = write_fold_ensemble(args.sweep, args.out)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            raise
        print(f"cxrnet-ensemble: error: {error}", file=sys.stderr)
        return code
    _print_summary(ensemble, manifest_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
